from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from auren.adapters.base import EventQuery
from auren.adapters.sqlite import SQLiteStore
from auren.errors import StoreUnavailable
from auren.events import FetchJob, fetch_job_id, make_event
from auren.providers.base import Delivery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delivery(key: str, user: str, days: range, *, jobs: int = 0) -> Delivery:
    events = [make_event(provider="auren", user_id=user, provider_user_id=user,
                         metric="hrv_rmssd", value=40 + d, unit="ms",
                         start=T0 + timedelta(days=d), source_record_id=f"{user}-{d}",
                         received_at=T0) for d in days]
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


async def test_group_write_reports_per_delivery_results(store):
    results = await store.write_batch([
        delivery("a", "u1", range(3), jobs=2),
        delivery("b", "u1", range(2, 5)),  # day 2 overlaps delivery a
        delivery("a", "u1", range(3)),  # the same delivery again in the same batch
    ])
    assert [(r.accepted, r.duplicates, r.duplicate_delivery) for r in results] == [
        (5, 0, False), (2, 1, False), (0, 3, True)]
    assert await store.count_events() == 5
    assert await store.count_events("u1") == 5
    assert await store.count_fetch_jobs() == 2


async def test_query_orders_filters_and_pages(store):
    await store.write_batch([delivery("a", "u1", range(10)), delivery("b", "u2", range(4))])
    everything = await store.query_events(EventQuery(user_id="u1", limit=100))
    assert [e.value for e in everything] == [40 + d for d in range(10)]
    first = await store.query_events(EventQuery(user_id="u1", limit=4))
    rest = await store.query_events(EventQuery(user_id="u1", limit=100,
                                               after=(first[-1].start, first[-1].event_id)))
    assert [e.event_id for e in first + rest] == [e.event_id for e in everything]
    window = await store.query_events(EventQuery(user_id="u1", since=T0 + timedelta(days=2),
                                                 until=T0 + timedelta(days=4)))
    assert [e.start for e in window] == [T0 + timedelta(days=2), T0 + timedelta(days=3)]
    assert await store.query_events(EventQuery(user_id="u1", metric="steps")) == []


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


async def test_ping_reports_a_round_trip(store):
    facts = await store.ping()
    assert facts["engine"] == "sqlite"
    assert facts["responseTime_ms"] >= 0
