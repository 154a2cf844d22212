"""The console's JSON, events and rules over HTTP, against a real deployment (the four services
as processes): what needs a session, logins and their limits, cookies, CSRF and origins, roles,
the aggregated figures, the stream, people, reports, chat."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from auren.ops.procs import ServiceSet
from auren.services.console.auth import parse_accounts
from tests.services.console_kit import (
    SERVICE_KEY,
    VIEWER,
    VIEWER_PASSWORD,
    Session,
    console_env,
    deployment,
    post_webhooks,
    sign_in,
    wait_until,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSet]:
    tmp = tmp_path_factory.mktemp("console-api")
    with deployment(tmp / "data", console_env(tmp / "reports")) as services:
        yield services


@pytest.fixture
def signed(stack: ServiceSet) -> Iterator[Callable[..., Session]]:
    """Sign in (as the operator unless told otherwise); the clients close afterwards."""
    opened: list[Session] = []

    def open_session(*credentials: str) -> Session:
        opened.append(sign_in(stack.urls["gateway"], *credentials))
        return opened[-1]

    yield open_session
    for session in opened:
        session.client.close()


@pytest.fixture
def gateway(stack: ServiceSet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.urls["gateway"], timeout=30, trust_env=False) as client:
        yield client


def _as(client_ip: str) -> dict[str, str]:
    """The gateway trusts its loopback peer (TRUSTED_PROXIES): pose as another client."""
    return {"x-forwarded-for": client_ip}


def test_only_the_page_its_assets_and_the_login_are_public(gateway: httpx.Client) -> None:
    assert gateway.get("/").status_code == 200
    script = gateway.get("/console/static/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    worker = gateway.get("/sw.js")
    assert worker.headers["service-worker-allowed"] == "/"
    assert gateway.get("/console/static/vendor/uPlot.LICENSE").status_code == 200
    for path in ("/console/api/now", "/console/api/traffic", "/console/api/stream",
                 "/console/api/people", "/console/api/people/someone",
                 "/console/api/reports", "/console/api/validate",
                 "/console/reports/20260101T000000Z/report.html"):
        answer = gateway.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["content-type"].startswith("application/problem+json"), path
    session = gateway.get("/console/api/session").json()
    assert session["signed_in"] is False and session["configured"] is True


def test_a_login_sets_a_strict_cookie_secure_behind_tls(gateway: httpx.Client) -> None:
    answer = gateway.post("/console/api/login", json={"user": VIEWER,
                                                      "password": VIEWER_PASSWORD})
    assert answer.status_code == 200 and answer.json()["role"] == "viewer"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http, nobody said TLS
    # Behind a TLS-terminating proxy the gateway trusts: Secure.
    tls = gateway.post("/console/api/login", json={"user": VIEWER, "password": VIEWER_PASSWORD},
                       headers={"x-forwarded-proto": "https"})
    assert "secure" in tls.headers["set-cookie"].lower()
    # The service key signs in too, read-only unless GATEWAY_CONSOLE_KEY_ROLE says otherwise.
    key = gateway.post("/console/api/login", json={"key": SERVICE_KEY})
    assert key.status_code == 200 and key.json()["role"] == "viewer"
    assert key.json()["may"] == {"validate": False, "chat": False}


def test_failed_logins_are_one_answer_and_limited_per_client(gateway: httpx.Client) -> None:
    client = _as("203.0.113.7")
    wrong = gateway.post("/console/api/login", json={"user": VIEWER, "password": "nope"},
                         headers=client)
    unknown = gateway.post("/console/api/login", json={"user": "nobody", "password": "nope"},
                           headers=client)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    for _ in range(3):
        gateway.post("/console/api/login", json={"key": "wrong"}, headers=client)
    limited = gateway.post("/console/api/login",
                           json={"user": VIEWER, "password": VIEWER_PASSWORD}, headers=client)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another client is not affected.
    assert gateway.post("/console/api/login", json={"user": VIEWER, "password": VIEWER_PASSWORD},
                        headers=_as("203.0.113.8")).status_code == 200


def test_bad_login_bodies_are_4xx(gateway: httpx.Client) -> None:
    client = _as("203.0.113.20")
    form = gateway.post("/console/api/login", data={"user": VIEWER, "password": "x"},
                        headers=client)
    assert form.status_code == 400  # JSON only: a cross-site form cannot post it
    assert gateway.post("/console/api/login", content=b"[1]", headers={
        **client, "content-type": "application/json"}).status_code == 400
    assert gateway.post("/console/api/login", json={"user": "x" * 65, "password": "y"},
                        headers=client).status_code == 422
    huge = gateway.post("/console/api/login", content=b'{"user": "' + b"x" * 70_000 + b'"}',
                        headers={**client, "content-type": "application/json"})
    assert huge.status_code == 413
    cross = gateway.post("/console/api/login", json={"user": VIEWER, "password": "x"},
                         headers={**client, "origin": "https://evil.example"})
    assert cross.status_code == 403


def test_changes_need_the_csrf_token_this_origin_and_the_operator_role(
        stack: ServiceSet, signed: Callable[..., Session]) -> None:
    operator = signed()
    no_token = operator.client.post("/console/api/chat", json={"user_id": "u", "message": "hi"})
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["detail"]
    wrong = operator.client.post("/console/api/chat", json={"user_id": "u", "message": "hi"},
                                 headers={"x-csrf-token": "not-it"})
    assert wrong.status_code == 403
    cross = operator.client.post("/console/api/chat", json={"user_id": "u", "message": "hi"},
                                 headers={"x-csrf-token": operator.csrf,
                                          "sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    other_origin = operator.client.post(
        "/console/api/chat", json={"user_id": "u", "message": "hi"},
        headers={"x-csrf-token": operator.csrf, "origin": "http://evil.example"})
    assert other_origin.status_code == 403
    viewer = signed(VIEWER, VIEWER_PASSWORD)
    for path, body in (("/console/api/chat", {"user_id": "u", "message": "hi"}),
                       ("/console/api/validate", {})):
        refused = viewer.post(path, body)
        assert refused.status_code == 403 and "operator" in refused.json()["detail"], path
    # Signing out revokes the session, not only the cookie in this client.
    token = viewer.client.cookies["auren_console"]
    assert viewer.post("/console/api/logout", {}).status_code == 200
    replay = httpx.get(stack.urls["gateway"] + "/console/api/now",
                       cookies={"auren_console": token})
    assert replay.status_code == 401
    forged = httpx.get(stack.urls["gateway"] + "/console/api/now",
                       cookies={"auren_console": token[:-4] + "AAAA"})
    assert forged.status_code == 401


def test_now_and_traffic_are_the_services_own_figures(stack: ServiceSet,
        signed: Callable[..., Session]) -> None:
    session = signed()

    def statuses() -> dict[str, str]:
        now = session.client.get("/console/api/now").json()
        return {s["name"]: s["status"] for s in now["services"]}

    wait_until(lambda: statuses() == {"neuros": "pass", "bridge": "pass", "legacy": "pass"},
               15, 0.5)
    now = session.client.get("/console/api/now").json()
    assert all(s["version"] and s["mode"] == "embedded" for s in now["services"])
    assert now["admission"]["limit"] == 50 and now["spool"] is None
    assert now["consumer_lag"] is None and now["fetch_dead"] == 0.0
    # The bridge's connection figures: no account yet, only its dead-job gauge, at 0.
    assert now["people"] == [{"metric": "auren_fetch_jobs_dead", "labels": {}, "value": 0.0}]
    assert post_webhooks(stack.urls["bridge"], "traffic-user", 40, prefix="traffic") == 40

    def counted() -> bool:
        series = session.client.get("/console/api/traffic").json()["webhooks"]
        return sum(v or 0 for v in series.get("bridge/auren/2xx", [])) > 0

    wait_until(counted, 15, 0.5)
    traffic = session.client.get("/console/api/traffic").json()
    assert len(traffic["t"]) == len(traffic["webhooks"]["bridge/auren/2xx"]) > 1
    assert any(v for v in traffic["latency"]["bridge/p50"])
    # A re-delivery is a duplicate, a bad signature a 401 by reason.
    body = b'{"type": "biometrics.recorded", "user_id": "x", "events": []}'
    httpx.post(stack.urls["bridge"] + "/webhooks/auren", content=body,
               headers={"webhook-id": "m", "webhook-timestamp": str(int(time.time())),
                        "webhook-signature": "v1,AAAA", "content-type": "application/json"})

    def unauthorized() -> bool:
        series = session.client.get("/console/api/traffic").json()["webhooks"]
        return any(series.get("bridge/auren/401 unauthorized") or [])

    wait_until(unauthorized, 15, 0.5)


def test_the_stream_sends_a_snapshot_each_round(stack: ServiceSet,
        signed: Callable[..., Session]) -> None:
    session = signed()
    events: list[dict[str, object]] = []
    began = time.monotonic()
    with session.client.stream("GET", "/console/api/stream", timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "snapshot":
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 3:
                    break
    # Watched, the rounds come every GATEWAY_CONSOLE_POLL_S (1 s): changes show within 2 s.
    assert time.monotonic() - began < 6
    assert all(e["now"]["services"] for e in events)  # type: ignore[index]


def test_people_show_no_connections_yet_and_recent_events(stack: ServiceSet,
        signed: Callable[..., Session]) -> None:
    assert post_webhooks(stack.urls["bridge"], "someone", 3, prefix="people") == 3
    session = signed()
    person = session.client.get("/console/api/people/someone").json()
    # A person the bridge does not know: its 404 is shown as not available, never as an error.
    assert person["connections"]["available"] is False
    assert person["connections"]["status"] == 404
    assert person["coverage"]["available"] is False
    assert person["events"]["count"] == 3 and person["events"]["window_days"] == 7
    starts = [e["start"] for e in person["events"]["events"]]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert session.client.get("/console/api/people/%20x").status_code == 422
    # The bridge's own connection figures: no account yet, so only its dead-job gauge, at 0.
    assert session.client.get("/console/api/people").json() == {"figures": [
        {"metric": "auren_fetch_jobs_dead", "labels": {}, "value": 0.0}]}


def test_chat_goes_to_neuros_with_the_gateways_key(stack: ServiceSet,
        signed: Callable[..., Session]) -> None:
    assert post_webhooks(stack.urls["bridge"], "asker", 14, prefix="ask") == 14
    session = signed()
    answer = session.post("/console/api/chat", {"user_id": "asker",
                                                "message": "What is my HRV?"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["reply"] and body["conversation_id"]
    assert any(e["metric"] == "hrv_rmssd" and e["value"] is not None for e in body["evidence"])
    # NEUROS itself refuses a request without the key: the page never has it, the gateway does.
    direct = httpx.post(stack.urls["neuros"] + "/chat",
                        json={"user_id": "asker", "message": "What is my HRV?"})
    assert direct.status_code == 401
    bad = session.post("/console/api/chat", {"user_id": "asker", "message": ""})
    assert bad.status_code == 422
    assert session.post("/console/api/chat", {"user_id": "asker"}).status_code == 422


def test_reports_are_listed_with_verdicts_and_open_sandboxed(
        stack: ServiceSet, signed: Callable[..., Session]) -> None:
    reports = Path(stack.env["AUREN_REPORTS_DIR"])
    for name, verdict in (("20260101T000000Z", "PASS"), ("20260102T000000Z", "FAIL")):
        (reports / name).mkdir(parents=True, exist_ok=True)
        (reports / name / "report.json").write_text(json.dumps({
            "generated_at": f"{name[:4]}-{name[4:6]}-{name[6:8]}T00:00:00+00:00",
            "verdict": verdict, "quick": True, "target": "embedded (deployment)",
            "comparison": {"ratios": {"throughput": 2.5}}}))
        (reports / name / "report.html").write_text(f"<html><body>{verdict}</body></html>")
    (reports / "not-a-report").mkdir(exist_ok=True)
    session = signed()
    listed = session.client.get("/console/api/reports").json()["reports"]
    assert [(r["name"], r["verdict"], r["throughput_ratio"]) for r in listed] == [
        ("20260102T000000Z", "FAIL", 2.5), ("20260101T000000Z", "PASS", 2.5)]
    page = session.client.get("/console/reports/20260101T000000Z/report.html")
    assert page.status_code == 200 and "PASS" in page.text
    csp = page.headers["content-security-policy"]
    assert csp.startswith("sandbox;") and "script-src" not in csp
    for bad in ("20260103T000000Z", "not-a-report", "..", "%2e%2e"):
        assert session.client.get(f"/console/reports/{bad}/report.html").status_code == 404


def test_accounts_are_checked_at_start() -> None:
    good = parse_accounts("a:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA "
                          "b:operator:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
    assert {a.name: a.role for a in good.values()} == {"a": "viewer", "b": "operator"}
    for text in ("a:admin:$argon2id$x", "a:plaintext", "bad name:$argon2id$x",
                 "a:$argon2id$x a:$argon2id$y"):
        with pytest.raises(ValueError, match="GATEWAY_CONSOLE_USERS"):
            parse_accounts(text)


def test_hash_password_prints_a_login_line() -> None:
    from argon2 import PasswordHasher
    from typer.testing import CliRunner

    from auren.cli import app

    result = CliRunner().invoke(app, ["console", "hash-password", "ops", "--role", "operator",
                                      "--password", "a-long-password"])
    assert result.exit_code == 0, result.output
    (account,) = parse_accounts(result.stdout.strip()).values()
    assert (account.name, account.role) == ("ops", "operator")
    assert PasswordHasher().verify(account.password_hash, "a-long-password")
    short = CliRunner().invoke(app, ["console", "hash-password", "ops", "--password", "short"])
    assert short.exit_code == 2
