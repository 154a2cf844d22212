"""The bridge in full mode, black box: a real ``auren serve bridge`` and ``auren sink`` over
real Kafka, PostgreSQL and Redis. Oracle: every webhook answered 2xx is in PostgreSQL exactly
once, and readable through the API, which reads PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.helpers import hrv_event, native_body, native_headers, run_server
from tests.stack import (
    check_exactly_once,
    pg_fetch,
    send_load,
    service_env,
    start_sink,
    wait_for_records,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plane(full_stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fullstack-bridge")
    env = full_stack.isolated()
    with run_server("bridge", tmp, env) as bridge:
        sink = start_sink(service_env(env, tmp / "sink-data"), tmp)
        try:
            yield bridge, env
        finally:
            assert sink.stop() == 0, sink.log()


def test_health_reports_every_dependency_and_breaker(plane):
    bridge, _ = plane
    body = httpx.get(bridge.base_url + "/health", timeout=10).json()
    assert body["mode"] == "full" and body["status"] == "pass", body
    checks = body["checks"]
    for key in ("store:responseTime", "kafka:responseTime", "redis:responseTime",
                "spool:records", "breaker:kafka", "breaker:postgres", "breaker:redis"):
        assert checks[key][0]["status"] == "pass", (key, checks[key])
    assert checks["store:responseTime"][0]["componentId"] == "postgresql"
    text = httpx.get(bridge.base_url + "/metrics", timeout=10).text
    assert 'auren_breaker_state{breaker="kafka"} 0.0' in text
    assert "auren_spool_records 0.0" in text


def test_concurrent_webhooks_land_in_postgres_exactly_once(plane):
    bridge, env = plane
    load = asyncio.run(send_load(bridge.base_url, "bulk", 400, rate=400, concurrency=100))
    assert load.statuses() == {202: 400}
    counts = check_exactly_once(env["POSTGRES_URL"], "bulk", load)
    assert len(counts) == 800
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        total = sum(len(client.get(f"/api/v1/users/bulk-u{u}/events",
                                   params={"limit": 1000}).json()["events"])
                    for u in range(20))
    assert total == 800


def test_redelivery_is_absorbed_by_redis_and_by_the_unique_keys(plane):
    bridge, env = plane
    body = native_body("dup-u", [hrv_event(3, 50.0, record="dup-a"),
                                 hrv_event(4, 51.0, record="dup-b")])
    headers = native_headers(body)
    with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
        first = client.post("/webhooks/auren", content=body, headers=headers)
        assert first.status_code == 202 and first.json() == {"accepted": 2, "duplicates": 0}
        # The provider's retry (same webhook-id, fresh signature): Redis knows it.
        retry = client.post("/webhooks/auren", content=body,
                            headers=native_headers(body, msg_id=headers["webhook-id"]))
        assert retry.status_code == 200 and retry.json()["duplicate"] is True
        # The same measurements in a new delivery: published again ("accepted" counts what
        # was published) and absorbed by PostgreSQL's unique key.
        again = client.post("/webhooks/auren", content=body, headers=native_headers(body))
        assert again.status_code == 202
    counts = wait_for_records(env["POSTGRES_URL"], "dup-u", {"dup-a", "dup-b"})
    assert counts == {"dup-a": 1, "dup-b": 1}
    deliveries = pg_fetch(env["POSTGRES_URL"],
                          "SELECT count(*) FROM deliveries WHERE delivery_key = $1",
                          headers["webhook-id"])
    assert deliveries == [(1,)]


def test_rate_limits_answer_429_with_retry_after(full_stack, tmp_path):
    env = full_stack.isolated(webhook_rate_per_source=5)
    with run_server("bridge", tmp_path, env) as bridge:
        load = asyncio.run(send_load(bridge.base_url, "rl", 40, rate=1000, concurrency=40))
        statuses = load.statuses()
        assert set(statuses) <= {202, 429}, statuses
        assert statuses.get(429, 0) >= 20
        body = native_body("rl-x", [hrv_event(1)])
        limited = httpx.post(bridge.base_url + "/webhooks/auren", content=body,
                             headers=native_headers(body), timeout=10)
        if limited.status_code == 429:
            assert limited.headers["retry-after"] == "1"


def test_kafka_without_postgres_is_refused_at_start(full_stack, tmp_path):
    env = service_env({"KAFKA_BOOTSTRAP_SERVERS": full_stack.urls["KAFKA_BOOTSTRAP_SERVERS"]},
                      tmp_path)
    done = subprocess.run([sys.executable, "-m", "auren", "serve", "bridge", "--port", "1"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "needs POSTGRES_URL" in done.stdout + done.stderr


def test_neuros_reads_what_the_bridge_wrote_from_postgres(plane, tmp_path):
    bridge, env = plane
    today = datetime.now(UTC).date()
    events = [{"metric": "resting_heart_rate", "value": 52 + d % 3, "unit": "/min",
               "start": f"{today - timedelta(days=d)}T06:00:00Z", "id": f"neu-rhr-{d}"}
              for d in range(1, 15)]
    body = native_body("neu-user", events)
    answer = httpx.post(bridge.base_url + "/webhooks/auren", content=body,
                        headers=native_headers(body), timeout=10)
    assert answer.status_code == 202
    wait_for_records(env["POSTGRES_URL"], "neu-user", {e["id"] for e in events})
    with run_server("neuros", tmp_path, env) as neuros:
        health = httpx.get(neuros.base_url + "/health", timeout=10).json()
        assert health["mode"] == "full"
        assert health["checks"]["store:responseTime"][0]["componentId"] == "postgresql"
        chat = httpx.post(neuros.base_url + "/chat", timeout=30, json={
            "user_id": "neu-user", "message": "What is my resting heart rate lately?"})
        assert chat.status_code == 200, chat.text
        evidence = chat.json()["evidence"]
        assert any(item["metric"] == "resting_heart_rate" and item["n_days"] >= 7
                   for item in evidence), evidence
