"""Retention and the raw payload archive in the real stores: SQLite in a file, PostgreSQL on the
real server (fresh database per test). Oracle: the event ids written, each placed on a known
side of the cutoff; exactly those before it go, nothing at or after it does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from auren.adapters.base import ArchiveQuery, EventQuery
from auren.adapters.memory import MemoryStore
from auren.adapters.postgres import PostgresStore, partition_name
from auren.adapters.sqlite import SQLiteStore
from auren.events import Delivery, RawPayload, iso, make_event

NOW = datetime.now(UTC).replace(microsecond=0)
CUTOFF = NOW - timedelta(days=40)


def _event(start: datetime, record: str, user: str = "ret-u") -> Delivery:
    event = make_event(provider="auren", user_id=user, provider_user_id=user, metric="weight",
                       value=70, unit="kg", start=start, source_record_id=record,
                       received_at=max(start, NOW))
    return Delivery(provider="auren", delivery_key=f"d-{record}", events=[event])


def _dataset() -> tuple[list[Delivery], set[str], set[str]]:
    """Deliveries (one event each), the ids that must go and the ids that must stay."""
    old = {
        "five-years": NOW - timedelta(days=5 * 365),  # the default partition
        "three-months": NOW - timedelta(days=92),  # a partition wholly before the cutoff
        "two-months": NOW - timedelta(days=62),
        "just-before": CUTOFF - timedelta(microseconds=1),  # the boundary partition
        "day-before": CUTOFF - timedelta(days=1),
    }
    new = {
        "at-cutoff": CUTOFF,  # not older than the cutoff: kept
        "day-after": CUTOFF + timedelta(days=1),
        "yesterday": NOW - timedelta(days=1),
        "tomorrow": NOW + timedelta(days=1),
    }
    deliveries = [_event(start, name) for name, start in {**old, **new}.items()]
    ids = {d.delivery_key[2:]: d.events[0].event_id for d in deliveries}
    return deliveries, {ids[n] for n in old}, {ids[n] for n in new}


def _raw(key: str, received: datetime, users: tuple[str, ...]) -> Delivery:
    raw = RawPayload("auren", key, iso(received), users, f"sealed-{key}")
    return Delivery(provider="auren", delivery_key=key, raw=raw)


async def _all_ids_sqlite(store: SQLiteStore) -> set[str]:
    rows = await store._read(lambda c: c.execute("SELECT event_id FROM biometric_events")
                             .fetchall())
    return {r[0] for r in rows}


async def test_sqlite_retention_removes_exactly_the_old_events_in_bounded_steps(tmp_path):
    store = SQLiteStore(tmp_path / "auren.sqlite3")
    await store.open()
    try:
        deliveries, old, new = _dataset()
        # Written one delivery at a time, interleaved, so old and new rows alternate in rowid
        # order and a step of 2 rows meets both.
        for d in deliveries:
            await store.write_batch([d])
        assert await store.delete_events_before(CUTOFF, batch_rows=2) == len(old)
        assert await _all_ids_sqlite(store) == new
        # Nothing older is left: a second run deletes nothing.
        assert await store.delete_events_before(CUTOFF, batch_rows=2) == 0
        assert await _all_ids_sqlite(store) == new
    finally:
        await store.close()


async def test_the_twin_removes_exactly_the_old_events():
    store = MemoryStore()
    await store.open()
    deliveries, old, new = _dataset()
    await store.write_batch(deliveries)
    assert await store.delete_events_before(CUTOFF) == len(old)
    found = await store.query_events(EventQuery(user_id="ret-u", limit=1000))
    assert {e.event_id for e in found} == new


async def test_sqlite_retention_stops_between_steps_and_the_next_run_goes_on(tmp_path):
    # Shutdown sets the stop event: the step in progress finishes, no other starts.
    store = SQLiteStore(tmp_path / "auren.sqlite3")
    await store.open()
    try:
        deliveries, old, new = _dataset()
        for d in deliveries:
            await store.write_batch([d])
        stop = asyncio.Event()
        stop.set()
        first = await store.delete_events_before(CUTOFF, batch_rows=2, stop=stop)
        assert first == 2  # the first two rows in rowid order are old
        assert len(await _all_ids_sqlite(store)) == len(old) + len(new) - first
        assert await store.delete_events_before(CUTOFF, batch_rows=2) == len(old) - first
        assert await _all_ids_sqlite(store) == new
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_archive_expires_and_is_erased_per_person(tmp_path, kind):
    store = SQLiteStore(tmp_path / "auren.sqlite3") if kind == "sqlite" else MemoryStore()
    await store.open()
    try:
        await store.write_batch([
            _raw("old-a", NOW - timedelta(days=31), ("a",)),
            _raw("new-a", NOW - timedelta(days=1), ("a",)),
            _raw("new-b", NOW - timedelta(days=1), ("b",)),
            _raw("new-ab", NOW - timedelta(days=1), ("b", "a")),  # a batch naming both
        ])
        everything = ArchiveQuery(since=NOW - timedelta(days=365))
        keys = [raw.delivery_key for _, raw in await store.archived(everything)]
        assert keys == ["old-a", "new-a", "new-b", "new-ab"]
        assert await store.delete_archive_before(NOW - timedelta(days=30), batch_rows=1) == 1
        found = await store.archived(ArchiveQuery(since=NOW - timedelta(days=365), user_id="a"))
        assert [raw.delivery_key for _, raw in found] == ["new-a", "new-ab"]
        assert await store.erase_archive("a") == 2
        left = await store.archived(everything)
        assert [(raw.delivery_key, raw.user_ids) for _, raw in left] == [("new-b", ("b",))]
        # Paging: the cursor of the last row is the next page's start.
        cursor = left[-1][0]
        assert await store.archived(ArchiveQuery(since=everything.since, after=cursor)) == []
    finally:
        await store.close()


# --- PostgreSQL ----------------------------------------------------------------------------


async def _pg(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args, timeout=10))
    finally:
        await conn.close(timeout=10)


async def _partitions(url: str) -> set[str]:
    rows = await _pg(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                          "ON c.oid = i.inhrelid WHERE i.inhparent = 'biometric_events'::regclass")
    return {r[0] for r in rows}


def _month(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.slow
async def test_postgres_retention_drops_whole_partitions_and_deletes_only_at_the_boundary(
        full_stack):
    url = full_stack.new_database()
    store = PostgresStore(url, months_back=4, months_ahead=1)
    await store.open()
    try:
        deliveries, old, new = _dataset()
        await store.write_batch(deliveries)
        before = await _partitions(url)
        boundary = partition_name(_month(CUTOFF))
        wholly_old = {name for name in before if name.startswith("biometric_events_y")
                      and name < boundary}
        assert len(wholly_old) >= 2, before  # months 3 and 4 back at least
        # One month was detached by a run that crashed before dropping it: a table of its
        # own now, with its rows, which the next run counts and drops.
        interrupted = partition_name(_month(NOW - timedelta(days=92)))
        assert interrupted in wholly_old
        await _pg(url, f"ALTER TABLE biometric_events DETACH PARTITION {interrupted}")
        assert await store.delete_events_before(CUTOFF, batch_rows=2) == len(old)
        rows = await _pg(url, "SELECT event_id::text FROM biometric_events")
        assert {r[0] for r in rows} == new
        after = await _partitions(url)
        # The months wholly before the cutoff are gone as tables; the boundary month, the
        # newer ones and the default partition stay.
        assert after == before - wholly_old
        tables = {r[0] for r in await _pg(url, "SELECT relname FROM pg_class "
                                               "WHERE relname LIKE 'biometric_events_y%'")}
        assert not tables & wholly_old  # dropped, not only detached
        assert boundary in after and "biometric_events_default" in after
        assert await store.delete_events_before(CUTOFF) == 0
        # Partition maintenance does not make the dropped months again.
        store_again = PostgresStore(url, months_back=4, months_ahead=1,
                                    retention_days=40)
        await store_again.open()
        await store_again.close()
        assert await _partitions(url) == after
    finally:
        await store.close()


@pytest.mark.slow
async def test_postgres_archive_expires_and_is_erased_per_person(full_stack):
    url = full_stack.new_database()
    store = PostgresStore(url)
    await store.open()
    try:
        await store.write_batch([
            _raw("old-a", NOW - timedelta(days=31), ("a",)),
            _raw("new-a", NOW - timedelta(days=1), ("a",)),
            _raw("new-b", NOW - timedelta(days=1), ("b",)),
            _raw("new-ab", NOW - timedelta(days=1), ("b", "a")),
        ])
        everything = ArchiveQuery(since=NOW - timedelta(days=365))
        keys = [raw.delivery_key for _, raw in await store.archived(everything)]
        assert keys == ["old-a", "new-a", "new-b", "new-ab"]
        assert await store.delete_archive_before(NOW - timedelta(days=30), batch_rows=1) == 1
        found = await store.archived(ArchiveQuery(since=everything.since, user_id="a"))
        assert [raw.delivery_key for _, raw in found] == ["new-a", "new-ab"]
        assert await store.erase_archive("a") == 2
        left = await store.archived(everything)
        assert [(raw.delivery_key, raw.user_ids, raw.sealed) for _, raw in left] == [
            ("new-b", ("b",), "sealed-new-b")]
        assert [r[0] for r in await _pg(url, "SELECT delivery_key FROM raw_payloads")] == [
            "new-b"]
    finally:
        await store.close()
