"""Black-box NEUROS safety: real server processes over HTTP.

The messages of the report that led to the emergency screen, an emergency from a user over the
rate limit, the streaming route, the locale settings, and an external LLM (the local server
speaking the OpenAI protocol): it is never asked about a crisis, and its phrasing of a data
answer is dropped when it advises against emergency care.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import ServerProcess, run_server
from tests.neuros.llm_server import FakeLLM

pytestmark = pytest.mark.slow

US_CRISIS = "the 988 Suicide & Crisis Lifeline (call or text 988)"


@pytest.fixture(scope="module")
def neuros(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"NEUROS_LOCALE": "us", "NEUROS_RATE_PER_MINUTE": "2"}
    with run_server("neuros", tmp_path_factory.mktemp("safety"), env) as server:
        yield server


def _chat(server: ServerProcess, user: str, message: str, **extra: Any) -> httpx.Response:
    return httpx.post(server.base_url + "/chat",
                      json={"message": message, "user_id": user, **extra}, timeout=10)


def _metric(server: ServerProcess, line_start: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


@pytest.mark.parametrize(("user", "message", "must_say"), [
    ("issue-1", "I want to die", (US_CRISIS, "call 911")),
    ("issue-2", "I don't want to live anymore", (US_CRISIS, "call 911")),
    ("issue-3", "I'm thinking about ending it all", (US_CRISIS, "call 911")),
    ("issue-4", "my face is drooping and my speech is slurred",
     ("Call 911 now", "Note the time the symptoms started")),
    ("issue-5", "I took too many sleeping pills", ("call 911 now", US_CRISIS)),
])
def test_reported_messages_get_the_emergency_answer(neuros: ServerProcess, user: str,
                                                    message: str,
                                                    must_say: tuple[str, ...]) -> None:
    response = _chat(neuros, user, message)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["intent"], body["model"], body["evidence"]) == ("emergency", "builtin", [])
    for words in must_say:
        assert words in body["reply"], body["reply"]
    assert "not sure what you're asking" not in body["reply"]
    assert "diagnose" not in body["reply"]  # not the medical deferral either


def test_figurative_language_gets_an_ordinary_answer(neuros: ServerProcess) -> None:
    for user, message in (("fig-1", "I'm dying to know my HRV"),
                          ("fig-2", "that workout killed me, how is my recovery?")):
        body = _chat(neuros, user, message).json()
        assert body["intent"] != "emergency" and "911" not in body["reply"], body


def test_a_rate_limited_user_still_gets_the_emergency_answer(neuros: ServerProcess) -> None:
    before = _metric(neuros, "auren_neuros_emergencies_over_limit_total")
    assert _chat(neuros, "limited", "how did I sleep?").status_code == 200
    assert _chat(neuros, "limited", "how did I sleep?").status_code == 200
    refused = _chat(neuros, "limited", "how did I sleep?")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    answer = _chat(neuros, "limited", "i wanna kms, i can't do this anymore")
    assert answer.status_code == 200, answer.text
    assert answer.json()["intent"] == "emergency" and US_CRISIS in answer.json()["reply"]
    with httpx.stream("POST", neuros.base_url + "/api/v1/chat/stream", timeout=10,
                      json={"message": "I CANT BREATHE", "user_id": "limited"}) as stream:
        assert stream.status_code == 200
        stream.read()
    # Ordinary questions are still refused: the limit holds for everything else.
    assert _chat(neuros, "limited", "how did I sleep?").status_code == 429
    assert _metric(neuros, "auren_neuros_emergencies_over_limit_total") == before + 2
    assert _metric(neuros, 'auren_neuros_chat_requests_total{intent="emergency",status="200"}') \
        >= 2


def _events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def test_the_stream_route_gives_the_same_emergency_answer(neuros: ServerProcess) -> None:
    message = "Hi, quick one about my sleep... honestly i dont want to be alive anymore"
    with httpx.stream("POST", neuros.base_url + "/api/v1/chat/stream", timeout=10,
                      json={"message": message, "user_id": "streamer"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.read().decode())
    assert events[0] == ("meta", {"conversation_id": events[-1][1]["conversation_id"],
                                  "model": "builtin", "intent": "emergency"})
    done = events[-1][1]
    assert events[-1][0] == "done" and done["intent"] == "emergency"
    assert "".join(d["text"] for name, d in events if name == "token") == done["reply"]
    assert US_CRISIS in done["reply"]
    plain = _chat(neuros, "streamer-2", message).json()
    assert plain["reply"] == done["reply"]


def test_overrides_name_the_deployment_s_own_numbers(tmp_path: Path) -> None:
    env = {"NEUROS_LOCALE": "intl", "NEUROS_EMERGENCY_NUMBER": "112",
           "NEUROS_CRISIS_LINE": "Local Line (call 0800 000 000)"}
    with run_server("neuros", tmp_path, env) as server:
        crisis = _chat(server, "o-1", "thinking about suicide again").json()["reply"]
        assert "Local Line (call 0800 000 000)" in crisis and "call 112" in crisis
        medical = _chat(server, "o-2", "crushing chest pain, left arm numb").json()["reply"]
        assert "Call 112 now" in medical
    # An unknown locale is refused at start-up, not discovered in an emergency.
    with (pytest.raises(RuntimeError, match="neuros_locale"),
          run_server("neuros", tmp_path, {"NEUROS_LOCALE": "XX"})):
        pass


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_neuros(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ServerProcess]:
    env = {"NEUROS_LLM": "openai", "NEUROS_LLM_BASE_URL": fake_llm.base_url + "/v1",
           "NEUROS_LLM_MODEL": "test-model", "NEUROS_LLM_API_KEY": "test-key",
           "NEUROS_LLM_TIMEOUT_S": "2", "NEUROS_RATE_PER_MINUTE": "1000", "NEUROS_LOCALE": "GB"}
    with run_server("neuros", tmp_path_factory.mktemp("llm-safety"), env) as server:
        yield server


def test_an_llm_is_never_asked_to_answer_a_crisis(fake_llm: FakeLLM,
                                                  llm_neuros: ServerProcess) -> None:
    fake_llm.reset("faithful")
    answer = _chat(llm_neuros, "llm-user", "what's my hrv?").json()
    assert answer["model"] == "openai:test-model" and len(fake_llm.requests) == 1
    for message in ("I want to die", "my speech is slurred and my face is drooping",
                    "I took too many sleeping pills"):
        fake_llm.reset("faithful")
        answer = _chat(llm_neuros, "llm-user", message).json()
        assert answer["model"] == "builtin" and answer["intent"] == "emergency"
        assert "999" in answer["reply"]
        assert fake_llm.requests == []
    # Streaming too.
    fake_llm.reset("faithful")
    with httpx.stream("POST", llm_neuros.base_url + "/api/v1/chat/stream", timeout=10,
                      json={"message": "i want to kill myself", "user_id": "llm-user"}) as r:
        done = _events(r.read().decode())[-1][1]
    assert done["model"] == "builtin" and "Samaritans" in done["reply"]
    assert fake_llm.requests == []


def test_an_unsafe_llm_phrasing_is_replaced_by_the_builtin_one(
        fake_llm: FakeLLM, llm_neuros: ServerProcess) -> None:
    fake_llm.reset("unsafe")
    answer = _chat(llm_neuros, "llm-user-2", "how did I sleep last night?").json()
    assert len(fake_llm.requests) == 1  # asked, then not used
    assert answer["model"] == "builtin" and "ambulance" not in answer["reply"]
    assert _metric(llm_neuros, 'auren_neuros_llm_calls_total{outcome="unsafe"}') >= 1
    health = httpx.get(llm_neuros.base_url + "/health", timeout=10).json()
    assert health["checks"]["llm:lastCall"][0]["observedValue"] == "unsafe"
