"""In-process checks of the app that a loopback-bound process cannot show."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from auren.services.neuros import create_app
from auren.settings import Settings


async def test_without_auth_configured_only_loopback_clients_are_served(tmp_path: Path) -> None:
    app = create_app(Settings(auren_data_dir=tmp_path))
    async with app.router.lifespan_context(app):
        for host, status in (("203.0.113.7", 403), ("127.0.0.1", 200), ("::1", 200)):
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://neuros") as c:
                response = await c.post("/chat", json={"message": "hi", "user_id": "u"})
                assert response.status_code == status, (host, response.text)
                listed = await c.get("/api/v1/users/u/conversations")
                assert listed.status_code == status


BAD_BODIES: list[tuple[bytes, dict[str, str]]] = [
    (b"{not json", {}), (b"[1, 2]", {}), (b"", {}), (b'"text"', {}),
    (orjson.dumps({"message": "hi"}), {}),
    (orjson.dumps({"user_id": "u"}), {}),
    (orjson.dumps({"message": "", "user_id": "u"}), {}),
    (orjson.dumps({"message": 5, "user_id": "u"}), {}),
    (orjson.dumps({"message": "hi", "user_id": None}), {}),
    (orjson.dumps({"message": "hi", "user_id": ""}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u" * 257}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "conversation_id": "../../etc"}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "conversation_id": "abc\n"}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "conversation_id": "a" * 65}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "conversation_id": 7}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "conversation_id": "nope"}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "timezone": "Mars/Olympus"}), {}),
    # Folders and files of the tz database that are not zones: "America" was a 500.
    *((orjson.dumps({"message": "hi", "user_id": "u", "timezone": tz}), {})
      for tz in ("America", "Etc", "America/", "posix/Europe/Berlin", "../America", "zone.tab",
                 "tzdata.zi", "Europe/Berlin\u0000", "/etc/localtime")),
    (orjson.dumps({"message": "hi", "user_id": "u", "timezone": "x" * 65}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u", "timezone": 2}), {}),
    (orjson.dumps({"message": "x" * 2001, "user_id": "u"}), {}),
    (orjson.dumps({"message": "x" * 20_000, "user_id": "u"}), {}),
    (orjson.dumps({"message": "hi", "user_id": "u"}), {"content-encoding": "gzip"}),
]


async def test_the_raw_chat_lane_answers_exactly_as_the_documented_route(tmp_path: Path) -> None:
    """POST /chat bypasses FastAPI; its answers must be the FastAPI route's, byte for byte."""
    app = create_app(Settings(auren_data_dir=tmp_path))
    async with app.router.lifespan_context(app):
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a),
                                     base_url="http://neuros") for a in (app, app.api)]
        try:
            for path in ("/chat", "/api/v1/chat"):
                for body, headers in BAD_BODIES:
                    raw, routed = [await c.post(path, content=body, headers={
                        "content-type": "application/json", **headers}) for c in clients]
                    assert raw.status_code == routed.status_code >= 400, (body[:60], raw.text)
                    assert raw.headers["content-type"] == routed.headers["content-type"] == \
                        "application/problem+json"
                    assert raw.json() == routed.json(), body[:60]
                raw, routed = [await c.post(path, json={"message": "How did I sleep?",
                                                        "user_id": "u"}) for c in clients]
                assert raw.status_code == routed.status_code == 200
                assert raw.headers["content-type"] == routed.headers["content-type"]
                assert {k: v for k, v in raw.json().items() if k != "conversation_id"} == \
                    {k: v for k, v in routed.json().items() if k != "conversation_id"}
            # Other methods still get FastAPI's 405 problem.
            assert (await clients[0].get("/chat")).status_code == 405
        finally:
            for client in clients:
                await client.aclose()


async def test_a_timezone_must_name_a_zone_of_the_tz_database(tmp_path: Path) -> None:
    app = create_app(Settings(auren_data_dir=tmp_path))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://neuros") as client:
        for tz in ("America", "Etc", "America/", "posix/Europe/Berlin", "../America",
                   "zone.tab", "tzdata.zi", "/etc/localtime", "Europe/Berlin\x00", "Mars",
                   "+15:00"):
            response = await client.post("/chat", json={"message": "How did I sleep?",
                                                        "user_id": "u", "timezone": tz})
            assert response.status_code == 422, (tz, response.text)
            assert "timezone" in response.json()["detail"]
        for tz in ("Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC",
                   "+05:30", None):
            response = await client.post("/chat", json={"message": "How did I sleep?",
                                                        "user_id": "u", "timezone": tz})
            assert response.status_code == 200, (tz, response.text)


async def test_an_emergency_is_answered_past_every_limit_but_auth(tmp_path: Path) -> None:
    """Length, time zone, rate and a conversation that is not the user's: none of them stops
    an emergency answer. Authentication still does."""
    settings = Settings(auren_data_dir=tmp_path, neuros_rate_per_minute=1,
                        neuros_max_message_chars=100, neuros_locale="GB",
                        auren_api_keys="svc-key")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://neuros",
                                     headers={"authorization": "Bearer svc-key"}) as c:
            async def chat(user: str, message: str, **extra: str) -> httpx.Response:
                return await c.post("/chat", json={"message": message, "user_id": user,
                                                   **extra})

            first = await chat("u", "how did I sleep?")
            assert first.status_code == 200
            assert (await chat("u", "how did I sleep?")).status_code == 429
            answer = await chat("u", "I want to die")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["intent"] == "emergency" and body["evidence"] == []
            assert "Samaritans (call 116 123" in body["reply"] and "999" in body["reply"]

            long = "I can't sleep and everything is going wrong. " * 5 + "I want to die."
            assert (await chat("v", long.replace("I want to die.", ""))).status_code == 413
            assert (await chat("v", long)).status_code == 200
            assert (await chat("w", "hi", timezone="Mars/Olympus")).status_code == 422
            assert (await chat("w", "my chest hurts", timezone="America")).status_code == 200

            # Another user's conversation: the answer comes in a new one of this user's.
            other = first.json()["conversation_id"]
            answer = await chat("x", "I took too many sleeping pills", conversation_id=other)
            assert answer.status_code == 200 and answer.json()["intent"] == "emergency"
            assert answer.json()["conversation_id"] != other
            mine = (await c.get(f"/api/v1/users/x/conversations/"
                                f"{answer.json()['conversation_id']}")).json()["messages"]
            assert [m["role"] for m in mine] == ["user", "assistant"]
            assert mine[1]["meta"]["safety"] == "overdose"
            theirs = (await c.get(f"/api/v1/users/u/conversations/{other}")).json()
            assert len(theirs["messages"]) == 2

            # Authentication is never skipped.
            anonymous = await c.post("/chat", json={"message": "I want to die", "user_id": "u"},
                                     headers={"authorization": ""})
            assert anonymous.status_code == 401
            metrics = (await c.get("/metrics")).text
            assert "auren_neuros_emergencies_over_limit_total 1.0" in metrics
            assert 'auren_neuros_emergencies_total{category="suicide"} 2.0' in metrics
