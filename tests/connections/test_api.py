"""The connection API's rules over HTTP, on a real bridge with service keys and user tokens
configured: who may call what, and a precise 4xx (problem+json) for every bad request, never a
5xx: unknown providers and people, forged, reused, expired or foreign states, a refused
consent, malformed parameters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.connections.kit import System, system

pytestmark = pytest.mark.timeout(180)

KEY = "service-key-0123456789"
JWT_SECRET = "jwt-secret-0123456789abcdef-0123456789"
SERVICE = {"authorization": f"Bearer {KEY}"}


def token(user: str) -> dict[str, str]:
    # A user token must carry exp (auren.services.auth).
    claims = {"sub": user, "exp": int(time.time()) + 600}
    return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS256")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system(tmp_path_factory.mktemp("api"), AUREN_API_KEYS=KEY,
                AUREN_JWT_SECRET=JWT_SECRET, OAUTH_STATE_TTL_S="8") as found:
        yield found


def call(world: System, method: str, path: str, headers: dict[str, str] | None = None,
         **kwargs: Any) -> httpx.Response:
    return httpx.request(method, world.url + path, headers=headers or {}, timeout=30,
                         follow_redirects=False, **kwargs)


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


def consent_url(world: System, user: str, provider: str = "oura") -> str:
    start = call(world, "GET", f"/api/v1/connect/{provider}", token(user),
                 params={"user_id": user})
    assert start.status_code == 302, start.text
    assert start.json()["authorize_url"] == start.headers["location"]
    return str(start.headers["location"])


def test_people_are_made_by_a_service_or_by_themselves(world):
    assert call(world, "POST", "/api/v1/users", SERVICE).status_code == 201  # an id is made
    made = call(world, "POST", "/api/v1/users", token("carol"), json={"user_id": "carol"})
    assert made.status_code == 201 and made.json()["user_id"] == "carol"
    again = call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "carol"})
    assert again.status_code == 200
    problem(call(world, "POST", "/api/v1/users", token("carol"), json={"user_id": "dave"}), 403)
    problem(call(world, "POST", "/api/v1/users", token("carol")), 403)  # no id: a service's
    problem(call(world, "POST", "/api/v1/users", json={"user_id": "x"}), 401)
    problem(call(world, "POST", "/api/v1/users", SERVICE, content=b"[1]"), 400)
    problem(call(world, "POST", "/api/v1/users", SERVICE, content=b"{nope"), 400)
    problem(call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": " padded "}), 422)
    problem(call(world, "POST", "/api/v1/users", SERVICE, content=b"{" + b" " * 5000 + b"}"),
            413)
    user = call(world, "GET", "/api/v1/users/carol", token("carol")).json()
    assert user["user_id"] == "carol" and user["connections"] == []
    problem(call(world, "GET", "/api/v1/users/nobody", SERVICE), 404)
    problem(call(world, "GET", "/api/v1/users/carol", token("dave")), 403)


def test_connect_refuses_unknown_providers_and_people(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "erin"})
    problem(call(world, "GET", "/api/v1/connect/nosuch", SERVICE, params={"user_id": "erin"}),
            404)
    problem(call(world, "GET", "/api/v1/connect/oura", SERVICE, params={"user_id": "ghost"}),
            404)
    problem(call(world, "GET", "/api/v1/connect/oura", token("frank"),
                 params={"user_id": "erin"}), 403)
    problem(call(world, "GET", "/api/v1/connect/oura", SERVICE), 400)
    problem(call(world, "GET", "/api/v1/connect/Oura%2F..", SERVICE,
                 params={"user_id": "erin"}), 404)


def test_a_state_is_signed_single_use_for_one_provider_and_expires(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "gina"})
    location = consent_url(world, "gina")
    assert "code_challenge" not in location  # Oura's PKCE support is not documented
    fitbit = consent_url(world, "gina", "fitbit")
    assert "code_challenge_method=S256" in fitbit  # Fitbit's is
    back = httpx.get(httpx.URL(location).copy_merge_params({"sim_user": "20"}), timeout=30)
    callback = httpx.URL(back.headers["location"])
    state = callback.params["state"]
    # The state for another provider, a forged one, and one that is not even a state.
    problem(call(world, "GET", "/api/v1/connect/whoop/callback",
                 params={"code": callback.params["code"], "state": state}), 400)
    forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    problem(call(world, "GET", "/api/v1/connect/oura/callback",
                 params={"code": "c", "state": forged}), 400)
    problem(call(world, "GET", "/api/v1/connect/oura/callback",
                 params={"code": "c", "state": "x" * 600}), 400)
    problem(call(world, "GET", "/api/v1/connect/oura/callback", params={"code": "c"}), 400)
    done = call(world, "GET", "/api/v1/connect/oura/callback", params=dict(callback.params))
    assert done.status_code == 200, done.text
    again = problem(call(world, "GET", "/api/v1/connect/oura/callback",
                         params=dict(callback.params)), 400)
    assert "already used" in again["detail"]


def test_a_refused_consent_and_a_refused_code_are_client_errors(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "hank"})
    denied = httpx.get(httpx.URL(consent_url(world, "hank")).copy_merge_params(
        {"sim_user": "21", "sim_deny": "1"}), timeout=30)
    body = problem(httpx.get(denied.headers["location"], timeout=30), 400)
    assert "did not grant access" in body["detail"]
    granted = httpx.get(httpx.URL(consent_url(world, "hank")).copy_merge_params(
        {"sim_user": "21"}), timeout=30)
    params = dict(httpx.URL(granted.headers["location"]).params)
    params["code"] = "code_made_up"
    assert "refused" in problem(call(world, "GET", "/api/v1/connect/oura/callback",
                                     params=params), 400)["detail"]


def test_an_expired_state_is_refused(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "ivy"})
    granted = httpx.get(httpx.URL(consent_url(world, "ivy")).copy_merge_params(
        {"sim_user": "22"}), timeout=30)
    time.sleep(9)  # OAUTH_STATE_TTL_S
    problem(httpx.get(granted.headers["location"], timeout=30), 400)


def test_connections_sync_coverage_and_jobs_ask_the_right_caller(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "jay"})
    assert call(world, "GET", "/api/v1/users/jay/connections", token("jay")).json() == {
        "connections": []}
    problem(call(world, "DELETE", "/api/v1/users/jay/connections/oura", token("jay")), 404)
    problem(call(world, "POST", "/api/v1/users/jay/connections/oura/sync", token("jay")), 404)
    problem(call(world, "POST", "/api/v1/users/jay/connections/oura/sync", token("jay"),
                 params={"since": "yesterday"}), 400)
    problem(call(world, "GET", "/api/v1/users/jay/coverage", token("jay"),
                 params={"days": 0}), 400)
    assert call(world, "GET", "/api/v1/users/jay/coverage", token("jay")).json()[
        "sources"] == []
    problem(call(world, "GET", "/api/v1/jobs", token("jay")), 403)
    problem(call(world, "GET", "/api/v1/jobs", SERVICE, params={"state": "lost"}), 422)
    assert call(world, "GET", "/api/v1/jobs", SERVICE, params={"state": "dead"}).status_code \
        == 200
    problem(call(world, "POST", "/api/v1/jobs/nope/retry", SERVICE), 404)
    problem(call(world, "POST", "/api/v1/jobs/retry", token("jay")), 403)


def test_disconnecting_revokes_at_the_provider_then_forgets(world):
    call(world, "POST", "/api/v1/users", SERVICE, json={"user_id": "kim"})
    granted = httpx.get(httpx.URL(consent_url(world, "kim")).copy_merge_params(
        {"sim_user": "23"}), timeout=30)
    assert httpx.get(granted.headers["location"], timeout=30).status_code == 200
    gone = call(world, "DELETE", "/api/v1/users/kim/connections/oura", token("kim"))
    assert gone.status_code == 200, gone.text
    (result,) = gone.json()["disconnected"]
    assert result["revoked_at_provider"] and result["tokens_forgotten"]
    grants = [g for g in world.sim.admin("GET", "/_sim/grants")
              if g["provider"] == "oura" and g["user"].endswith("0023")]
    assert grants and all(g["revoked"] for g in grants)
    assert call(world, "GET", "/api/v1/users/kim/connections", token("kim")).json() == {
        "connections": []}
