"""The ``EventStore`` contract, run against every implementation: SQLite (embedded),
PostgreSQL (full stack, a fresh database on the real server per test) and the in-memory twin
the in-process tests use.

Same writes, same assertions: per-delivery results of a group write, deduplication by event id
and by delivery key, and keyset pagination whose pages concatenate to the full ordered result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auren.adapters.base import EventQuery, EventStore
from auren.adapters.memory import MemoryStore
from auren.adapters.postgres import PostgresStore
from auren.adapters.sqlite import SQLiteStore
from auren.events import Delivery, FetchJob, fetch_job_id, make_event
from tests.helpers import delivery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.slow)])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[EventStore]:
    s: EventStore
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "auren.sqlite3")
    elif request.param == "memory":
        s = MemoryStore()
    else:
        s = PostgresStore(request.getfixturevalue("full_stack").new_database())
    await s.open()
    yield s
    await s.close()


def _same_start(key: str, user: str, n: int) -> Delivery:
    """``n`` events with one start time: pages must break the tie by event id."""
    events = [make_event(provider="auren", user_id=user, provider_user_id=user,
                         metric="steps", value=100 + i, unit="{steps}", start=T0,
                         end=T0 + timedelta(hours=1), source_record_id=f"{key}-{i}",
                         received_at=T0) for i in range(n)]
    return Delivery(provider="auren", delivery_key=key, events=events)


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


async def test_later_batches_see_earlier_ones(store):
    await store.write_batch([delivery("a", "u1", range(3))])
    results = await store.write_batch([
        delivery("a", "u1", range(3)),  # a provider retry of a stored delivery
        delivery("c", "u1", range(1, 4)),  # two of three events already stored
        delivery("d", "u2", range(0)),  # nothing in it at all
    ])
    assert [(r.accepted, r.duplicates, r.duplicate_delivery) for r in results] == [
        (0, 3, True), (1, 2, False), (0, 0, False)]
    assert await store.count_events() == 4


async def test_an_event_repeated_inside_one_delivery_is_stored_once(store):
    twice = delivery("x", "u1", range(2))
    twice.events.append(twice.events[0])
    job = FetchJob(job_id=fetch_job_id("oura", "j"), provider="oura", user_id="u1",
                   provider_user_id="u1", kind="sleep", object_id=None, params={"a": [1, "b"]},
                   received_at=T0)
    twice.fetch_jobs += [job, job]
    (result,) = await store.write_batch([twice])
    assert (result.accepted, result.duplicates) == (3, 2)
    assert await store.count_fetch_jobs() == 1


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
    assert await store.query_events(EventQuery(user_id="nobody")) == []


async def test_keyset_pages_break_ties_by_event_id(store):
    await store.write_batch([_same_start("tie", "u3", 25), delivery("o", "u3", range(3))])
    everything = await store.query_events(EventQuery(user_id="u3", limit=1000))
    assert len(everything) == 28
    keys = [(e.start, e.event_id) for e in everything]
    assert keys == sorted(keys)
    pages: list[Any] = []
    after = None
    while True:
        page = await store.query_events(EventQuery(user_id="u3", limit=4, after=after))
        pages += page
        if len(page) < 4:
            break
        after = (page[-1].start, page[-1].event_id)
    assert [e.event_id for e in pages] == [e.event_id for e in everything]
    steps = await store.query_events(EventQuery(user_id="u3", metric="steps", limit=1000))
    assert [e.event_id for e in steps] == sorted(e.event_id for e in steps)
    assert len(steps) == 25


async def test_events_round_trip_every_field(store):
    source = _same_start("rt", "ü-ser/1", 1).events[0]
    await store.write_batch([Delivery(provider="auren", delivery_key="rt", events=[source])])
    (stored,) = await store.query_events(EventQuery(user_id="ü-ser/1"))
    assert stored.as_dict() == source.as_dict()
    assert stored.start.tzinfo is not None


async def test_provenance_and_fetch_time_round_trip(store):
    fetched = T0 + timedelta(days=2, seconds=5)
    source = make_event(provider="oura", user_id="prov-u", provider_user_id="o1",
                        metric="hrv_rmssd", value=61, unit="ms", start=T0, end=T0 + timedelta(
                            hours=8), source_record_id="doc", received_at=fetched,
                        provenance="backfill", fetched_at=fetched)
    await store.write_batch([Delivery(provider="oura", delivery_key="pr", events=[source])])
    (stored,) = await store.query_events(EventQuery(user_id="prov-u"))
    assert stored.as_dict() == source.as_dict()
    assert (stored.provenance, stored.fetched_at) == ("backfill", fetched)


async def test_coverage_counts_days_per_source_and_metric(store):
    def event(day: int, provider: str, metric: str, *, fetched: bool) -> Any:
        at = T0 + timedelta(days=day, hours=23)
        return make_event(provider=provider, user_id="cov", provider_user_id="p",
                          metric=metric, value=50 + day, unit="ms" if metric == "hrv_rmssd"
                          else "{steps}", start=at, source_record_id=f"{provider}{day}",
                          received_at=at + timedelta(hours=2),
                          provenance="fetch" if fetched else "push",
                          fetched_at=at + timedelta(hours=2) if fetched else None)

    events = [event(d, "oura", "hrv_rmssd", fetched=True) for d in (0, 1, 3)]
    events += [event(d, "garmin", "steps", fetched=False) for d in (1, 2)]
    events.append(event(9, "oura", "hrv_rmssd", fetched=True))  # a later day
    await store.write_batch([Delivery(provider="oura", delivery_key="cov", events=events)])
    found = await store.coverage("cov", T0 - timedelta(days=1))
    by_key = {(c.provider, c.metric, c.day.isoformat()): c for c in found}
    assert sorted(by_key) == [("garmin", "steps", "2026-01-02"), ("garmin", "steps", "2026-01-03"),
                              ("oura", "hrv_rmssd", "2026-01-01"),
                              ("oura", "hrv_rmssd", "2026-01-02"),
                              ("oura", "hrv_rmssd", "2026-01-04"),
                              ("oura", "hrv_rmssd", "2026-01-10")]
    last = by_key[("oura", "hrv_rmssd", "2026-01-04")]
    assert last.events == 1
    assert last.last_start == T0 + timedelta(days=3, hours=23)
    assert last.last_fetched == last.last_received == T0 + timedelta(days=4, hours=1)
    assert by_key[("garmin", "steps", "2026-01-03")].last_fetched is None
    assert await store.coverage("cov", T0 + timedelta(days=5)) != []
    assert await store.coverage("nobody", T0) == []


async def test_ping_reports_a_round_trip(store):
    facts = await store.ping()
    assert facts["engine"] in ("sqlite", "postgresql", "memory")
    assert facts["responseTime_ms"] >= 0


@pytest.mark.slow
async def test_sqlite_and_postgres_answer_identically(full_stack, tmp_path):
    """The same deliveries into both stores: identical results and identical pages."""
    stores: list[EventStore] = [SQLiteStore(tmp_path / "same.sqlite3"),
                                PostgresStore(full_stack.new_database())]
    answers = []
    for s in stores:
        await s.open()
        try:
            writes = [await s.write_batch([_same_start("t", "u", 7), delivery("a", "u", range(5)),
                                           delivery("a", "u", range(5))]),
                      await s.write_batch([delivery("b", "u", range(3, 9), jobs=1)])]
            pages = []
            for metric in (None, "hrv_rmssd", "steps"):
                after = None
                while True:
                    page = await s.query_events(EventQuery(user_id="u", metric=metric, limit=3,
                                                           after=after,
                                                           since=T0 - timedelta(days=1)))
                    pages.append([e.as_dict() for e in page])
                    if len(page) < 3:
                        break
                    after = (page[-1].start, page[-1].event_id)
            answers.append((writes, pages, await s.count_events(), await s.count_fetch_jobs()))
        finally:
            await s.close()
    assert answers[0] == answers[1]


async def test_batches_larger_than_one_insert_statement_are_exact(store):
    # More deliveries and more events than one multi-row statement holds (256 rows each).
    batch = [delivery(f"many-{i}", f"u{i}", range(2)) for i in range(300)]
    batch.append(delivery("wide", "u-wide", range(600)))
    results = await store.write_batch(batch)
    assert [r.accepted for r in results] == [2] * 300 + [600]
    assert await store.count_events() == 1200
    again = await store.write_batch(batch)
    assert all(r.duplicate_delivery and r.accepted == 0 for r in again)
    assert await store.count_events() == 1200
