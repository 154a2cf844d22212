"""Injected faults and documented limits, each in its provider's own error format, against a
real simulator process: 429 + Retry-After (Withings: HTTP 200 and status 601), 5xx from the
load balancer, held responses, bodies cut off mid-way, revoked grants, expired tokens."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.sim.api.kit import FLOWS, Connection, Sim, authorize, connect, user_id

# This module's wearers: its own range, so that no other test module connects them.
BASE = 32

PROVIDERS = ["oura", "whoop", "fitbit", "polar", "withings", "garmin"]


def probe(connection: Connection, **kwargs: Any) -> httpx.Response:
    """A data call of the provider (Polar's user registered first)."""
    provider = connection.provider
    if provider == "withings":
        return connection.post("/v2/measure", data={
            "action": "getactivity", "startdateymd": "2026-02-20", "enddateymd": "2026-02-21"},
            **kwargs)
    path = {"oura": "/v2/usercollection/daily_activity?start_date=2026-02-20",
            "whoop": "/developer/v2/recovery?limit=2",
            "fitbit": "/1/user/-/hrv/date/2026-02-20/2026-02-21.json",
            "polar": "/v3/exercises",
            "garmin": "/wellness-api/rest/user/id"}[provider]
    return connection.get(path, **kwargs)


def connected(sim: Sim, provider: str, index: int) -> Connection:
    connection = connect(sim, provider, user_id(BASE + index))
    if provider == "polar" and connection.post(
            "/v3/users", json={"member-id": f"m-{index}"}).status_code not in (200, 409):
        raise AssertionError("registration failed")
    return connection


def ok(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    body = response.json()
    return not (isinstance(body, dict) and body.get("status") not in (None, 0))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_fault_answers_in_the_providers_format_then_clears(sim: Sim,
                                                                      provider: str) -> None:
    connection = connected(sim, provider, 1)
    sim.fault(kind="rate_limit", provider=provider, user=user_id(BASE + 1), retry_after_s=7)
    limited = probe(connection)
    if provider == "withings":
        assert limited.status_code == 200 and limited.json()["status"] == 601
    else:
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "7"
    if provider == "fitbit":
        assert limited.json()["errors"][0]["message"] == "Too Many Requests"
    assert ok(probe(connection))  # count=1: the next call passes


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_error_fault_is_an_html_page_not_the_apis_json(sim: Sim, provider: str) -> None:
    connection = connected(sim, provider, 2)
    sim.fault(kind="server_error", provider=provider, status=502, count=2)
    for _ in range(2):
        answer = probe(connection)
        assert answer.status_code == 502
        assert answer.headers["content-type"].startswith("text/html")
    assert ok(probe(connection))


@pytest.mark.parametrize("provider", ["oura", "fitbit", "withings"])
def test_malformed_fault_cuts_the_body_off(sim: Sim, provider: str) -> None:
    connection = connected(sim, provider, 3)
    sim.fault(kind="malformed", provider=provider)
    answer = probe(connection)
    assert answer.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.content)
    assert ok(probe(connection))


def test_timeout_fault_holds_the_answer(sim: Sim) -> None:
    connection = connected(sim, "whoop", 4)
    sim.fault(kind="timeout", provider="whoop", delay_s=1.5, count=2)
    with pytest.raises(httpx.ReadTimeout):
        probe(connection, timeout=0.5)
    started = time.monotonic()
    assert ok(probe(connection, timeout=10))  # held, then answered
    assert time.monotonic() - started >= 1.4


def test_faults_hit_only_their_provider_and_user(sim: Sim) -> None:
    target, bystander = connected(sim, "oura", 5), connected(sim, "oura", 6)
    other_provider = connected(sim, "whoop", 5)
    sim.fault(kind="server_error", provider="oura", user=user_id(BASE + 5), count=None)
    assert probe(target).status_code == 503
    assert ok(probe(bystander)) and ok(probe(other_provider))
    assert probe(target).status_code == 503  # count None: until cleared
    listed = sim.admin("GET", "/_sim/faults")
    assert listed[0]["hits"] == 2 and listed[0]["remaining"] is None
    sim.admin("DELETE", f"/_sim/faults/{listed[0]['id']}")
    assert ok(probe(target))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_revoked_grant_answers_401_in_the_providers_format_and_refresh_fails(
        sim: Sim, provider: str) -> None:
    connection = connected(sim, provider, 7)
    assert sim.fault(kind="revoked", provider=provider, user=user_id(BASE + 7))["applied"] >= 1
    answer = probe(connection)
    if provider == "withings":
        assert answer.status_code == 200 and answer.json()["status"] == 401
    else:
        assert answer.status_code == 401
    if provider == "fitbit":
        assert answer.json()["errors"][0]["errorType"] == "invalid_token"
    if provider == "oura":
        assert "detail" in answer.json()
    if provider == "polar":
        assert {"status", "errorType", "message", "corrId"} <= set(answer.json())
    if provider == "garmin":
        assert "errorMessage" in answer.json()
    if "refresh_token" in connection.token:
        with pytest.raises(Exception):  # noqa: B017 - authlib or the compliance hook
            refreshed = connection.refresh()
            assert "access_token" in refreshed  # Fitbit's error body is no token either
            raise AssertionError("refresh after revocation must fail")


@pytest.mark.parametrize("provider", ["oura", "whoop", "fitbit", "withings", "garmin"])
def test_expired_access_token_is_refreshed_and_works_again(sim: Sim, provider: str) -> None:
    connection = connected(sim, provider, 8)
    sim.fault(kind="expired_token", provider=provider, user=user_id(BASE + 8))
    expired = probe(connection)
    if provider == "withings":
        assert expired.json()["status"] == 401
    else:
        assert expired.status_code == 401
    if provider == "fitbit":
        assert expired.json()["errors"][0]["errorType"] == "expired_token"
    connection.refresh()
    assert ok(probe(connection))


def test_a_short_token_life_expires_on_its_own(sim: Sim) -> None:
    sim.patch("fitbit", access_ttl_s=1)
    connection = connected(sim, "fitbit", 9)
    assert ok(probe(connection))
    time.sleep(1.1)
    assert probe(connection).json()["errors"][0]["errorType"] == "expired_token"


def test_a_token_endpoint_fault_does_not_consume_the_refresh_token(sim: Sim) -> None:
    connection = connected(sim, "whoop", 10)
    sim.fault(kind="server_error", provider="whoop", target="token", status=503)
    with pytest.raises(httpx.HTTPStatusError):
        connection.refresh()
    connection.refresh()  # the same refresh token, retried
    assert ok(probe(connection))


def test_documented_limits_count_per_app_user_or_token_with_their_headers(sim: Sim) -> None:
    sim.patch("whoop", limits=[{"scope": "app", "limit": 3, "window_s": 60}])
    first, second = connected(sim, "whoop", 11), connected(sim, "whoop", 12)
    answers = [probe(first), probe(second), probe(first), probe(second)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # one app, shared
    assert answers[0].headers["x-ratelimit-remaining"] == "2"
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60
    sim.patch("fitbit", limits=[{"scope": "user", "limit": 2, "window_s": 3600}])
    a, b = connected(sim, "fitbit", 11), connected(sim, "fitbit", 12)
    statuses = [probe(a).status_code, probe(a).status_code, probe(a).status_code,
                probe(b).status_code]
    assert statuses == [200, 200, 429, 200]  # per user
    sim.patch("withings", limits=[{"scope": "app", "limit": 1, "window_s": 60}])
    w = connected(sim, "withings", 11)
    assert ok(probe(w)) and probe(w).json()["status"] == 601
    stats = sim.admin("GET", "/_sim/stats")
    assert stats["whoop:rate_limited"] >= 1 and stats["whoop:http:429"] >= 1


def test_token_endpoint_paths_are_the_flows_used_by_the_tests() -> None:
    assert set(FLOWS) == set(PROVIDERS)


def test_a_broken_token_answer_leaves_the_code_usable(sim: Sim) -> None:
    sim.fault(kind="malformed", provider="oura", target="token")
    oauth, location, state, verifier = authorize(sim, "oura", user_id(BASE + 13))
    with pytest.raises(ValueError):  # the JSON is cut off
        oauth.fetch_token(sim.url + FLOWS["oura"].token, authorization_response=location,
                          state=state, code_verifier=verifier)
    token = oauth.fetch_token(sim.url + FLOWS["oura"].token, authorization_response=location,
                              state=state, code_verifier=verifier)
    assert token["access_token"]


@pytest.mark.parametrize("provider", ["whoop", "fitbit", "garmin"])
async def test_concurrent_refreshes_with_one_rotating_token_let_exactly_one_win(
        sim: Sim, provider: str) -> None:
    connection = connected(sim, provider, 14)
    flow = FLOWS[provider]
    client = connection.client
    form = {"grant_type": "refresh_token", "refresh_token": connection.token["refresh_token"]}
    auth: dict[str, Any] = {}
    if flow.auth_method == "client_secret_basic":
        auth["auth"] = (client.client_id, client.client_secret)
    else:
        form.update(client_id=client.client_id, client_secret=client.client_secret)
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(http.post(sim.url + flow.token, data=form, **auth)
                                         for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
