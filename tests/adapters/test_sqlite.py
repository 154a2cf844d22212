"""SQLite-only behaviour; what every store must do is in test_store_contract.py, run on both."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from auren.adapters.sqlite import MIGRATIONS, SQLiteStore
from auren.errors import StoreUnavailable
from tests.helpers import delivery


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "db" / "auren.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_migrations_are_recorded_and_idempotent(tmp_path):
    path = tmp_path / "auren.sqlite3"
    for _ in range(2):
        s = SQLiteStore(path)
        await s.open()
        await s.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_version_1_file_keeps_its_events_as_pushed(tmp_path):
    # A database written before provenance existed: its events read back as pushed, and new
    # events carry what they are.
    path = tmp_path / "auren.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in filter(str.strip, MIGRATIONS[0].split(";")):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO biometric_events VALUES ('e1', 'u', 'auren', 'u', 'steps', "
                     "1.0, '{steps}', '2026-01-01T00:00:00.000000Z', NULL, 'r', "
                     "'2026-01-01T00:00:00.000000Z')")
    store = SQLiteStore(path)
    await store.open()
    try:
        from auren.adapters.base import EventQuery

        (old,) = await store.query_events(EventQuery(user_id="u"))
        assert (old.provenance, old.fetched_at) == ("push", None)
    finally:
        await store.close()


async def test_a_failed_write_commits_nothing_and_raises_store_unavailable(store, tmp_path):
    await store.write_batch([delivery("a", "u1", range(2))])
    # Break the schema under the store, as a corrupt or foreign database would.
    with sqlite3.connect(tmp_path / "db" / "auren.sqlite3") as conn:
        conn.execute("DROP TABLE fetch_jobs")
    with pytest.raises(StoreUnavailable):
        await store.write_batch([delivery("c", "u3", range(3), jobs=1)])
    # The delivery row and events of the failed batch were rolled back with it.
    assert await store.count_events("u3") == 0
    with sqlite3.connect(tmp_path / "db" / "auren.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM deliveries WHERE delivery_key = 'c'"
                            ).fetchone()[0] == 0


async def test_concurrent_direct_writers_are_serialized(store):
    # A transaction spans the await for its COMMIT; writers that bypass the group committer
    # (the legacy bridge) must each get their own.
    results = await asyncio.gather(*(store.write_batch([delivery(f"w{i}", "u", range(i, i + 3))])
                                     for i in range(20)))
    assert sum(r.accepted + r.duplicates for (r,) in results) == 60
    assert await store.count_events("u") == 22  # days 0..21, overlapping deliveries


async def test_the_marker_moves_with_every_committed_event(store):
    assert store.events_marker() == 0
    await store.write_batch([delivery("m1", "u", range(3))])
    first = store.events_marker()
    assert first is not None and first >= 3
    await store.write_batch([delivery("m1", "u", range(3))])  # a retry adds nothing
    assert store.events_marker() == first
    await store.write_batch([delivery("m2", "u", range(3, 4))])
    assert (store.events_marker() or 0) > first


async def test_an_empty_batch_writes_nothing_and_leaves_no_transaction_open(store):
    assert await store.write_batch([]) == []
    (result,) = await store.write_batch([delivery("after-empty", "u", range(2))])
    assert result.accepted == 2
