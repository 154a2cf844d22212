"""The stores' own erasure methods on real SQLite files: only the person's rows go, the
events marker NEUROS trusts moves, the erasure records survive a reopen and are claimed once
per lease; Redis keys are matched by whole parts only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auren.adapters.redis_cache import _names
from auren.adapters.sqlite import SQLiteStore
from auren.erasure.store import Erasure, SQLiteErasures, StepState
from tests.helpers import delivery

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_erasing_events_and_jobs_touches_nobody_else_and_moves_the_marker(tmp_path):
    store = SQLiteStore(tmp_path / "a.sqlite3")
    await store.open()
    try:
        await store.write_batch([delivery("d1", "ana", range(3), jobs=2),
                                 delivery("d2", "ben", range(4), jobs=1)])
        marker = store.events_marker()
        assert await store.erase_events("ana") == 3
        assert store.events_marker() != marker  # ben's rows are the newest: rowids unchanged
        assert await store.erase_jobs("ana", [("oura", "nobody")]) == 2
        assert await store.count_events("ana") == 0 and await store.count_events("ben") == 4
        assert await store.count_fetch_jobs() == 1
        assert await store.erase_events("ana") == 0  # idempotent
        assert await store.scrub_files()
        assert store.wal.wal_bytes() == 0
        data = (tmp_path / "a.sqlite3").read_bytes()
        assert b"ana-1" not in data and b"ben-1" in data
    finally:
        await store.close()


def _erasure(erasure_id: str, pseudonym: str) -> Erasure:
    at = NOW.isoformat()
    return Erasure(erasure_id, pseudonym, "sealed", "pending", [StepState("events")], at, at)


async def test_erasure_records_are_durable_unique_per_person_and_leased(tmp_path):
    path = tmp_path / "a.sqlite3"
    store = SQLiteErasures(path)
    await store.open()
    try:
        made, created = await store.create(_erasure("er_1", "p-ana"))
        assert created and made.erasure_id == "er_1"
        same, created = await store.create(_erasure("er_2", "p-ana"))
        assert not created and same.erasure_id == "er_1"
        until = NOW + timedelta(seconds=30)
        assert [e.erasure_id for e in await store.claim("me", NOW, until)] == ["er_1"]
        assert await store.claim("other", NOW + timedelta(seconds=29), until) == []
        await store.add_to_ledger(["d1", "d2", "d1"], NOW)
        assert await store.ledger_since(0) == (["d1", "d2"], 2)
        assert await store.ledger_since(2) == ([], 2)
    finally:
        await store.close()
    reopened = SQLiteErasures(path)
    await reopened.open()
    try:
        found = await reopened.get("er_1")
        assert found is not None and found.lease_owner == "me"
        later = NOW + timedelta(seconds=31)
        claimed = await reopened.claim("next", later, later + timedelta(seconds=30))
        assert [e.lease_owner for e in claimed] == ["next"]
    finally:
        await reopened.close()


def test_redis_keys_name_a_person_only_as_a_whole_part():
    assert _names(b"auren:summary:ana", "auren:", "ana")
    assert _names(b"auren:window:oura:user:ana:3600:7", "auren:", "ana")
    assert not _names(b"auren:summary:anabel", "auren:", "ana")
    assert not _names(b"auren:summary:b-ana", "auren:", "ana")
    assert _names(b"auren:summary:garmin:12", "auren:", "garmin:12")
