"""PostgreSQL specifics: migrations, partitions, failure mapping. (The behaviour every store
shares is in ``test_store_contract.py``.) Each test gets a fresh database on the real server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from auren.adapters.base import EventQuery
from auren.adapters.breaker import CircuitBreaker, CircuitOpen
from auren.adapters.postgres import MIGRATIONS, PostgresStore, partition_name, upgrade
from auren.adapters.wire import record_of
from auren.errors import MalformedPayload, StoreUnavailable
from auren.events import Delivery, make_event
from tests.helpers import delivery


@pytest.fixture
def database(full_stack) -> str:
    return full_stack.new_database()


@pytest.fixture
async def store(database):
    s = PostgresStore(database, months_back=2, months_ahead=2)
    await s.open()
    yield s
    await s.close()


async def _fetch(url: str, sql: str, *args):
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(sql, *args, timeout=10)
    finally:
        await conn.close(timeout=10)


def _event_at(start: datetime, record: str) -> Delivery:
    event = make_event(provider="auren", user_id="p", provider_user_id="p", metric="weight",
                       value=70, unit="kg", start=start, source_record_id=record,
                       received_at=start)
    return Delivery(provider="auren", delivery_key=record, events=[event])


@pytest.mark.slow
async def test_migrations_are_versioned_per_component_and_idempotent(database):
    for _ in range(2):
        s = PostgresStore(database)
        await s.open()
        assert s.schema is not None and s.schema.version == len(MIGRATIONS)
        await s.close()
    rows = await _fetch(database, "SELECT component, version FROM schema_migrations")
    assert [tuple(r) for r in rows] == [("events", len(MIGRATIONS))]
    # TimescaleDB is not installed on this machine: native partitions, recorded as such.
    (meta,) = await _fetch(database, "SELECT value FROM auren_meta "
                                     "WHERE key = 'events_partitioning'")
    assert meta[0] == "native"


@pytest.mark.slow
async def test_concurrent_starts_migrate_once(database):
    stores = [PostgresStore(database) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert sorted(s.schema.applied for s in stores if s.schema) == [0, 0, 0, len(MIGRATIONS)]
    for s in stores:
        await s.close()


@pytest.mark.slow
async def test_monthly_partitions_around_now_plus_a_default(store, database):
    now = datetime.now(UTC)
    rows = await _fetch(database, "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
                                  "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                  "WHERE i.inhparent = 'biometric_events'::regclass")
    bounds = {r[0]: r[1] for r in rows}
    assert bounds.pop("biometric_events_default") == "DEFAULT"
    assert len(bounds) == 5  # two months back, this one, two ahead
    this_month = datetime(now.year, now.month, 1, tzinfo=UTC)
    assert partition_name(this_month) in bounds
    # The unique key includes the partition column, as PostgreSQL requires.
    (key,) = await _fetch(database, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                    "WHERE conname = 'biometric_events_event_key'")
    assert key[0] == "UNIQUE (event_id, start)"


@pytest.mark.slow
async def test_no_row_is_refused_and_a_new_partition_takes_its_rows(store, database):
    far = datetime(2031, 5, 17, 8, 0, tzinfo=UTC)
    results = await store.write_batch([_event_at(far, "far-1"), _event_at(far, "far-2")])
    assert [r.accepted for r in results] == [1, 1]
    (where,) = await _fetch(database, "SELECT tableoid::regclass::text FROM biometric_events "
                                      "GROUP BY 1")
    assert where[0] == "biometric_events_default"
    created = await store.ensure_partitions(now=far)
    assert partition_name(datetime(2031, 5, 1, tzinfo=UTC)) in created
    (where,) = await _fetch(database, "SELECT tableoid::regclass::text FROM biometric_events "
                                      "GROUP BY 1")
    assert where[0] == "biometric_events_y2031m05"
    # Still exactly once, and still deduplicated in its new home.
    assert [r.duplicate_delivery for r in await store.write_batch([_event_at(far, "far-1")])] \
        == [True]
    again = _event_at(far, "far-1")
    again.delivery_key = "another-delivery"
    assert [(r.accepted, r.duplicates) for r in await store.write_batch([again])] == [(0, 1)]
    assert await store.count_events("p") == 2
    assert await store.ensure_partitions(now=far) == ()


@pytest.mark.slow
async def test_the_sink_path_writes_records_without_results(store):
    records = [record_of(delivery(f"k{i}", "s", range(i, i + 3), jobs=1)) for i in range(5)]
    assert await store.write_records(records, results=False) == []
    assert await store.write_records(records, results=False) == []
    assert await store.count_events("s") == 7
    assert await store.count_fetch_jobs() == 5


@pytest.mark.slow
async def test_a_malformed_cursor_is_a_client_error(store):
    with pytest.raises(MalformedPayload):
        await store.query_events(EventQuery(user_id="u", after=(datetime.now(UTC), "zzz")))


@pytest.mark.slow
async def test_a_newer_schema_is_refused(database, store):
    await _fetch(database, "UPDATE schema_migrations SET version = 99 WHERE component = 'events'")
    conn = await asyncpg.connect(database, timeout=10)
    try:
        with pytest.raises(StoreUnavailable, match="newer"):
            await upgrade(conn)
    finally:
        await conn.close(timeout=10)


@pytest.mark.slow
async def test_an_unreachable_server_is_store_unavailable_within_the_timeout(full_stack):
    url = full_stack.new_database()
    port = full_stack.cfg.postgres_port
    dead = url.replace(f":{port}/", ":1/")
    s = PostgresStore(dead, timeout_s=2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(StoreUnavailable):
        await s.open()
    assert asyncio.get_running_loop().time() - started < 10


@pytest.mark.slow
async def test_failures_feed_the_breaker_and_an_open_breaker_refuses_fast(database):
    breaker = CircuitBreaker("postgres", min_calls=2, open_s=60)
    s = PostgresStore(database, breaker=breaker)
    await s.open()
    try:
        await _fetch(database, "DROP TABLE fetch_jobs")
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await s.count_fetch_jobs()
        assert breaker.state == "open"
        with pytest.raises(CircuitOpen):
            await s.count_events()
    finally:
        await s.close()


@pytest.mark.slow
async def test_reads_survive_connections_closed_by_the_server(store, database):
    await store.write_batch([delivery("r", "r", range(2))])
    await _fetch(database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'auren' AND pid <> pg_backend_pid()")
    await asyncio.sleep(0.2)
    assert await store.count_events("r") == 2


def test_the_window_of_partitions_wraps_years():
    assert partition_name(datetime(2026, 12, 3, tzinfo=UTC) + timedelta(days=40)) == \
        "biometric_events_y2027m01"


class _RecordingConnection:
    """Just enough of an asyncpg connection to run the first migration and record its SQL:
    TimescaleDB is not installed here, so its branch is checked by what it would execute."""

    def __init__(self, timescale: bool) -> None:
        self.timescale = timescale
        self.sql: list[str] = []

    async def execute(self, sql: str, *args: object) -> str:
        self.sql.append(sql)
        if "CREATE EXTENSION" in sql and not self.timescale:
            raise asyncpg.exceptions.FeatureNotSupportedError(
                'extension "timescaledb" is not available')
        return "OK"

    def transaction(self):
        connection = self

        class _Savepoint:
            async def __aenter__(self) -> None:
                connection.sql.append("SAVEPOINT")

            async def __aexit__(self, *exc: object) -> bool:
                connection.sql.append("ROLLBACK TO SAVEPOINT" if exc[0] else "RELEASE")
                return False

        return _Savepoint()


@pytest.mark.parametrize("timescale", [True, False])
async def test_the_first_migration_takes_timescale_when_the_extension_works(timescale):
    from auren.adapters.postgres import _migration_1

    conn = _RecordingConnection(timescale)
    await _migration_1(conn)
    script = "\n".join(conn.sql)
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb" in script
    assert "UNIQUE (event_id, start)" in script
    assert "biometric_events_user_metric_start" in script
    if timescale:
        assert "create_hypertable('biometric_events', 'start'" in script
        assert "PARTITION BY" not in script
    else:
        assert "ROLLBACK TO SAVEPOINT" in script, "the failed attempt must not abort the migration"
        assert "PARTITION BY RANGE (start)" in script
        assert "PARTITION OF biometric_events DEFAULT" in script
        assert "create_hypertable" not in script
