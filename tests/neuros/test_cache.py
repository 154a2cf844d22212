"""The per-user series cache: what a cached turn still asks the event store, and that a new
measurement is never answered from a stale entry."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from unittest.mock import ANY

import pytest

from auren.adapters.sqlite import SQLiteStore
from auren.events import Delivery, make_event
from auren.neuros import engine
from auren.neuros.chat import Neuros
from auren.neuros.memory.sqlite import SQLiteConversations
from auren.neuros.metrics import NeurosMetrics


class CountingStore(SQLiteStore):
    counts = 0

    async def count_events(self, user_id: str | None = None) -> int:
        self.counts += 1
        return await super().count_events(user_id)


async def _hrv(store: SQLiteStore, user: str, days_ago: int, value: float, key: str) -> None:
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    start = datetime.combine(day, time(5), UTC)
    event = make_event(provider="auren", user_id=user, provider_user_id=user,
                       metric="hrv_rmssd", value=value, unit="ms", start=start,
                       source_record_id=f"{user}-{key}", received_at=datetime.now(UTC))
    await store.write_batch([Delivery("auren", f"{user}-{key}", [event])])


def _latest(answer: dict[str, object]) -> object:
    evidence = answer["evidence"]
    assert isinstance(evidence, list)
    return next(e["value"] for e in evidence if e["statistic"] == "nightly value")


async def test_a_cached_turn_skips_the_count_until_an_event_arrives(tmp_path: Path) -> None:
    path = tmp_path / "auren.sqlite3"
    events, conversations = CountingStore(path), SQLiteConversations(path)
    await events.open()
    await conversations.open()
    try:
        for days_ago in range(1, 21):
            await _hrv(events, "u", days_ago, 50.0 + days_ago % 3, f"d{days_ago}")
        neuros = Neuros(events, conversations, None, NeurosMetrics(), llm_timeout_s=1.0,
                        history_messages=6)

        async def ask() -> dict[str, object]:
            return (await neuros.answer("u", "What's my HRV like?", None, UTC)).as_dict()

        first = await ask()
        assert events.counts == 1
        assert (await ask())["evidence"] == first["evidence"]
        assert events.counts == 1  # nothing was added anywhere: no count, no read

        await _hrv(events, "someone-else", 0, 80.0, "x")
        assert (await ask())["evidence"] == first["evidence"]
        assert events.counts == 2  # an event arrived: counted again, u's entries still valid

        await _hrv(events, "u", 0, 71.0, "today")
        assert _latest(first) != 71 and _latest(await ask()) == 71
        assert events.counts == 3
    finally:
        await conversations.close()
        await events.close()


async def test_insights_are_computed_once_per_data_and_shared_by_intents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "auren.sqlite3"
    events, conversations = SQLiteStore(path), SQLiteConversations(path)
    await events.open()
    await conversations.open()
    calls: list[str] = []
    real_hrv = engine.hrv

    def counted_hrv(series: engine.Series, today: date) -> engine.HrvInsight:
        calls.append("hrv")
        return real_hrv(series, today)

    monkeypatch.setattr(engine, "hrv", counted_hrv)
    try:
        for days_ago in range(1, 21):
            await _hrv(events, "u", days_ago, 50.0 + days_ago % 3, f"d{days_ago}")
        neuros = Neuros(events, conversations, None, NeurosMetrics(), llm_timeout_s=1.0,
                        history_messages=6)

        async def ask(question: str) -> dict[str, object]:
            return (await neuros.answer("u", question, None, UTC)).as_dict()

        hrv = await ask("What's my HRV like?")
        ready = await ask("How ready am I today?")
        assert calls == ["hrv"]  # readiness reused the HRV insight
        assert await ask("What's my HRV like?") == {**hrv, "conversation_id": ANY}
        assert await ask("How ready am I today?") == {**ready, "conversation_id": ANY}
        assert calls == ["hrv"]

        await _hrv(events, "u", 0, 71.0, "today")
        assert _latest(await ask("What's my HRV like?")) == 71
        assert calls == ["hrv", "hrv"]
        neuros.cache.forget("u")  # erasure drops the remembered insights too
        await ask("What's my HRV like?")
        assert calls == ["hrv", "hrv", "hrv"]
    finally:
        await conversations.close()
        await events.close()
