"""Full-stack store: PostgreSQL through an asyncpg pool; TimescaleDB when the extension exists.

**Uniqueness under partitioning.** PostgreSQL accepts a unique constraint on a partitioned table
(and TimescaleDB one on a hypertable) only if it contains the partitioning column. The table is
partitioned on ``start``, so the key is ``UNIQUE (event_id, start)``. That is as strict as
``UNIQUE (event_id)``: ``event_id`` is a UUIDv5 over the event's identity *including* ``start``
(see ``auren.events``), so one event id always comes with the same ``start``, lands in the same
partition, and a second copy conflicts there. ``INSERT ... ON CONFLICT (event_id, start) DO
NOTHING`` therefore deduplicates exactly, with no second table of ids to keep in step (the other
design considered: an unpartitioned ``event_ids`` table, one more index insert per event).

**Partitioning.** The first migration tries ``CREATE EXTENSION timescaledb``; if that works the
events table becomes a hypertable (7-day chunks, created by TimescaleDB on demand). Otherwise
it is a native ``PARTITION BY RANGE (start)`` table with monthly partitions created ahead of
time (``postgres_partition_months_back``/``_ahead``, on every start and by ``auren db upgrade``)
plus a DEFAULT partition, so that no row is ever refused: a measurement from years ago or a
device with a wrong clock lands in the default partition. Creating a partition whose range
already has rows in the default partition moves them first (PostgreSQL would refuse otherwise).
Which of the two is in use is recorded in ``auren_meta``.

**Migrations** are versioned per component in ``schema_migrations(component, version)`` (NEUROS
keeps its own row in the same shape), applied in one transaction under an advisory lock, so
that bridge workers, the sink and NEUROS may all start at once.

**Writes** are set-based: one ``INSERT ... SELECT FROM unnest(...)`` per table per batch, with
the times passed as text and cast by the server (no Python datetimes on the hot path). Results
per delivery follow the SQLite store exactly: a delivery key seen before stores nothing (its
items came with the first copy), and an item already stored counts as a duplicate of the first
delivery in the batch that carried it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson

from auren.adapters.base import ArchiveQuery, DayCoverage, EventQuery, WriteResult
from auren.adapters.breaker import CircuitBreaker
from auren.adapters.wire import DeliveryRecord, record_of
from auren.errors import InvalidPayload, MalformedPayload, StoreUnavailable
from auren.events import REPROCESS, CanonicalEvent, Delivery, RawPayload, iso
from auren.settings import Settings

T = TypeVar("T")
log = logging.getLogger("auren.store")

COMPONENT = "events"
# pg_advisory_xact_lock key of every schema change AUREN makes ("AUREN" in ASCII).
MIGRATION_LOCK_KEY = 0x4155_5245_4E
# pg_advisory_xact_lock key of retention's drops ("AURET").
RETENTION_LOCK_KEY = 0x4155_5245_54
_CONNECTION_LOST = (asyncpg.InterfaceError, asyncpg.exceptions.PostgresConnectionError,
                    asyncpg.exceptions.InternalClientError, OSError)

# --- schema --------------------------------------------------------------------------------------

_EVENT_COLUMNS = """
    event_id         uuid NOT NULL,
    user_id          text NOT NULL,
    provider         text NOT NULL,
    provider_user_id text NOT NULL,
    metric           text NOT NULL,
    value            double precision NOT NULL,
    unit             text NOT NULL,
    start            timestamptz NOT NULL,
    "end"            timestamptz,
    source_record_id text,
    received_at      timestamptz NOT NULL,
    CONSTRAINT biometric_events_event_key UNIQUE (event_id, start)
"""

_COMMON_TABLES = """
CREATE TABLE fetch_jobs (
    job_id           text PRIMARY KEY,
    provider         text NOT NULL,
    user_id          text NOT NULL,
    provider_user_id text NOT NULL,
    kind             text NOT NULL,
    object_id        text,
    params           jsonb NOT NULL,
    received_at      timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
);
CREATE TABLE deliveries (
    provider     text NOT NULL,
    delivery_key text NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, delivery_key)
);
"""

# The read API and NEUROS ask for one user's metric over a time range, ordered by (start,
# event_id) for keyset pages: this index answers that without a sort.
_EVENT_INDEX = """
CREATE INDEX biometric_events_user_metric_start
    ON biometric_events (user_id, metric, start, event_id);
"""


async def _timescale_available(conn: Any) -> bool:
    """Try to enable TimescaleDB; any refusal (not installed, not preloaded, no privilege)
    means native partitions. Inside a savepoint so the failure does not abort the migration."""
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:
        log.info("timescaledb unavailable, using native range partitions",
                 extra={"detail": type(exc).__name__})
        return False
    return True


async def _migration_1(conn: Any) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS auren_meta "
                       "(key text PRIMARY KEY, value text NOT NULL)")
    if await _timescale_available(conn):
        await conn.execute(f"CREATE TABLE biometric_events ({_EVENT_COLUMNS})")
        await conn.execute("SELECT create_hypertable('biometric_events', 'start', "
                           "chunk_time_interval => INTERVAL '7 days')")
        mode = "timescale"
    else:
        await conn.execute(f"CREATE TABLE biometric_events ({_EVENT_COLUMNS}) "
                           "PARTITION BY RANGE (start)")
        await conn.execute("CREATE TABLE biometric_events_default "
                           "PARTITION OF biometric_events DEFAULT")
        mode = "native"
    await conn.execute(_EVENT_INDEX)
    await conn.execute(_COMMON_TABLES)
    await conn.execute("INSERT INTO auren_meta (key, value) VALUES ('events_partitioning', $1)",
                       mode)


async def _migration_2(conn: Any) -> None:
    """Each event's provenance and fetch time; the fetcher's state of a job (claimed, retried
    and finished by ``auren.connections.postgres`` in this table). Adding a column with a
    constant default is a catalog change in PostgreSQL 11+ (no rewrite), on every partition
    and on a hypertable alike."""
    await conn.execute(
        "ALTER TABLE biometric_events ADD COLUMN provenance text NOT NULL DEFAULT 'push', "
        "ADD COLUMN fetched_at timestamptz")
    await conn.execute(
        "ALTER TABLE fetch_jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0, "
        "ADD COLUMN rate_waits integer NOT NULL DEFAULT 0, "
        "ADD COLUMN due_at timestamptz, ADD COLUMN lease_until timestamptz, "
        "ADD COLUMN last_error text, ADD COLUMN updated_at timestamptz")
    await conn.execute("CREATE INDEX fetch_jobs_status_due ON fetch_jobs (status, due_at)")


async def _migration_3(conn: Any) -> None:
    """The raw payload archive (ARCHIVE_RAW_PAYLOADS): written by the sink in the transaction
    of its delivery's events; found by receipt time (retention, reprocessing) and by the
    users it names (erasure: a GIN index on the array)."""
    await conn.execute("""
        CREATE TABLE raw_payloads (
            id           bigserial PRIMARY KEY,
            provider     text NOT NULL,
            delivery_key text NOT NULL,
            received_at  timestamptz NOT NULL,
            user_ids     text[] NOT NULL,
            sealed       text NOT NULL,
            UNIQUE (provider, delivery_key)
        )""")
    await conn.execute("CREATE INDEX raw_payloads_received ON raw_payloads (received_at)")
    await conn.execute("CREATE INDEX raw_payloads_users ON raw_payloads USING gin (user_ids)")


MIGRATIONS: tuple[Callable[[Any], Awaitable[None]], ...] = (_migration_1, _migration_2,
                                                            _migration_3)


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    version: int
    applied: int  # migrations applied by this call
    partitioning: str  # "timescale" | "native"
    partitions_created: tuple[str, ...] = ()


async def migrate(conn: Any, component: str,
                  migrations: Sequence[Callable[[Any], Awaitable[Any]]]) -> int:
    """Apply ``component``'s pending ``migrations`` (inside the caller's transaction, under the
    advisory lock every schema change of AUREN takes); returns how many were applied."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "component text PRIMARY KEY, version integer NOT NULL, "
                       "updated_at timestamptz NOT NULL DEFAULT now())")
    current = int(await conn.fetchval(
        "SELECT version FROM schema_migrations WHERE component = $1", component) or 0)
    if current > len(migrations):
        raise StoreUnavailable(f"the database schema ({component} v{current}) is newer "
                               f"than this code (v{len(migrations)})")
    for number, migration in enumerate(migrations[current:], start=current + 1):
        await migration(conn)
        await conn.execute(
            "INSERT INTO schema_migrations (component, version) VALUES ($1, $2) "
            "ON CONFLICT (component) DO UPDATE SET version = $2, updated_at = now()",
            component, number)
    return len(migrations) - current


async def migrate_scripts(conn: Any, component: str, scripts: Sequence[str]) -> int:
    """``component``'s pending SQL ``scripts``, each run whole, in one transaction (see
    :func:`migrate`); returns how many were applied."""

    def step(sql: str) -> Callable[[Any], Awaitable[Any]]:
        return lambda c: c.execute(sql)

    async with conn.transaction():
        return await migrate(conn, component, [step(sql) for sql in scripts])


async def upgrade(conn: Any, *, months_back: int = 12, months_ahead: int = 3,
                  now: datetime | None = None, retention_days: int | None = None
                  ) -> SchemaInfo:
    """Apply the pending migrations, then make sure the partitions around ``now`` exist."""
    async with conn.transaction():
        applied = await migrate(conn, COMPONENT, MIGRATIONS)
        mode = await conn.fetchval(
            "SELECT value FROM auren_meta WHERE key = 'events_partitioning'")
    created: tuple[str, ...] = ()
    if mode == "native":
        created = await ensure_partitions(conn, months_back=months_back,
                                          months_ahead=months_ahead, now=now,
                                          retention_days=retention_days)
    return SchemaInfo(len(MIGRATIONS), applied, str(mode), created)


def _month(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


async def _table_exists(conn: Any, name: str) -> bool:
    # A query on pg_class, not to_regclass(): a statement's fresh snapshot sees a table that
    # another transaction committed while this one waited for the lock; the cached catalog
    # snapshot behind to_regclass() may not.
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 "
        "AND relnamespace = current_schema()::regnamespace)", name))


def partition_name(start: datetime) -> str:
    return f"biometric_events_y{start.year:04d}m{start.month:02d}"


_PARTITION = re.compile(r"biometric_events_y(\d{4})m(\d{2})")
# How long dropping a partition may wait for its lock (it blocks the table's writers while it
# waits); past it the partition is left for the next run.
_DROP_LOCK_TIMEOUT = "5s"


async def _month_partitions(conn: Any) -> list[tuple[str, datetime, datetime]]:
    """The monthly partitions ``ensure_partitions`` made: (name, first instant, end)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'biometric_events'::regclass")
    found = []
    for (name,) in rows:
        match = _PARTITION.fullmatch(name)
        if match:
            low = _month(int(match[1]), int(match[2]))
            found.append((name, low, _month(low.year, low.month + 1)))
    return sorted(found, key=lambda item: item[1])


async def _drop_chunks(conn: Any, cutoff: datetime) -> int:
    """TimescaleDB: drop the chunks that end at or before ``cutoff``; the rows they held."""
    boundary = await conn.fetchval(
        "SELECT max(range_end) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'biometric_events' AND range_end <= $1", cutoff)
    if boundary is None:
        return 0
    async with conn.transaction():
        rows = int(await conn.fetchval(
            "SELECT count(*) FROM biometric_events WHERE start < $1", boundary))
        await conn.execute("SELECT drop_chunks('biometric_events', older_than => $1::timestamptz)",
                           boundary)
    return rows


async def _detach_partition(conn: Any, name: str) -> None:
    """Detach one monthly partition: from then on it is a table of its own, which no insert
    reaches (rows of its month land in the default partition). Short: the detach holds the
    events table's lock until its transaction commits, so nothing else happens in it."""
    async with conn.transaction():
        # The lock ensure_partitions takes: a partition is never made and detached at once.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        is_partition = await conn.fetchval(
            "SELECT relispartition FROM pg_class WHERE relname = $1 "
            "AND relnamespace = current_schema()::regnamespace", name)
        if not is_partition:
            return  # another process detached it first
        await conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_TIMEOUT}'")
        await conn.execute(f"ALTER TABLE biometric_events DETACH PARTITION {name}")


async def _detached_months(conn: Any) -> list[str]:
    """Monthly tables that are no longer partitions: detached by retention (also one whose
    drop a crash interrupted), to be counted and dropped."""
    rows = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
        "AND relname ~ '^biometric_events_y[0-9]{4}m[0-9]{2}$' "
        "AND relnamespace = current_schema()::regnamespace ORDER BY relname")
    return [row[0] for row in rows]


async def _drop_detached(conn: Any, name: str) -> int:
    """Count and drop a detached monthly table; the rows it held (0 if already gone). The
    count takes no lock any writer needs: nothing writes to a detached table."""
    async with conn.transaction():
        # Retention's own lock: of two processes, the second finds the table gone.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RETENTION_LOCK_KEY)
        if name not in await _detached_months(conn):
            return 0
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {name}"))  # noqa: S608
        await conn.execute(f"DROP TABLE {name}")
    return rows


async def ensure_partitions(conn: Any, *, months_back: int = 12, months_ahead: int = 3,
                            now: datetime | None = None,
                            retention_days: int | None = None) -> tuple[str, ...]:
    """Create the monthly partitions from ``months_back`` before ``now`` to ``months_ahead``
    after it that do not exist yet; returns the names created. Rows of such a month already in
    the default partition are moved into the new one in the same transaction. A month that
    ends before the retention cutoff is not created (retention would only drop it again)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days) if retention_days else None
    created = []
    for offset in range(-months_back, months_ahead + 1):
        low = _month(now.year, now.month + offset)
        high = _month(low.year, low.month + 1)
        if cutoff is not None and high <= cutoff:
            continue
        name = partition_name(low)
        if await _table_exists(conn, name):
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            if await _table_exists(conn, name):
                continue  # another process made it while we waited for the lock
            # Inserts routed to the default partition wait for this transaction, so no row of
            # the range can slip in between the move and the new partition's creation.
            await conn.execute("LOCK TABLE biometric_events_default IN ACCESS EXCLUSIVE MODE")
            await conn.execute("CREATE TEMP TABLE auren_moving (LIKE biometric_events) "
                               "ON COMMIT DROP")
            await conn.execute(
                "WITH moved AS (DELETE FROM biometric_events_default "
                "WHERE start >= $1 AND start < $2 RETURNING *) "
                "INSERT INTO auren_moving SELECT * FROM moved", low, high)
            await conn.execute(f"CREATE TABLE {name} PARTITION OF biometric_events "
                               f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')")
            await conn.execute("INSERT INTO biometric_events SELECT * FROM auren_moving")
        created.append(name)
    if created:
        log.info("partitions created", extra={"count": len(created), "detail": created[-1]})
    return tuple(created)


# --- statements ----------------------------------------------------------------------------------

_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (provider, delivery_key, received_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]::timestamptz[]) "
    "ON CONFLICT DO NOTHING RETURNING provider, delivery_key")
_INSERT_EVENTS = (
    'INSERT INTO biometric_events (event_id, user_id, provider, provider_user_id, metric, '
    'value, unit, start, "end", source_record_id, received_at, provenance, fetched_at) '
    "SELECT * FROM unnest($1::text[]::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::float8[], $7::text[], $8::text[]::timestamptz[], $9::text[]::timestamptz[], "
    "$10::text[], $11::text[]::timestamptz[], $12::text[], $13::text[]::timestamptz[]) "
    "ON CONFLICT (event_id, start) DO NOTHING")
_INSERT_JOBS = (
    "INSERT INTO fetch_jobs (job_id, provider, user_id, provider_user_id, kind, object_id, "
    "params, received_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::text[]::jsonb[], $8::text[]::timestamptz[]) "
    "ON CONFLICT (job_id) DO NOTHING")
# A reprocessed event corrects the stored one of the same identity (value, unit, provenance
# "reprocess"); an unchanged one is not written (RETURNING then names only real changes).
_UPSERT_EVENTS = _INSERT_EVENTS.replace(
    "DO NOTHING", "DO UPDATE SET value = EXCLUDED.value, unit = EXCLUDED.unit, "
    "provenance = EXCLUDED.provenance WHERE (biometric_events.value, biometric_events.unit) "
    "IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.unit)")
_INSERT_RAW = (
    "INSERT INTO raw_payloads (provider, delivery_key, received_at, user_ids, sealed) "
    "SELECT p, k, r::timestamptz, ARRAY(SELECT jsonb_array_elements_text(u::jsonb)), s "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS t(p, k, r, u, s) "
    "ON CONFLICT (provider, delivery_key) DO NOTHING")
_SELECT_EVENTS = (
    'SELECT event_id::text, user_id, provider, provider_user_id, metric, value, unit, start, '
    '"end", source_record_id, received_at, provenance, fetched_at FROM biometric_events '
    "WHERE user_id = $1")


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to the per-column lists ``unnest`` takes."""
    return [[row[i] for row in rows] for i in range(width)]


async def erase_rows(pool: PostgresPool, table: str,
                     conditions: Sequence[tuple[str, Sequence[Any]]]) -> int:
    """DELETE the rows of ``table`` matching any condition (one transaction), then VACUUM it
    (outside any transaction, as PostgreSQL requires); the rows deleted. ``table`` is one of
    AUREN's own names, never input."""

    async def run(conn: Any) -> int:
        deleted = 0
        async with conn.transaction():
            for where, args in conditions:
                tag = await conn.execute(f"DELETE FROM {table} WHERE {where}", *args)  # noqa: S608
                deleted += int(tag.rsplit(" ", 1)[-1])
        await conn.execute(f"VACUUM {table}")
        return deleted

    return await pool.run(run)


class PostgresPool:
    """An asyncpg pool with AUREN's rules, shared by every PostgreSQL adapter (the event store,
    NEUROS's conversations): finite timeouts on every call, every failure turned into
    ``StoreUnavailable`` (or ``InvalidPayload`` for data the server refuses), calls through the
    dependency's circuit breaker, and a connection cut off mid-operation never handed out again.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, pool_size: int = 10,
                 breaker: CircuitBreaker | None = None, application_name: str = "auren") -> None:
        self._url = url
        self.timeout_s = timeout_s
        self._pool_size = pool_size
        self.breaker = breaker
        self._application_name = application_name
        self._pool: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, application_name: str = "auren",
                      breaker: CircuitBreaker | None = None) -> PostgresPool:
        if settings.postgres_url is None:
            raise ValueError("POSTGRES_URL is not set")
        return cls(settings.postgres_url.get_secret_value(), timeout_s=settings.store_timeout_s,
                   pool_size=settings.postgres_pool_size, breaker=breaker,
                   application_name=application_name)

    async def open(self, prepare: Callable[[Any], Awaitable[T]]) -> T:
        """Connect, then run ``prepare(conn)`` (the adapter's migrations) on one connection.

        Raises:
            StoreUnavailable: the server could not be reached or ``prepare`` failed.
        """
        try:
            self._pool = await asyncio.wait_for(asyncpg.create_pool(
                self._url, min_size=1, max_size=self._pool_size, timeout=self.timeout_s,
                command_timeout=self.timeout_s, max_inactive_connection_lifetime=300,
                server_settings={"application_name": self._application_name,
                                 "timezone": "UTC"}), self.timeout_s * 2)
            async with self._pool.acquire(timeout=self.timeout_s) as conn:
                return await prepare(conn)
        except (asyncpg.PostgresError, *_CONNECTION_LOST, TimeoutError) as exc:
            await self.close()
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}",
                                   retry_after_s=5) from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.timeout_s)
        except (TimeoutError, *_CONNECTION_LOST, asyncpg.PostgresError):
            pool.terminate()

    async def run(self, fn: Callable[[Any], Awaitable[T]], *, retry: bool = False,
                  guarded_by_breaker: bool = True) -> T:
        """``fn(conn)`` on a pooled connection, through the breaker, with every failure turned
        into StoreUnavailable. ``retry``: a read that met a connection the server had closed
        (it restarted) is tried once more on a fresh one. ``guarded_by_breaker=False``:
        maintenance (retention) that may take long on purpose, which the breaker's slow-call
        and stall rules would otherwise take for a failing database."""
        if self._pool is None:
            raise StoreUnavailable("store is not open")

        async def attempt() -> T:
            async with self._pool.acquire(timeout=self.timeout_s) as conn:
                try:
                    return await fn(conn)
                except asyncpg.PostgresError as exc:
                    if isinstance(exc, asyncpg.exceptions.PostgresConnectionError):
                        conn.terminate()
                    raise  # a server-reported error: the connection itself is fine
                except BaseException:
                    # Cut off mid-operation (server gone, timeout, cancellation): its protocol
                    # state is unknown ("another operation is in progress"), so it is never
                    # handed out again; the pool opens a fresh one.
                    conn.terminate()
                    raise

        async def guarded() -> T:
            try:
                try:
                    return await attempt()
                except _CONNECTION_LOST:
                    if not retry:
                        raise
                    return await attempt()
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                # The data is wrong, not the server: a client error, never a breaker failure.
                raise InvalidPayload(f"PostgreSQL refused the data: {type(exc).__name__}",
                                     ) from exc
            except (asyncpg.PostgresError, *_CONNECTION_LOST, TimeoutError) as exc:
                raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}",
                                       retry_after_s=2) from exc

        if self.breaker is None or not guarded_by_breaker:
            return await guarded()
        return await self.breaker.call(guarded)

    async def ping(self, engine: str = "postgresql") -> dict[str, Any]:
        """``SELECT 1``: the facts every adapter's ``ping`` starts from."""
        started = time.perf_counter()
        await self.run(lambda conn: conn.fetchval("SELECT 1"), retry=True)
        facts: dict[str, Any] = {"engine": engine,
                                 "responseTime_ms": (time.perf_counter() - started) * 1000}
        if self.breaker is not None:
            facts["breaker"] = self.breaker.state
        return facts


class PostgresStore:
    """``EventStore`` (and ``DurableLog``) on PostgreSQL."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, pool_size: int = 10,
                 breaker: CircuitBreaker | None = None, months_back: int = 12,
                 months_ahead: int = 3, application_name: str = "auren",
                 retention_days: int | None = None) -> None:
        self.pool = PostgresPool(url, timeout_s=timeout_s, pool_size=pool_size,
                                 breaker=breaker, application_name=application_name)
        self.breaker = breaker
        self._months = (months_back, months_ahead)
        self._retention_days = retention_days
        self.schema: SchemaInfo | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, application_name: str = "auren",
                      breaker: CircuitBreaker | None = None) -> PostgresStore:
        if settings.postgres_url is None:
            raise ValueError("POSTGRES_URL is not set")
        return cls(settings.postgres_url.get_secret_value(), timeout_s=settings.store_timeout_s,
                   pool_size=settings.postgres_pool_size, breaker=breaker,
                   months_back=settings.postgres_partition_months_back,
                   months_ahead=settings.postgres_partition_months_ahead,
                   application_name=application_name, retention_days=settings.retention_days)

    async def open(self) -> None:
        self.schema = await self.pool.open(lambda conn: upgrade(
            conn, months_back=self._months[0], months_ahead=self._months[1],
            retention_days=self._retention_days))
        if self.schema.applied:
            log.info("schema upgraded", extra={"count": self.schema.applied,
                                               "detail": self.schema.partitioning})

    async def close(self) -> None:
        await self.pool.close()

    async def ensure_partitions(self, now: datetime | None = None) -> tuple[str, ...]:
        if self.schema is None or self.schema.partitioning != "native":
            return ()
        return await self._run(lambda conn: ensure_partitions(
            conn, months_back=self._months[0], months_ahead=self._months[1], now=now,
            retention_days=self._retention_days))

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, retry: bool = False) -> T:
        return await self.pool.run(fn, retry=retry)

    # --- writes ---------------------------------------------------------------------------

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        records = [record_of(d) for d in deliveries]
        return await self.write_records(records)

    async def write_records(self, records: Sequence[DeliveryRecord], *,
                            results: bool = True) -> list[WriteResult]:
        """Store many delivery records in one transaction; one result per record (an empty
        list when ``results`` is false: the sink needs no answer and skips the RETURNING).

        Raises:
            StoreUnavailable: nothing of the batch was committed.
        """
        return await self._run(lambda conn: self._write(conn, records, results))

    async def _write(self, conn: Any, records: Sequence[DeliveryRecord],
                     want: bool) -> list[WriteResult]:
        async with conn.transaction():
            rows = await conn.fetch(_INSERT_DELIVERIES, [r.provider for r in records],
                                    [r.delivery_key for r in records],
                                    [r.received_at for r in records])
            fresh = {(row[0], row[1]) for row in rows}
            firsts: list[DeliveryRecord] = []
            is_first: list[bool] = []
            for record in records:
                key = (record.provider, record.delivery_key)
                first = key in fresh
                if first:
                    fresh.discard(key)  # a second copy in the same batch is a re-delivery
                    firsts.append(record)
                is_first.append(first)
            events = [e for r in firsts for e in r.events if e[11] != REPROCESS]
            # One row per identity in an upsert (a statement may not update a row twice);
            # the last in the batch wins.
            corrections = list({e[0]: e for r in firsts for e in r.events
                                if e[11] == REPROCESS}.values())
            jobs = [j for r in firsts for j in r.jobs]
            raws = [(r.provider, r.delivery_key, r.raw) for r in firsts if r.raw is not None]
            new_events: set[str] = set()
            new_jobs: set[str] = set()
            if raws:
                await conn.execute(_INSERT_RAW, [p for p, _, _ in raws], [k for _, k, _ in raws],
                                   [raw[0] for _, _, raw in raws],
                                   [orjson.dumps(raw[1]).decode() for _, _, raw in raws],
                                   [raw[2] for _, _, raw in raws])
            for statement, rows in ((_INSERT_EVENTS, events), (_UPSERT_EVENTS, corrections)):
                if not rows:
                    continue
                if want:
                    new_events |= {row[0] for row in await conn.fetch(
                        statement + " RETURNING event_id::text", *_columns(rows, 13))}
                else:
                    await conn.execute(statement, *_columns(rows, 13))
            if jobs:
                if want:
                    new_jobs = {row[0] for row in await conn.fetch(
                        _INSERT_JOBS + " RETURNING job_id", *_columns(jobs, 8))}
                else:
                    await conn.execute(_INSERT_JOBS, *_columns(jobs, 8))
        if not want:
            return []
        results = []
        for record, first in zip(records, is_first, strict=True):
            if not first:
                results.append(WriteResult(0, record.items, True))
                continue
            accepted = 0
            for event in record.events:
                if event[0] in new_events:
                    new_events.discard(event[0])  # later copies in the batch are duplicates
                    accepted += 1
            for job in record.jobs:
                if job[0] in new_jobs:
                    new_jobs.discard(job[0])
                    accepted += 1
            results.append(WriteResult(accepted, record.items - accepted, False))
        return results

    # --- erasure ----------------------------------------------------------------------------

    async def erase_events(self, user_id: str) -> int:
        """Delete every event of ``user_id``, then VACUUM the table (every partition): the
        dead tuples' space is marked free for reuse at once and their index entries go."""
        return await erase_rows(self.pool, "biometric_events",
                                [("user_id = $1", (user_id,))])

    async def erase_jobs(self, user_id: str, accounts: Sequence[tuple[str, str]]) -> int:
        """Delete the fetch jobs of ``user_id`` and of the provider accounts named; VACUUM."""
        return await erase_rows(self.pool, "fetch_jobs", [
            ("user_id = $1", (user_id,)),
            *[("provider = $1 AND provider_user_id = $2", account) for account in accounts]])

    # --- reads ----------------------------------------------------------------------------

    async def query_events(self, query: EventQuery) -> list[CanonicalEvent]:
        # Only fixed SQL fragments are joined; every value is a bound parameter.
        sql = [_SELECT_EVENTS]
        args: list[Any] = [query.user_id]
        if query.metric:
            args.append(query.metric)
            sql.append(f"AND metric = ${len(args)}")
        if query.since:
            args.append(query.since)
            sql.append(f"AND start >= ${len(args)}")
        if query.until:
            args.append(query.until)
            sql.append(f"AND start < ${len(args)}")
        if query.after:
            try:
                after_id = uuid.UUID(query.after[1])
            except ValueError:
                raise MalformedPayload("invalid cursor") from None
            args += [query.after[0], after_id]
            sql.append(f"AND (start, event_id) > (${len(args) - 1}, ${len(args)})")
        args.append(query.limit)
        sql.append(f"ORDER BY start, event_id LIMIT ${len(args)}")
        statement = " ".join(sql)
        rows = await self._run(lambda conn: conn.fetch(statement, *args), retry=True)
        return [CanonicalEvent(event_id=r[0], user_id=r[1], provider=r[2], provider_user_id=r[3],
                               metric=r[4], value=r[5], unit=r[6], start=r[7], end=r[8],
                               source_record_id=r[9], received_at=r[10], provenance=r[11],
                               fetched_at=r[12]) for r in rows]

    async def count_events(self, user_id: str | None = None) -> int:
        if user_id is None:
            value = await self._run(
                lambda conn: conn.fetchval("SELECT count(*) FROM biometric_events"), retry=True)
        else:
            value = await self._run(lambda conn: conn.fetchval(
                "SELECT count(*) FROM biometric_events WHERE user_id = $1", user_id), retry=True)
        return int(value)

    async def count_fetch_jobs(self) -> int:
        value = await self._run(lambda conn: conn.fetchval("SELECT count(*) FROM fetch_jobs"),
                                retry=True)
        return int(value)

    async def coverage(self, user_id: str, since: datetime) -> list[DayCoverage]:
        rows = await self._run(lambda conn: conn.fetch(
            "SELECT provider, metric, (start AT TIME ZONE 'UTC')::date AS day, count(*), "
            "max(start), max(received_at), max(fetched_at) FROM biometric_events "
            "WHERE user_id = $1 AND start >= $2 GROUP BY 1, 2, 3", user_id, since), retry=True)
        return [DayCoverage(r[0], r[1], r[2], int(r[3]), r[4], r[5], r[6]) for r in rows]

    def events_marker(self) -> int | None:
        # No cheap, exact marker across processes and partitions: NEUROS counts instead.
        return None

    # --- retention and the raw payload archive (RawArchive) -------------------------------

    async def _maintain(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        # Not through the breaker: a partition's count or a batch of deletes may be slow on
        # purpose, and must not open the breaker the sink's writes depend on.
        return await self.pool.run(fn, guarded_by_breaker=False)

    async def delete_events_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                   stop: asyncio.Event | None = None) -> int:
        """Delete every event whose ``start`` is before ``cutoff``, partition by partition:
        a monthly partition (or TimescaleDB chunk) that ends at or before the cutoff is
        detached and dropped whole (no row-by-row delete, no bloat to vacuum); what is older
        in the partition holding the cutoff and in the default partition is deleted in
        batches of ``batch_rows``. Returns how many events went (when ``stop`` is set, after
        the step in progress: the next run goes on)."""
        deleted = 0
        mode = self.schema.partitioning if self.schema is not None else "native"
        if mode == "native":
            for name, _, high in await self._maintain(_month_partitions):
                if stop is not None and stop.is_set():
                    return deleted
                if high <= cutoff:
                    await self._maintain(functools.partial(_detach_partition, name=name))
            for name in await self._maintain(_detached_months):
                deleted += await self._maintain(functools.partial(_drop_detached, name=name))
        elif mode == "timescale":
            deleted += await self._maintain(lambda conn: _drop_chunks(conn, cutoff))
        while True:
            gone = int((await self._maintain(lambda conn: conn.execute(
                "DELETE FROM biometric_events WHERE (event_id, start) IN (SELECT event_id, "
                "start FROM biometric_events WHERE start < $1 LIMIT $2)", cutoff, batch_rows)
            )).split()[-1])
            deleted += gone
            if gone < batch_rows or (stop is not None and stop.is_set()):
                return deleted

    async def delete_archive_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                    stop: asyncio.Event | None = None) -> int:
        deleted = 0
        while True:
            gone = int((await self._maintain(lambda conn: conn.execute(
                "DELETE FROM raw_payloads WHERE id IN (SELECT id FROM raw_payloads "
                "WHERE received_at < $1 LIMIT $2)", cutoff, batch_rows))).split()[-1])
            deleted += gone
            if gone < batch_rows or (stop is not None and stop.is_set()):
                return deleted

    async def erase_archive(self, user_id: str) -> int:
        status = await self._run(lambda conn: conn.execute(
            "DELETE FROM raw_payloads WHERE user_ids @> ARRAY[$1::text]", user_id))
        return int(status.split()[-1])

    async def archived(self, query: ArchiveQuery) -> list[tuple[int, RawPayload]]:
        sql = ["SELECT id, provider, delivery_key, received_at, user_ids, sealed "
               "FROM raw_payloads WHERE id > $1 AND received_at >= $2"]
        args: list[Any] = [query.after, query.since]
        if query.provider:
            args.append(query.provider)
            sql.append(f"AND provider = ${len(args)}")
        if query.user_id:
            args.append(query.user_id)
            sql.append(f"AND user_ids @> ARRAY[${len(args)}::text]")
        args.append(query.limit)
        sql.append(f"ORDER BY id LIMIT ${len(args)}")
        statement = " ".join(sql)
        rows = await self._run(lambda conn: conn.fetch(statement, *args), retry=True)
        return [(int(r[0]), RawPayload(r[1], r[2], iso(r[3]), tuple(r[4]), r[5]))
                for r in rows]

    async def ping(self) -> dict[str, Any]:
        facts = await self.pool.ping()
        if self.schema is not None:
            facts["partitioning"] = self.schema.partitioning
        return facts
