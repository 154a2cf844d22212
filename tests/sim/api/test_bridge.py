"""The simulator and a real bridge process configured alike: every provider's notification
for a connected user is accepted (2xx), and a bridge with other secrets refuses them all."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import run_server
from tests.sim.api.kit import ENV, OPEN_CLIENTS, connect, run_sim, terra_headers, user_id


def test_a_real_bridge_accepts_every_providers_notification(tmp_path: Path) -> None:
    with run_server("bridge", tmp_path, env=ENV) as bridge, \
            run_sim(tmp_path, bridge=bridge.base_url) as sim:
        user = user_id(0)
        for provider in ("oura", "whoop", "fitbit", "polar", "withings", "garmin"):
            connection = connect(sim, provider, user)
            if provider == "fitbit":
                assert connection.post("/1/user/-/apiSubscriptions/s1.json").status_code == 201
            if provider == "polar":
                assert connection.post("/v3/users", json={"member-id": user}).status_code == 200
            if provider == "withings":
                answer = connection.post("/notify", data={
                    "action": "subscribe", "appli": 44,
                    "callbackurl": bridge.base_url + "/webhooks/withings"})
                assert answer.json()["status"] == 0  # the bridge answered Withings' HEAD
        session = httpx.post(sim.url + "/terra/v2/auth/generateWidgetSession",
                             json={"reference_id": "auren-0"}, headers=terra_headers()).json()
        assert httpx.get(session["url"], params={"sim_user": user}).status_code == 200
        result = sim.advance(user, 2)
        sent = result["notifications"]
        assert {n["provider"] for n in sent} == {"oura", "whoop", "fitbit", "polar", "withings",
                                                 "garmin", "terra"}
        refused = [(n["provider"], n["kind"], n["status"], n["error"]) for n in sent
                   if not (n["status"] and 200 <= n["status"] < 300)]
        assert refused == []
        by_provider = {n["provider"]: n["status"] for n in sent}
        assert by_provider["fitbit"] == 204 and by_provider["withings"] == 200
        assert by_provider["oura"] == 202
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().close()


def test_a_bridge_with_other_secrets_refuses_the_notifications(tmp_path: Path) -> None:
    other = {**ENV, "OURA_CLIENT_SECRET": "another", "WHOOP_CLIENT_SECRET": "another"}
    with run_server("bridge", tmp_path, env=other) as bridge, \
            run_sim(tmp_path, bridge=bridge.base_url) as sim:
        for provider in ("oura", "whoop"):
            connect(sim, provider, user_id(1))
        sent = sim.advance(user_id(1))["notifications"]
        assert sent and {n["status"] for n in sent} == {401}
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().close()
