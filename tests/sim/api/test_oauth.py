"""Each provider's OAuth as its cloud runs it, driven by a real OAuth client (authlib) against
a real simulator process: consent, code exchange with PKCE where the provider has it, client
authentication where the provider wants it, refresh with each provider's rotation, revocation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.base_client import OAuthError

from tests.sim.api.kit import (
    CLIENTS,
    FLOWS,
    REDIRECT,
    Sim,
    authorize,
    connect,
    terra_headers,
    user_id,
)


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _post_token(sim: Sim, provider: str, data: dict[str, str], *,
                basic: bool | None = None) -> httpx.Response:
    client = CLIENTS[provider]
    headers = {}
    use_basic = FLOWS[provider].auth_method == "client_secret_basic" if basic is None else basic
    if use_basic:
        raw = f"{client.client_id}:{client.client_secret}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        data = {"client_id": client.client_id, "client_secret": client.client_secret, **data}
    if FLOWS[provider].enveloped:
        data = {"action": "requesttoken", **data}
    return httpx.post(sim.url + FLOWS[provider].token, data=data, headers=headers, timeout=30)


@pytest.mark.parametrize("provider", ["oura", "whoop", "fitbit", "polar", "withings", "garmin"])
def test_the_dance_gives_a_token_that_reads_the_logged_in_users_data(sim: Sim,
                                                                       provider: str) -> None:
    user = user_id(1)
    connection = connect(sim, provider, user)
    token = connection.token
    assert token["access_token"]
    expected_user = sim.admin("GET", "/_sim/users")[1]["provider_user_ids"][provider]
    if provider == "fitbit":
        assert token["user_id"] == expected_user  # the encoded id comes with the token
    if provider == "polar":
        assert str(token["x_user_id"]) == expected_user
        assert "refresh_token" not in token  # long-lived, no refresh grant
    if provider == "withings":
        assert token["userid"] == expected_user
        assert token["scope"] == "user.metrics,user.activity,user.sleepevents"  # commas
    if provider == "garmin":
        answer = connection.get("/wellness-api/rest/user/id")
        assert answer.json() == {"userId": expected_user}
    if provider == "whoop":
        assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    grants = [g for g in sim.admin("GET", "/_sim/grants") if g["provider"] == provider
              and g["user"] == user and not g["revoked"]]
    assert grants and grants[-1]["provider_user_id"] == expected_user


def test_consent_echoes_state_and_the_user_may_untick_scopes(sim: Sim) -> None:
    _, location, state, _ = authorize(sim, "oura", user_id(2), sim_scopes="daily personal")
    assert location.startswith(REDIRECT) and _query(location)["state"] == state
    connection = connect(sim, "oura", user_id(2), sim_scopes="daily personal")
    assert connection.token["scope"] == "daily personal"
    # spo2 was unticked: its collection is refused, daily data is not.
    assert connection.get("/v2/usercollection/daily_spo2").status_code == 401
    assert connection.get("/v2/usercollection/sleep").status_code == 200


def test_a_denied_consent_redirects_with_access_denied(sim: Sim) -> None:
    _, location, state, _ = authorize(sim, "whoop", user_id(2), sim_deny="1")
    query = _query(location)
    assert query["error"] == "access_denied" and query["state"] == state


def test_pkce_is_required_by_garmin_and_checked_wherever_a_challenge_was_sent(sim: Sim) -> None:
    client = CLIENTS["garmin"]
    answer = httpx.get(sim.url + FLOWS["garmin"].authorize, params={
        "client_id": client.client_id, "response_type": "code", "redirect_uri": REDIRECT,
        "state": "s" * 16, "sim_user": user_id(3)}, follow_redirects=False)
    assert answer.status_code == 302
    assert _query(answer.headers["location"])["error"] == "invalid_request"
    for provider in ("garmin", "oura", "whoop"):
        oauth, location, state, _ = authorize(sim, provider, user_id(3))
        with pytest.raises(OAuthError, match="invalid_grant"):
            oauth.fetch_token(sim.url + FLOWS[provider].token, authorization_response=location,
                              state=state, code_verifier="x" * 64)
    # Fitbit answers in its own error format (which an OAuth client must be taught to read).
    _, location, _, verifier = authorize(sim, "fitbit", user_id(3))
    code = _query(location)["code"]
    wrong = _post_token(sim, "fitbit", {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": REDIRECT, "code_verifier": "y" * 64})
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["errorType"] == "invalid_grant"
    right = _post_token(sim, "fitbit", {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": REDIRECT, "code_verifier": verifier or ""})
    assert right.status_code == 200, right.text


def test_a_code_is_single_use_and_bound_to_its_redirect_uri(sim: Sim) -> None:
    _, location, _, verifier = authorize(sim, "whoop", user_id(4))
    code = _query(location)["code"]
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier or ""}
    other = _post_token(sim, "whoop", {**form, "redirect_uri": "http://127.0.0.1:9/other"})
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    first = _post_token(sim, "whoop", {**form, "redirect_uri": REDIRECT})
    assert first.status_code == 200
    again = _post_token(sim, "whoop", {**form, "redirect_uri": REDIRECT})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_each_token_endpoint_takes_credentials_only_where_its_provider_does(sim: Sim) -> None:
    # Fitbit and Polar want HTTP Basic; WHOOP and Garmin want them in the body.
    for provider, basic in (("fitbit", False), ("polar", False), ("whoop", True),
                            ("garmin", True)):
        _, location, _, verifier = authorize(sim, provider, user_id(5))
        form = {"grant_type": "authorization_code", "code": _query(location)["code"],
                "redirect_uri": REDIRECT}
        if verifier:
            form["code_verifier"] = verifier
        answer = _post_token(sim, provider, form, basic=basic)
        assert answer.status_code == 401, (provider, answer.text)
    # A wrong secret is refused too.
    _, location, _, verifier = authorize(sim, "oura", user_id(5))
    answer = httpx.post(sim.url + FLOWS["oura"].token, data={
        "grant_type": "authorization_code", "code": _query(location)["code"],
        "redirect_uri": REDIRECT, "code_verifier": verifier or "",
        "client_id": CLIENTS["oura"].client_id, "client_secret": "wrong"})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


@pytest.mark.parametrize("provider", ["whoop", "fitbit", "garmin"])
def test_rotating_providers_kill_a_refresh_token_once_it_is_used(sim: Sim, provider: str) -> None:
    connection = connect(sim, provider, user_id(6))
    old = connection.token["refresh_token"]
    new = connection.refresh()
    assert new["refresh_token"] != old and new["access_token"]
    assert connection.get(_probe(provider)).status_code == 200
    # The same old token a second time, as a concurrent refresh would send it: refused.
    reused = _post_token(sim, provider, {"grant_type": "refresh_token", "refresh_token": old})
    assert reused.status_code in (400, 401), reused.text
    body = reused.json()
    error = body["errors"][0]["errorType"] if provider == "fitbit" else body["error"]
    assert error == "invalid_grant"
    # The new one still works (and rotates again).
    assert connection.refresh()["refresh_token"] != new["refresh_token"]


def test_withings_keeps_the_old_refresh_token_until_the_new_access_token_is_used(
        sim: Sim) -> None:
    connection = connect(sim, "withings", user_id(7))
    old = connection.token["refresh_token"]
    connection.refresh()
    # Not used yet: the old refresh token still answers (a lost response can be retried).
    again = _post_token(sim, "withings", {"grant_type": "refresh_token", "refresh_token": old})
    assert again.status_code == 200 and again.json()["status"] == 0, again.text
    newest = again.json()["body"]
    answer = httpx.post(connection.url("/v2/measure"), data={
        "action": "getactivity", "startdateymd": "2026-02-01", "enddateymd": "2026-02-03"},
        headers={"authorization": f"Bearer {newest['access_token']}"})
    assert answer.json()["status"] == 0
    dead = _post_token(sim, "withings", {"grant_type": "refresh_token", "refresh_token": old})
    assert dead.status_code == 200  # Withings answers errors with HTTP 200 …
    assert dead.json()["status"] == 401  # … and the status inside


def test_oura_hands_back_its_refresh_token_and_polar_has_no_refresh_grant(sim: Sim) -> None:
    oura = connect(sim, "oura", user_id(8))
    old = oura.token["refresh_token"]
    assert oura.refresh()["refresh_token"] == old
    assert oura.refresh()["access_token"]
    polar = connect(sim, "polar", user_id(8))
    answer = _post_token(sim, "polar", {"grant_type": "refresh_token",
                                        "refresh_token": "anything"})
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"
    assert polar.post("/v3/users", json={"member-id": "m-8"}).status_code == 200


def test_whoop_issues_a_refresh_token_only_with_offline_and_wants_a_long_state(sim: Sim) -> None:
    connection = connect(sim, "whoop", user_id(9), scope="read:recovery read:sleep")
    assert "refresh_token" not in connection.token
    client = CLIENTS["whoop"]
    answer = httpx.get(sim.url + FLOWS["whoop"].authorize, params={
        "client_id": client.client_id, "response_type": "code", "redirect_uri": REDIRECT,
        "state": "short"}, follow_redirects=False)
    assert _query(answer.headers["location"])["error"] == "invalid_state"


@pytest.mark.parametrize("provider", ["oura", "whoop", "fitbit", "polar", "withings", "garmin"])
def test_revocation_ends_the_grant_in_each_providers_own_way(sim: Sim, provider: str) -> None:
    connection = connect(sim, provider, user_id(10))
    access = connection.access
    if provider == "oura":
        answer = httpx.post(connection.url("/oauth/revoke"), params={"access_token": access})
        assert answer.status_code == 200
    elif provider == "whoop":
        assert httpx.delete(connection.url("/developer/v2/user/access"),
                            headers={"authorization": f"Bearer {access}"}).status_code == 204
    elif provider == "fitbit":
        answer = _post_token(sim, "fitbit", {})  # wrong endpoint first: no grant_type
        assert answer.status_code == 400
        client = CLIENTS["fitbit"]
        answer = httpx.post(connection.url("/oauth2/revoke"), data={"token": access},
                            auth=(client.client_id, client.client_secret))
        assert answer.status_code == 200
    elif provider == "polar":
        polar_user = connection.token["x_user_id"]
        assert connection.post("/v3/users", json={"member-id": "m-10"}).status_code == 200
        assert httpx.delete(connection.url(f"/v3/users/{polar_user}"),
                            headers={"authorization": f"Bearer {access}"}).status_code == 204
    elif provider == "withings":
        _withings_revoke(sim, connection.token["userid"])
    else:
        assert httpx.delete(connection.url("/wellness-api/rest/user/registration"),
                            headers={"authorization": f"Bearer {access}"}).status_code == 204
    answer = connection.get(_probe(provider))
    if provider == "withings":
        assert answer.status_code == 200 and answer.json()["status"] == 401
    else:
        assert answer.status_code == 401
    if provider not in ("polar",):
        refreshed = _post_token(sim, provider, {"grant_type": "refresh_token",
                                                "refresh_token": connection.token.get(
                                                    "refresh_token", "none")})
        assert refreshed.status_code in (200, 400, 401)
        body = refreshed.json()
        assert body.get("status", 401) == 401 and "access_token" not in body


def _withings_revoke(sim: Sim, userid: str) -> None:
    """Withings' signed revoke: a nonce first (signed over action, client_id, timestamp)."""
    client = CLIENTS["withings"]
    key = client.client_secret.encode()
    stamp = str(int(time.time()))
    signature = hmac.new(key, f"getnonce,{client.client_id},{stamp}".encode(),
                         hashlib.sha256).hexdigest()
    nonce = httpx.post(sim.url + "/withings/v2/signature", data={
        "action": "getnonce", "client_id": client.client_id, "timestamp": stamp,
        "signature": signature}).json()["body"]["nonce"]
    signature = hmac.new(key, f"revoke,{client.client_id},{nonce}".encode(),
                         hashlib.sha256).hexdigest()
    answer = httpx.post(sim.url + "/withings/v2/oauth2", data={
        "action": "revoke", "client_id": client.client_id, "nonce": nonce,
        "signature": signature, "userid": userid})
    assert answer.json() == {"status": 0, "body": {}}
    # A nonce is single-use.
    again = httpx.post(sim.url + "/withings/v2/oauth2", data={
        "action": "revoke", "client_id": client.client_id, "nonce": nonce,
        "signature": signature, "userid": userid})
    assert again.json()["status"] == 401


def test_terra_widget_session_connects_with_the_reference_id_and_deauth_ends_it(
        sim: Sim) -> None:
    session = httpx.post(sim.url + "/terra/v2/auth/generateWidgetSession", json={
        "reference_id": "auren-user-42", "providers": "OURA,GARMIN",
        "auth_success_redirect_url": "https://app.example/ok",
        "auth_failure_redirect_url": "https://app.example/failed"}, headers=terra_headers())
    assert session.status_code == 200 and session.json()["expires_in"] == 900
    answer = httpx.get(session.json()["url"], params={"resource": "OURA",
                                                      "sim_user": user_id(11)})
    assert answer.status_code == 302
    query = _query(answer.headers["location"])
    assert query["reference_id"] == "auren-user-42" and query["resource"] == "OURA"
    info = httpx.get(sim.url + "/terra/v2/userInfo", params={"reference_id": "auren-user-42"},
                     headers=terra_headers())
    assert info.json()["user"]["user_id"] == query["user_id"]
    gone = httpx.delete(sim.url + "/terra/v2/auth/deauthenticateUser",
                        params={"user_id": query["user_id"]}, headers=terra_headers())
    assert gone.json() == {"status": "success"}
    missing = httpx.get(sim.url + "/terra/v2/userInfo", params={"user_id": query["user_id"]},
                        headers=terra_headers())
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = httpx.get(sim.url + "/terra/v2/userInfo", params={"user_id": "x"},
                    headers={"dev-id": "nobody", "x-api-key": "wrong"})
    assert bad.status_code == 401


def _probe(provider: str) -> str:
    """A cheap data call that needs the provider's token."""
    return {"oura": "/v2/usercollection/personal_info",
            "whoop": "/developer/v2/user/profile/basic",
            "fitbit": "/1/user/-/profile.json",
            "polar": "/v3/exercises",
            "withings": "/v2/measure?action=getactivity&startdateymd=2026-02-01&"
                        "enddateymd=2026-02-02",
            "garmin": "/wellness-api/rest/user/id"}[provider]

