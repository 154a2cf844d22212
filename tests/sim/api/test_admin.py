"""The admin API and hostile input: precise 4xx answers, never a 5xx or a hang."""

from __future__ import annotations

import httpx
import pytest

from tests.sim.api.kit import DAYS, END, FUTURE, SEED, USERS, Sim, connect, histories, user_id

# This module's wearers: its own range, so that no other test module connects them.
BASE = 64


def test_config_and_users_describe_what_is_served(sim: Sim) -> None:
    config = sim.admin("GET", "/_sim/config")
    assert (config["seed"], config["users"], config["history_days"], config["future_days"],
            config["end_date"]) == (SEED, USERS, DAYS, FUTURE, str(END))
    env = config["settings_env"]
    assert env["WHOOP_API_URL"] == sim.url + "/whoop/developer"
    assert env["WITHINGS_TOKEN_URL"] == sim.url + "/withings/v2/oauth2"
    assert config["providers"]["oura"]["signed"] is True
    users = sim.admin("GET", "/_sim/users")
    expected = histories()
    assert [u["id"] for u in users] == [h.user_id for h in expected]
    assert users[0]["horizon"] == str(expected[0].days[-1].day)


def test_advancing_past_the_horizon_reveals_nothing_more(sim: Sim) -> None:
    user = user_id(BASE + 15)
    first = sim.advance(user, FUTURE + 5)
    assert len(first["revealed"]) == FUTURE
    assert sim.advance(user)["revealed"] == []


def test_queued_logins_pick_who_consents(sim: Sim) -> None:
    sim.admin("POST", "/_sim/providers/oura/login", params={"user": user_id(BASE + 9)})
    connection = connect(sim, "oura", None)
    info = connection.get("/v2/usercollection/personal_info").json()
    assert info["id"] == user_id(BASE + 9)


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/_sim/faults", {"kind": "meteor"}, 400),
    ("POST", "/_sim/faults", {"kind": "rate_limit", "provider": "myspace"}, 404),
    ("POST", "/_sim/faults", {"kind": "timeout", "delay_s": 10_000}, 400),
    ("POST", "/_sim/faults", {"kind": "revoked", "user": "nobody"}, 404),
    ("POST", "/_sim/faults", {"kind": "expired_token", "provider": "oura",
                              "user": user_id(BASE + 14)}, 422),
    ("POST", "/_sim/users/nobody/advance", None, 404),
    ("POST", "/_sim/users/0/advance?days=0", None, 400),
    ("PATCH", "/_sim/providers/oura", {"page_size": 0}, 400),
    ("PATCH", "/_sim/providers/oura", {"limits": [{"scope": "galaxy", "limit": 1,
                                                   "window_s": 1}]}, 400),
    ("DELETE", "/_sim/faults/999999", None, 404),
])
def test_admin_refuses_bad_input_with_problem_json(sim: Sim, method: str, path: str,
                                                   body: object, status: int) -> None:
    answer = httpx.request(method, sim.url + path, json=body, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


HOSTILE = [
    ("GET", "/oura/oauth/authorize?client_id=nobody"),
    ("GET", "/oura/oauth/authorize?client_id=auren-sim-oura"),
    ("POST", "/oura/oauth/token"),
    ("POST", "/fitbit/oauth2/token"),
    ("POST", "/withings/v2/oauth2"),
    ("POST", "/withings/v2/signature"),
    ("POST", "/withings/measure"),
    ("GET", "/oura/v2/usercollection/sleep"),
    ("GET", "/whoop/developer/v2/recovery?limit=abc"),
    ("GET", "/fitbit/1/user/-/hrv/date/not-a-date.json"),
    ("POST", "/polar/v3/users"),
    ("GET", "/garmin/wellness-api/rest/dailies?uploadStartTimeInSeconds=x"),
    ("GET", "/terra/v2/sleep?user_id=%00"),
    ("GET", "/terra/widget/session/unknown"),
    ("DELETE", "/terra/v2/auth/deauthenticateUser"),
]


@pytest.mark.parametrize("method,path", HOSTILE)
@pytest.mark.parametrize("body", [b"", b"\xff\xfe garbage", b"a=" + b"x" * 70_000,
                                  b'{"member-id": 5}'])
def test_hostile_input_never_gets_a_server_error(sim: Sim, method: str, path: str,
                                                 body: bytes) -> None:
    answer = httpx.request(method, sim.url + path, content=body, timeout=10,
                           headers={"authorization": "Bearer not-a-token",
                                    "content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code < 500, (answer.status_code, answer.text[:200])
    if answer.status_code == 200:  # Withings says no inside its HTTP 200
        assert answer.json()["status"] != 0


def test_a_withings_subscription_to_a_dead_callback_is_refused(sim: Sim) -> None:
    connection = connect(sim, "withings", user_id(BASE + 14))
    answer = connection.post("/notify", data={"action": "subscribe", "appli": 44,
                                              "callbackurl": "http://127.0.0.1:9/nothing"})
    assert answer.status_code == 200 and answer.json()["status"] == 293
