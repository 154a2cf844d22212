"""Black-box tests: a real ``auren serve bridge`` process on a free port, spoken to over HTTP.

The oracle everywhere is the invariant of DESIGN.md: every webhook answered 2xx is in the store
exactly once, and nothing else is.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import jwt
import orjson
import pytest

from tests.helpers import (
    ServerProcess,
    hrv_event,
    native_body,
    native_headers,
    run_server,
)

pytestmark = pytest.mark.slow


def _rows(server: ServerProcess) -> list[tuple[str, str, float]]:
    with sqlite3.connect(server.data_dir / "auren.sqlite3") as conn:
        return conn.execute("SELECT event_id, user_id, value FROM biometric_events").fetchall()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory):
    with run_server("bridge", tmp_path_factory.mktemp("bridge")) as server:
        yield server


async def _post_many(base_url: str, requests: list[tuple[bytes, dict[str, str]]],
                     connections: int) -> list[httpx.Response]:
    # Concurrency is bounded by a semaphore rather than httpx's pool queue, whose waiter scan
    # is quadratic and would make the client, not the server, the bottleneck.
    gate = asyncio.Semaphore(connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits,
                                 timeout=httpx.Timeout(30.0)) as client:
        async def one(body: bytes, headers: dict[str, str]) -> httpx.Response:
            async with gate:
                return await client.post("/webhooks/auren", content=body, headers=headers)

        return await asyncio.gather(*(one(body, h) for body, h in requests))


def test_a_thousand_concurrent_deliveries_are_each_stored_exactly_once(bridge: ServerProcess):
    requests = []
    for i in range(1000):
        body = native_body(f"load-{i % 20}", [hrv_event(1 + i % 28, 40 + i % 50,
                                                        record=f"load-{i}")])
        requests.append((body, native_headers(body)))
    responses = asyncio.run(_post_many(bridge.base_url, requests, 1000))
    statuses = Counter(r.status_code for r in responses)
    accepted = {f"load-{i}" for i, r in enumerate(responses) if r.status_code == 202}
    # 50 in flight and 1000 queue places by default: a burst of 1000 is absorbed, not shed.
    assert statuses == {202: 1000}, statuses
    rows = _rows(bridge)
    load_rows = [r for r in rows if r[1].startswith("load-")]
    assert len(load_rows) == len({r[0] for r in load_rows}) == len(accepted)
    # And every one is readable through the API.
    total = 0
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        for user in range(20):
            page = client.get(f"/api/v1/users/load-{user}/events", params={"limit": 1000}).json()
            total += len(page["events"])
    assert total == len(accepted)


def test_redelivery_answers_200_duplicate_and_stores_nothing_new(bridge: ServerProcess):
    body = native_body("dup-user", [hrv_event(3, 50.0, record="dup-a"),
                                    hrv_event(4, 51.0, record="dup-b")])
    headers = native_headers(body)
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        first = client.post("/webhooks/auren", content=body, headers=headers)
        assert first.status_code == 202
        assert first.json() == {"accepted": 2, "duplicates": 0}
        # The provider's retry: same webhook-id, a fresh timestamp and signature.
        retry = client.post("/webhooks/auren", content=body,
                            headers=native_headers(body, msg_id=headers["webhook-id"]))
        assert retry.status_code == 200
        assert retry.json()["duplicate"] is True
        # The same measurements in a new delivery (an app re-sending overlapping data).
        resend = client.post("/api/v1/webhooks/auren", content=body, headers=native_headers(body))
        assert resend.status_code == 200
        assert resend.json() == {"duplicate": True, "accepted": 0, "duplicates": 2}
        # Partly new data: only the new event is stored.
        mixed_body = native_body("dup-user", [hrv_event(4, 51.0, record="dup-b"),
                                              hrv_event(5, 52.0, record="dup-c")])
        mixed = client.post("/webhooks/auren", content=mixed_body,
                            headers=native_headers(mixed_body))
        assert mixed.status_code == 202
        assert mixed.json() == {"accepted": 1, "duplicates": 1}
    assert len([r for r in _rows(bridge) if r[1] == "dup-user"]) == 3


@pytest.mark.parametrize(
    ("mutate", "status", "slug"),
    [
        ("tampered", 401, "signature-invalid"),
        ("stale", 401, "signature-invalid"),
        ("future", 401, "signature-invalid"),
        ("unsigned", 401, "signature-invalid"),
        ("malformed", 400, "malformed-payload"),
        ("unknown_metric", 422, "invalid-payload"),
        ("bad_unit", 422, "invalid-payload"),
        ("naive_time", 422, "invalid-payload"),
    ],
)
def test_bad_input_gets_a_precise_problem_and_stores_nothing(bridge: ServerProcess, mutate: str,
                                                             status: int, slug: str):
    user = f"bad-{mutate}"
    events = [hrv_event(1, record=f"{user}-0"), hrv_event(2, record=f"{user}-1")]
    if mutate == "unknown_metric":
        events.append({"metric": "mood", "value": 3, "unit": "1", "start": "2026-01-03T00:00:00Z"})
    if mutate == "bad_unit":
        events.append({"metric": "steps", "value": 3, "unit": "kg",
                       "start": "2026-01-03T00:00:00Z"})
    if mutate == "naive_time":
        events.append({"metric": "steps", "value": 3, "unit": "{steps}",
                       "start": "2026-01-03T00:00:00"})
    body = native_body(user, events)
    headers = native_headers(body)
    if mutate == "tampered":
        body = body.replace(b"55.0", b"56.0")
    elif mutate == "stale":
        headers = native_headers(body, timestamp=int(time.time()) - 301)
    elif mutate == "future":
        # Well past the 300 s window: a busy machine may take a second or more to deliver,
        # which brings a timestamp just past the window back inside it.
        headers = native_headers(body, timestamp=int(time.time()) + 330)
    elif mutate == "unsigned":
        headers = {"content-type": "application/json"}
    elif mutate == "malformed":
        body = b'{"type": "biometrics.recorded", "user_id": '
        headers = native_headers(body)
    response = httpx.post(bridge.base_url + "/webhooks/auren", content=body, headers=headers,
                          timeout=10)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].endswith(slug)
    if status == 422:
        assert problem["detail"].startswith("events[2]")
        assert problem["errors"][0]["index"] == 2
    assert not [r for r in _rows(bridge) if r[1] == user]


def test_size_cap_applies_while_streaming_and_to_declared_length(bridge: ServerProcess):
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        big = b"x" * (1_048_576 + 1)
        declared = client.post("/webhooks/auren", content=big, headers=native_headers(big))
        assert declared.status_code == 413

        def chunks():  # no Content-Length: chunked transfer, the cap must bite mid-stream
            for _ in range(40):
                yield b"y" * 65_536

        streamed = client.post("/webhooks/auren", content=chunks(),
                               headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.headers["content-type"] == "application/problem+json"
        gz = client.post("/webhooks/auren", content=b"{}",
                         headers={"content-encoding": "gzip"})
        assert gz.status_code == 415


def test_routes_methods_and_unconfigured_providers(bridge: ServerProcess):
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        unknown = client.post("/webhooks/no-such-provider", content=b"{}")
        assert unknown.status_code == 404
        assert unknown.json()["type"].endswith("/not-found")
        # Known provider without a secret: never accepts unsigned data.
        unconfigured = client.post("/webhooks/whoop", content=b"{}")
        assert unconfigured.status_code == 404
        assert unconfigured.json()["title"] == "provider not configured"
        for method in ("PUT", "DELETE", "PATCH", "GET"):
            response = client.request(method, "/webhooks/auren")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "POST"
            assert response.headers["content-type"] == "application/problem+json"
        missing = client.get("/no/such/path")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


def test_read_api_filters_and_paginates(bridge: ServerProcess):
    user = "reader"
    events = [hrv_event(day, 40.0 + day, record=f"r-{day}") for day in range(1, 11)]
    events.append({"metric": "steps", "value": 9000, "unit": "{steps}",
                   "start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"})
    body = native_body(user, events)
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        assert client.post("/webhooks/auren", content=body,
                           headers=native_headers(body)).status_code == 202
        seen: list[dict[str, object]] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"metric": "hrv_rmssd", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"/api/v1/users/{user}/events", params=params).json()
            seen += page["events"]
            cursor = page["next"]
            if cursor is None:
                break
        assert [e["value"] for e in seen] == [40.0 + d for d in range(1, 11)]
        assert {e["unit"] for e in seen} == {"ms"}
        window = client.get(f"/api/v1/users/{user}/events",
                            params={"since": "2026-01-03T00:00:00Z",
                                    "until": "2026-01-05T00:00:00Z"}).json()["events"]
        assert [e["start"][:10] for e in window] == ["2026-01-03", "2026-01-04"]
        bad = client.get(f"/api/v1/users/{user}/events", params={"since": "yesterday"})
        assert bad.status_code == 400
        assert client.get(f"/api/v1/users/{user}/events",
                          params={"metric": "mood"}).status_code == 422
        assert client.get(f"/api/v1/users/{user}/events",
                          params={"cursor": "!!"}).status_code == 400
        assert client.get(f"/api/v1/users/{user}/events",
                          params={"limit": 0}).status_code == 400


def test_health_metrics_and_openapi(bridge: ServerProcess):
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.headers["content-type"] == "application/health+json"
        doc = health.json()
        assert doc["status"] in {"pass", "warn"}
        assert doc["checks"]["store:responseTime"][0]["status"] == "pass"
        metrics = client.get("/metrics").text
        for name in ("auren_webhook_requests_total", "auren_webhook_latency_seconds_bucket",
                     "auren_webhooks_in_flight", "auren_events_stored_total",
                     "auren_signature_failures_total", "auren_commit_batch_deliveries_bucket",
                     "auren_duplicates_total"):
            assert name in metrics, name
        spec = client.get("/openapi.json").json()
        # One path per configured provider (only the native one here), under both prefixes.
        webhooks = {p for p in spec["paths"] if "/webhooks/" in p}
        assert webhooks == {"/webhooks/auren", "/api/v1/webhooks/auren"}
        assert "/api/v1/users/{user_id}/events" in spec["paths"]
        assert client.get("/docs").status_code == 200


def test_logs_never_contain_payload_values_or_signatures(bridge: ServerProcess):
    sentinel = 77.123456
    body = native_body("log-user", [hrv_event(9, sentinel, record="log-rec")])
    headers = native_headers(body)
    httpx.post(bridge.base_url + "/webhooks/auren", content=body, headers=headers, timeout=10)
    httpx.post(bridge.base_url + "/webhooks/auren", content=body + b" ", headers=headers,
               timeout=10)
    log = bridge.log()
    assert str(sentinel) not in log
    assert headers["webhook-signature"].split(",", 1)[1] not in log
    for line in filter(None, log.splitlines()):
        assert isinstance(orjson.loads(line), dict)  # every line is structured JSON


def test_overload_sheds_with_503_and_retry_after_and_never_hangs(tmp_path: Path):
    env = {"MAX_CONCURRENT_WEBHOOKS": "1", "MAX_QUEUED_WEBHOOKS": "2",
           "ADMISSION_WAIT_S": "0.05"}
    with run_server("bridge", tmp_path, env) as server:
        requests = []
        for i in range(400):
            body = native_body(f"ov-{i % 5}", [hrv_event(1 + i % 28, record=f"ov-{i}")])
            requests.append((body, native_headers(body)))
        started = time.monotonic()
        responses = asyncio.run(_post_many(server.base_url, requests, 400))
        elapsed = time.monotonic() - started
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {202, 503}, statuses
        assert statuses[503] > 0, "admission never shed load"
        assert statuses[202] > 0
        for r in responses:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["type"].endswith("/overloaded")
        assert elapsed < 30
        accepted = sum(1 for r in responses if r.status_code == 202)
        assert len(_rows(server)) == accepted


JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


def test_read_api_auth_with_keys_and_jwt(tmp_path: Path):
    env = {"AUREN_API_KEYS": "svc-key-1,svc-key-2", "AUREN_JWT_SECRET": JWT_SECRET}
    with run_server("bridge", tmp_path, env) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as client:
        url = "/api/v1/users/alice/events"
        anonymous = client.get(url)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert client.get(url, headers={"authorization": "Bearer svc-key-2"}).status_code == 200
        assert client.get(url, headers={"authorization": "Bearer nope"}).status_code == 401
        now = int(time.time())
        alice = jwt.encode({"sub": "alice", "exp": now + 60}, JWT_SECRET, "HS256")
        bob = jwt.encode({"sub": "bob", "exp": now + 60}, JWT_SECRET, "HS256")
        expired = jwt.encode({"sub": "alice", "exp": now - 600}, JWT_SECRET, "HS256")
        forged = jwt.encode({"sub": "alice"}, "another-secret-entirely-0123456789abcdef", "HS256")
        assert client.get(url, headers={"authorization": f"Bearer {alice}"}).status_code == 200
        assert client.get(url, headers={"authorization": f"Bearer {bob}"}).status_code == 403
        assert client.get(url, headers={"authorization": f"Bearer {expired}"}).status_code == 401
        assert client.get(url, headers={"authorization": f"Bearer {forged}"}).status_code == 401


def test_graceful_shutdown_keeps_everything_answered_2xx(tmp_path: Path):
    with run_server("bridge", tmp_path) as server:
        async def load() -> list[httpx.Response | Exception]:
            # A semaphore, not the pool queue: httpx's pool scans its waiters on every
            # hand-off, which stalls the client itself with thousands queued.
            gate = asyncio.Semaphore(50)
            async with httpx.AsyncClient(base_url=server.base_url,
                                         timeout=httpx.Timeout(10.0)) as client:
                async def one(i: int) -> httpx.Response | Exception:
                    body = native_body("drain", [hrv_event(1 + i % 28, record=f"drain-{i}")])
                    async with gate:
                        try:
                            return await client.post("/webhooks/auren", content=body,
                                                     headers=native_headers(body))
                        except httpx.HTTPError as exc:
                            return exc

                async def stop_soon() -> None:
                    await asyncio.sleep(0.3)
                    server.process.send_signal(signal.SIGTERM)

                results = await asyncio.gather(*(one(i) for i in range(3000)), stop_soon())
                return list(results[:-1])

        results = asyncio.run(load())
        # uvicorn re-raises SIGTERM after its graceful shutdown completes.
        assert server.process.wait(20) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()
        answered = {f"drain-{i}" for i, r in enumerate(results)
                    if isinstance(r, httpx.Response) and r.status_code == 202}
        assert answered
        with sqlite3.connect(server.data_dir / "auren.sqlite3") as conn:
            stored = {row[0] for row in conn.execute(
                "SELECT source_record_id FROM biometric_events WHERE user_id = 'drain'")}
        assert answered <= stored  # nothing answered 2xx is missing


def test_several_workers_share_the_store(tmp_path: Path):
    with run_server("bridge", tmp_path, workers=2) as server:
        requests = []
        for i in range(600):
            body = native_body(f"mw-{i % 7}", [hrv_event(1 + i % 28, record=f"mw-{i}")])
            requests.append((body, native_headers(body)))
        responses = asyncio.run(_post_many(server.base_url, requests, 100))
        accepted = sum(1 for r in responses if r.status_code == 202)
        assert accepted == 600, Counter(r.status_code for r in responses)
        assert len(_rows(server)) == 600
