"""SQLite-only behaviour; what every store must do is in test_store_contract.py, run on both."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from auren.adapters.sqlite import SQLiteStore
from auren.errors import StoreUnavailable
from auren.events import FetchJob, fetch_job_id, make_event
from auren.providers.base import Delivery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delivery(key: str, user: str, days: range, *, jobs: int = 0) -> Delivery:
    events = [make_event(provider="auren", user_id=user, provider_user_id=user,
                         metric="hrv_rmssd", value=40 + d, unit="ms",
                         start=T0 + timedelta(days=d), source_record_id=f"{user}-{d}",
                         received_at=T0 + timedelta(days=d)) for d in days]
    fetch = [FetchJob(job_id=fetch_job_id("oura", key, n), provider="oura", user_id=user,
                      provider_user_id=user, kind="sleep", object_id=str(n),
                      params={"n": n}) for n in range(jobs)]
    return Delivery(provider="auren", delivery_key=key, events=events, fetch_jobs=fetch)


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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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
