"""NEUROS and coverage, with real processes: an Oura ring that has sent nothing for three
nights makes NEUROS say so (and when data last arrived) instead of describing old nights; once
the ring syncs again, NEUROS answers from the new data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.connections.kit import System, system
from tests.helpers import ServerProcess, run_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("neuros")
    # The ring's last night ended four mornings ago: three nights have not arrived.
    end = datetime.now(UTC).date() - timedelta(days=4)
    with system(tmp, end=end, BACKFILL_DAYS="10") as found, \
            run_server("neuros", tmp, env={**found.env,
                                           "AUREN_DATA_DIR": str(found.bridge.data_dir)}) as neuros:
        yield found, neuros


def ask(neuros: ServerProcess, user: str, message: str) -> dict[str, object]:
    answer = httpx.post(neuros.base_url + "/chat", json={"user_id": user, "message": message},
                        timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_a_silent_ring_is_named_with_when_its_data_last_arrived(world):
    bridge, neuros = world
    bridge.connect("oura", "ring-person", 3)
    bridge.wait_idle(60)
    coverage = bridge.api("GET", "/api/v1/users/ring-person/coverage", params={"days": 30})
    (source,) = coverage.json()["sources"]
    assert source["provider"] == "oura" and source["stale"]
    sleep = next(m for m in source["metrics"] if m["metric"] == "sleep_duration")
    assert sleep["stale"] and sleep["silent_days"] >= 4

    reply = str(ask(neuros, "ring-person", "How did I sleep last night?")["reply"])
    assert "Oura ring has sent no new sleep data since" in reply
    assert sleep["last_event"][:10] in reply
    arrived = datetime.fromisoformat(sleep["last_received"]).strftime("%Y-%m-%d %H:%M")
    assert f"arrived {arrived} UTC" in reply
    assert "You slept" not in reply, reply  # not answered from the old nights

    # The ring syncs the missing nights: the notifications are fetched, NEUROS answers.
    result = bridge.advance(3, days=3)
    assert len(result["revealed"]) == 3
    bridge.wait_idle(60)
    fresh = str(ask(neuros, "ring-person", "How did I sleep last night?")["reply"])
    assert "You slept" in fresh and "sent no new" not in fresh


def test_a_person_without_connections_is_answered_as_before(world):
    _, neuros = world
    reply = str(ask(neuros, "nobody-connected", "How did I sleep?")["reply"])
    assert "sent no new" not in reply
