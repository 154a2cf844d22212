"""Embedded store: one SQLite file in WAL mode, every acknowledged commit fsynced.

A 202 means the events survive a crash or power loss. The cost is amortised by group commit:
the ingest pipeline hands over every delivery waiting at that moment in one ``write_batch``,
which is one transaction and one fsync.

Every acknowledged batch is one transaction whose COMMIT fsyncs the WAL
(``synchronous=FULL``). ``write_batch`` returns only after that, and the caller answers after
``write_batch``.

A batch's whole transaction (BEGIN, a few multi-row INSERTs, COMMIT) runs on one helper thread
that owns the writer connection, and the loop serves requests meanwhile; the loop does not touch
the writer connection until the transaction returns (the committer writes one batch at a time).
Multi-row statements matter there: each ``sqlite3_step`` releases the GIL and must win it back
from the busy loop, so a batch is a handful of statements, not one per row (one per row measured
72 ms for 25 deliveries on a thread, against 4 ms inline). The ``COMMIT`` copies every page the
batch dirtied into the WAL (a random event id dirties a page of its index per row) and fsyncs
it, all without the GIL. Measured both ways (``bench/bridge_throughput.py``, four alternating
runs each): with the inserts on the loop and only the ``COMMIT`` here, the bridge answered about
a sixth more webhooks (a median of 6,734 against 5,706 req/s; the GIL hand-overs make the commit
slower on this thread, 4.0-4.6 against 4.6-6.3 ms), but its loop ran at 92 % instead of 78 % and
a load balancer's ``/health`` waited twice as long (p99 17-41 against 8-15 ms). The health
check's bound wins: the inserts stay here. The writer connection never blocks: ``busy_timeout``
is 0 and a locked database (another worker process holding the write lock) is retried with an
``await``, up to the store timeout. Reads run on a separate thread with their own connection:
WAL lets them proceed during a write, and they are not on the webhook's hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from auren.adapters.base import ArchiveQuery, DayCoverage, EventQuery, WriteResult
from auren.adapters.wal import DEFAULT_WAL_LIMIT_BYTES, WalKeeper
from auren.errors import StoreUnavailable
from auren.events import REPROCESS, CanonicalEvent, Delivery, RawPayload, iso

T = TypeVar("T")
log = logging.getLogger("auren.store")

# Versioned migrations; ``PRAGMA user_version`` records how many have been applied. (Statements
# are split on ";", so the SQL carries no comments.) biometric_events is a rowid table: rows are
# appended in arrival order and only the small unique index on the random event_id takes
# scattered inserts; a WITHOUT ROWID table keyed by event_id cost 2.5x per row when measured.
# One secondary index serves the read API and NEUROS: a user's metric over a time range.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS biometric_events (
        event_id         TEXT NOT NULL UNIQUE,
        user_id          TEXT NOT NULL,
        provider         TEXT NOT NULL,
        provider_user_id TEXT NOT NULL,
        metric           TEXT NOT NULL,
        value            REAL NOT NULL,
        unit             TEXT NOT NULL,
        start            TEXT NOT NULL,
        "end"            TEXT,
        source_record_id TEXT,
        received_at      TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS biometric_events_user_metric_start
        ON biometric_events (user_id, metric, start);
    CREATE TABLE IF NOT EXISTS fetch_jobs (
        job_id           TEXT PRIMARY KEY,
        provider         TEXT NOT NULL,
        user_id          TEXT NOT NULL,
        provider_user_id TEXT NOT NULL,
        kind             TEXT NOT NULL,
        object_id        TEXT,
        params           TEXT NOT NULL,
        received_at      TEXT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending'
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS deliveries (
        provider     TEXT NOT NULL,
        delivery_key TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        PRIMARY KEY (provider, delivery_key)
    ) WITHOUT ROWID;
    """,
    # 2: each event's provenance (push, fetch, backfill) and fetch time; the fetcher's state of
    # a job (auren.connections.sqlite claims, retries and finishes jobs in this table).
    """
    ALTER TABLE biometric_events ADD COLUMN provenance TEXT NOT NULL DEFAULT 'push';
    ALTER TABLE biometric_events ADD COLUMN fetched_at TEXT;
    ALTER TABLE fetch_jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fetch_jobs ADD COLUMN rate_waits INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fetch_jobs ADD COLUMN due_at TEXT;
    ALTER TABLE fetch_jobs ADD COLUMN lease_until TEXT;
    ALTER TABLE fetch_jobs ADD COLUMN last_error TEXT;
    ALTER TABLE fetch_jobs ADD COLUMN updated_at TEXT;
    CREATE INDEX IF NOT EXISTS fetch_jobs_status_due ON fetch_jobs (status, due_at);
    """,
    # 3: the raw payload archive (ARCHIVE_RAW_PAYLOADS), written in the transaction of its
    # delivery's events. user_id is the first user the delivery names (an index for erasure);
    # users lists them all, and multi marks the rare delivery naming several (Garmin batches),
    # which an erasure looks through with json_each.
    """
    CREATE TABLE IF NOT EXISTS raw_payloads (
        provider     TEXT NOT NULL,
        delivery_key TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        user_id      TEXT,
        users        TEXT NOT NULL,
        multi        INTEGER NOT NULL DEFAULT 0,
        sealed       TEXT NOT NULL,
        PRIMARY KEY (provider, delivery_key)
    );
    CREATE INDEX IF NOT EXISTS raw_payloads_received ON raw_payloads (received_at);
    CREATE INDEX IF NOT EXISTS raw_payloads_user ON raw_payloads (user_id);
    CREATE INDEX IF NOT EXISTS raw_payloads_multi ON raw_payloads (multi) WHERE multi = 1;
    """,
    # 4: how many erasures deleted events: part of ``events_marker``, which must move when
    # events go as well as when they come.
    """
    CREATE TABLE IF NOT EXISTS erasure_generation (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO erasure_generation (id, generation) VALUES (1, 0);
    """,
)

_INSERT_EVENT = (
    'INSERT OR IGNORE INTO biometric_events (event_id, user_id, provider, provider_user_id, '
    'metric, value, unit, start, "end", source_record_id, received_at, provenance, fetched_at) '
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_JOB = (
    "INSERT OR IGNORE INTO fetch_jobs (job_id, provider, user_id, provider_user_id, kind, "
    "object_id, params, received_at) VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_DELIVERY = (
    "INSERT OR IGNORE INTO deliveries (provider, delivery_key, received_at) VALUES (?,?,?)"
)
# A reprocessed event (provenance "reprocess") corrects the stored one of the same identity:
# value and unit replaced, provenance "reprocess"; an unchanged value is not written at all.
_UPSERT_EVENT = (
    _INSERT_EVENT.replace("INSERT OR IGNORE", "INSERT", 1)
    + " ON CONFLICT (event_id) DO UPDATE SET value = excluded.value, unit = excluded.unit, "
    "provenance = excluded.provenance "
    "WHERE value IS NOT excluded.value OR unit IS NOT excluded.unit"
)
_INSERT_RAW = (
    "INSERT OR IGNORE INTO raw_payloads (provider, delivery_key, received_at, user_id, users, "
    "multi, sealed) VALUES (?,?,?,?,?,?,?)"
)
_RAW_COLUMNS = "rowid, provider, delivery_key, received_at, users, sealed"
_COLUMNS = ('event_id, user_id, provider, provider_user_id, metric, value, unit, start, "end", '
            "source_record_id, received_at, provenance, fetched_at")


def connect(path: Path, timeout_s: float, *, synchronous: str = "FULL",
            statements: int = 128,
            wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES) -> sqlite3.Connection:
    """The one way AUREN opens its SQLite file: autocommit (transactions are explicit), usable
    from the thread the caller hands it to, WAL, and ``synchronous`` (FULL: the WAL is fsynced at
    every commit, so an acknowledged write is durable). ``secure_delete``: deleted content is
    overwritten with zeros, so an erasure leaves no text behind in the file's free space (rows
    are deleted by erasures and retention, which is all it costs); ``journal_size_limit``: SQLite
    cuts the WAL back to the limit whenever it rewinds (see ``auren.adapters.wal``)."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False, cached_statements=statements)
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute(f"PRAGMA journal_size_limit={int(wal_limit_bytes)}")
    return conn


_SQLITE_IOERR = 10  # the primary result code of every SQLITE_IOERR_* (fsync, write, ...)


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock: worth retrying, unlike every other error."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


@contextlib.contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock up front) ... ``COMMIT``, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def run_migrations(conn: sqlite3.Connection, scripts: Sequence[str], *,
                   current: Callable[[sqlite3.Connection], int],
                   record: Callable[[sqlite3.Connection, int], object]) -> None:
    """Apply ``scripts[current:]`` in one transaction, ``record``ing each version applied.
    (Scripts are split on ";", so their SQL carries no comments.)"""
    with immediate_transaction(conn):
        version = current(conn)
        for number, script in enumerate(scripts[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            record(conn, number)


def migrate_component(conn: sqlite3.Connection, component: str, scripts: Sequence[str]) -> None:
    """Apply a component's pending ``scripts`` (another room's tables in the same file),
    counting its version in its own row of ``schema_migrations``, never in
    ``PRAGMA user_version``, which is the event store's."""

    def current(c: sqlite3.Connection) -> int:
        c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, "
                  "version INTEGER NOT NULL)")
        row = c.execute("SELECT version FROM schema_migrations WHERE component = ?",
                        (component,)).fetchone()
        return int(row[0]) if row else 0

    run_migrations(conn, scripts, current=current, record=lambda c, number: c.execute(
        "INSERT INTO schema_migrations (component, version) VALUES (?, ?) "
        "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, number)))


def _migrate(conn: sqlite3.Connection) -> None:
    # The event store's version is PRAGMA user_version; other components keep theirs in
    # schema_migrations (NEUROS's conversations), so the schemas evolve without colliding.
    run_migrations(conn, MIGRATIONS,
                   current=lambda c: int(c.execute("PRAGMA user_version").fetchone()[0]),
                   record=lambda c, number: c.execute(f"PRAGMA user_version={number}"))


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    with immediate_transaction(conn):
        return fn(conn)


def _row_to_event(row: tuple[Any, ...]) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=row[0], user_id=row[1], provider=row[2], provider_user_id=row[3],
        metric=row[4], value=row[5], unit=row[6], start=datetime.fromisoformat(row[7]),
        end=datetime.fromisoformat(row[8]) if row[8] else None, source_record_id=row[9],
        received_at=datetime.fromisoformat(row[10]), provenance=row[11],
        fetched_at=datetime.fromisoformat(row[12]) if row[12] else None,
    )


class SQLiteStore:
    """``EventStore`` on a local SQLite file."""

    def __init__(self, path: Path, *, timeout_s: float = 10.0,
                 wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._wal_limit = wal_limit_bytes
        self._writer: sqlite3.Connection | None = None
        self._committing = False  # the helper thread holds the writer connection
        self._write_lock = asyncio.Lock()
        self._failed: str | None = None
        self._commit_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._reader: sqlite3.Connection | None = None
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        # Checkpoints copy the WAL back into the database file and fsync it: tens of ms that
        # SQLite would otherwise spend inside whichever commit crosses the threshold, i.e. on
        # the event loop. A background thread does them instead, and keeps the WAL bounded.
        self.wal = WalKeeper(path, lambda: connect(path, timeout_s,
                                                   wal_limit_bytes=wal_limit_bytes),
                             limit_bytes=wal_limit_bytes, timeout_s=timeout_s, name="sqlite",
                             pause_writes=lambda: self._write_lock)

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)

        def _open() -> sqlite3.Connection:
            conn = connect(self._path, self._timeout_s, statements=WRITER_STATEMENT_CACHE,
                           wal_limit_bytes=self._wal_limit)
            _migrate(conn)  # may wait for another worker's migration: off the loop
            conn.execute("PRAGMA busy_timeout=0")  # from now on, waits are awaited
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # Random event ids scatter inserts over the whole unique index: a page cache that
            # holds the indexes' upper levels and hot leaves (64 MiB, allocated as used)
            # measured a third cheaper commits than SQLite's 2 MiB default.
            conn.execute("PRAGMA cache_size=-65536")
            return conn

        self._writer = await self._run(self._read_thread, _open)
        self._reader = await self._run(self._read_thread, lambda: connect(
            self._path, self._timeout_s, wal_limit_bytes=self._wal_limit))
        await self.wal.open()

    async def close(self) -> None:
        await self.wal.close()
        # First the helper thread: a commit still running there owns the writer connection.
        self._commit_thread.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            await self._run(self._read_thread, self._reader.close)
        self._read_thread.shutdown(wait=True)
        self._writer = self._reader = None

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, fn), self._timeout_s)
        except TimeoutError as exc:
            raise StoreUnavailable("store did not answer in time", retry_after_s=2) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store error: {type(exc).__name__}", retry_after_s=2) from exc

    # --- writes ---------------------------------------------------------------------------

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        # A transaction runs on the helper thread while this awaits it: one writer at a time.
        # The group committer never overlaps batches, so this lock is only ever contended by
        # callers that write directly (the legacy bridge's one transaction per delivery).
        async with self._write_lock:
            await self.wal.before_write()
            return await self._write_batch(deliveries)

    async def _write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("store is not open")
        if self._failed:
            raise StoreUnavailable(self._failed, retry_after_s=30)
        now = iso(datetime.now(UTC))
        rows = [_delivery_rows(d, now) for d in deliveries]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        delay = 0.001
        while True:
            try:
                # Inserts and COMMIT on the helper thread: SQLite's B-tree work and the WAL's
                # fsync run without the GIL, so the loop answers requests meanwhile (on the
                # loop, the inserts were a fifth of its time at saturation).
                return await self._on_writer_thread(_insert_and_commit, conn, rows)
            except StoreUnavailable as exc:
                cause = exc.__cause__
                if not (isinstance(cause, sqlite3.Error) and is_busy(cause)):
                    raise
                if loop.time() + delay > deadline:
                    raise StoreUnavailable("store is locked", retry_after_s=2) from cause
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _on_writer_thread(self, fn: Callable[..., T], conn: sqlite3.Connection,
                                *args: Any) -> T:
        """Run ``fn`` on the helper thread, which holds the writer connection meanwhile."""
        self._committing = True
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._commit_thread, self._release_after, fn, conn, *args)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_IOERR:
                # Perhaps committed but not on disk, and after a failed fsync the kernel may
                # have dropped the dirty pages: stop acknowledging anything until an operator
                # restarts (a later fsync could "succeed" without the lost pages).
                self._failed = f"commit failed with an I/O error: {exc}"
                raise StoreUnavailable(self._failed, retry_after_s=30) from exc
            raise StoreUnavailable(f"store error: {type(exc).__name__}",
                                   retry_after_s=2) from exc

    def _release_after(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        finally:
            # Cleared here, not by the awaiting coroutine: should it be cancelled, the
            # connection is still busy until this returns.
            self._committing = False

    # --- retention and the raw payload archive ---------------------------------------------

    async def _write_step(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one short write transaction on the writer connection, between two group
        commits and off the loop (on the commit thread); a file locked by another process is
        waited for with awaits, up to the store timeout, as a batch's write is."""
        async with self._write_lock:
            await self.wal.before_write()
            conn = self._writer
            if conn is None:
                raise StoreUnavailable("store is not open")
            if self._failed:
                raise StoreUnavailable(self._failed, retry_after_s=30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            delay = 0.001
            while True:
                try:
                    return await self._on_writer_thread(_in_transaction, conn, fn)
                except StoreUnavailable as exc:
                    cause = exc.__cause__
                    if not (isinstance(cause, sqlite3.Error) and is_busy(cause)) or (
                            loop.time() + delay > deadline):
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def delete_events_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                   stop: asyncio.Event | None = None) -> int:
        """Delete every event whose ``start`` is before ``cutoff``; how many went (when
        ``stop`` is set, it returns after the step in progress: the next run goes on).

        In bounded steps: each transaction looks at the next ``batch_rows`` rows in rowid
        order and deletes the old ones among them, so no transaction holds the write lock for
        long and webhooks commit between them. (No index on ``start`` alone is kept: one more
        scattered insert per event on the hot path, for an hourly sweep.)"""
        cut = iso(cutoff)
        position, deleted = 0, 0
        while True:
            def step(conn: sqlite3.Connection, low: int = position) -> tuple[int | None, int]:
                (upper,) = conn.execute(
                    "SELECT max(rowid) FROM (SELECT rowid FROM biometric_events "
                    "WHERE rowid > ? ORDER BY rowid LIMIT ?)", (low, batch_rows)).fetchone()
                if upper is None:
                    return None, 0
                gone = conn.execute("DELETE FROM biometric_events WHERE rowid > ? "
                                    "AND rowid <= ? AND start < ?", (low, upper, cut)).rowcount
                return int(upper), int(gone)

            upper, gone = await self._write_step(step)
            deleted += gone
            if upper is None or (stop is not None and stop.is_set()):
                return deleted
            position = upper
            await asyncio.sleep(0)  # let the group committer in between two steps

    async def delete_archive_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                    stop: asyncio.Event | None = None) -> int:
        """Delete archived raw payloads received before ``cutoff``, in bounded steps."""
        cut = iso(cutoff)
        deleted = 0
        while True:
            gone = await self._write_step(lambda conn: int(conn.execute(
                "DELETE FROM raw_payloads WHERE rowid IN (SELECT rowid FROM raw_payloads "
                "WHERE received_at < ? LIMIT ?)", (cut, batch_rows)).rowcount))
            deleted += gone
            if gone < batch_rows or (stop is not None and stop.is_set()):
                return deleted
            await asyncio.sleep(0)

    async def erase_archive(self, user_id: str) -> int:
        """Delete every archived payload that names ``user_id``; how many went. (Deleted
        content is zeroed: ``secure_delete``; the WAL is the caller's to truncate.)"""
        return await self._write_step(lambda conn: int(
            conn.execute("DELETE FROM raw_payloads WHERE user_id = ?", (user_id,)).rowcount
            + conn.execute("DELETE FROM raw_payloads WHERE multi = 1 AND EXISTS (SELECT 1 "
                           "FROM json_each(users) WHERE value = ?)", (user_id,)).rowcount))

    async def archived(self, query: ArchiveQuery) -> list[tuple[int, RawPayload]]:
        """Archived payloads received since ``query.since`` (of one provider and user when
        given), after the cursor ``query.after``, in archive order: (cursor, payload)."""
        sql = [f"SELECT {_RAW_COLUMNS} FROM raw_payloads "  # noqa: S608
               "WHERE rowid > ? AND received_at >= ?"]
        args: list[Any] = [query.after, iso(query.since)]
        if query.provider:
            sql.append("AND provider = ?")
            args.append(query.provider)
        if query.user_id:
            sql.append("AND (user_id = ? OR (multi = 1 AND EXISTS (SELECT 1 FROM "
                       "json_each(users) WHERE value = ?)))")
            args += [query.user_id, query.user_id]
        sql.append("ORDER BY rowid LIMIT ?")
        args.append(query.limit)
        statement = " ".join(sql)
        rows = await self._read(lambda c: c.execute(statement, args).fetchall())
        return [(int(r[0]), RawPayload(r[1], r[2], r[3], tuple(orjson.loads(r[4])), r[5]))
                for r in rows]
    # --- erasure ----------------------------------------------------------------------------

    async def erase_events(self, user_id: str) -> int:
        """Delete every event of ``user_id``; the rows deleted. Held against this process's
        group commit (a batch in flight finishes first, so none lands after the deletion);
        ``secure_delete`` zeroes the rows in the pages the deletion writes, and
        :meth:`scrub_files` removes the WAL's older copies."""
        def run(conn: sqlite3.Connection) -> int:
            with immediate_transaction(conn):
                deleted = int(conn.execute("DELETE FROM biometric_events WHERE user_id = ?",
                                           (user_id,)).rowcount)
                # Moves events_marker: NEUROS must count the person's events again.
                conn.execute("UPDATE erasure_generation SET generation = generation + 1")
                return deleted

        async with self._write_lock:
            return await self._read(run)

    async def erase_jobs(self, user_id: str, accounts: Sequence[tuple[str, str]]) -> int:
        """Delete the fetch jobs of ``user_id`` and of the provider accounts named."""
        total = await self._erase("DELETE FROM fetch_jobs WHERE user_id = ?", (user_id,))
        for provider, provider_user_id in accounts:
            total += await self._erase(
                "DELETE FROM fetch_jobs WHERE provider = ? AND provider_user_id = ?",
                (provider, provider_user_id))
        return total

    async def _erase(self, sql: str, args: Sequence[Any]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            with immediate_transaction(conn):
                return int(conn.execute(sql, args).rowcount)

        async with self._write_lock:
            return await self._read(run)

    async def scrub_files(self) -> bool:
        """After an erasure: ``VACUUM``, then a truncating checkpoint. ``secure_delete`` zeroes
        a deleted row where it lies, but not the copies b-tree rebalancing left behind in the
        unused space of other pages (measured: an erased user id was still readable in an
        index page's gap), so the file is rebuilt from its live rows; the checkpoint then
        copies the new pages over the old ones and cuts the WAL to nothing. Writes of this
        process wait meanwhile (seconds on a file of gigabytes). False: readers held the
        checkpoint off; it is retried in the background and the caller should try again."""

        reader = self._reader
        if reader is None:
            raise StoreUnavailable("store is not open")
        async with self._write_lock:
            # Not bounded by STORE_TIMEOUT_S: its time grows with the file (the caller bounds
            # the whole step); reads of this process queue behind it meanwhile.
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._read_thread, reader.execute, "VACUUM")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store error: {type(exc).__name__}",
                                       retry_after_s=2) from exc
        return await self.wal.scrub()

    # --- reads ----------------------------------------------------------------------------

    async def query_events(self, query: EventQuery) -> list[CanonicalEvent]:
        # Only fixed SQL fragments are joined; every value is a bound parameter.
        sql = [f"SELECT {_COLUMNS} FROM biometric_events WHERE user_id = ?"]  # noqa: S608
        args: list[Any] = [query.user_id]
        if query.metric:
            sql.append("AND metric = ?")
            args.append(query.metric)
        if query.since:
            sql.append("AND start >= ?")
            args.append(iso(query.since))
        if query.until:
            sql.append("AND start < ?")
            args.append(iso(query.until))
        if query.after:
            sql.append("AND (start > ? OR (start = ? AND event_id > ?))")
            args += [iso(query.after[0]), iso(query.after[0]), query.after[1]]
        sql.append("ORDER BY start, event_id LIMIT ?")
        args.append(query.limit)
        statement = " ".join(sql)
        rows = await self._read(lambda c: c.execute(statement, args).fetchall())
        return [_row_to_event(r) for r in rows]

    def events_marker(self) -> int | None:
        """A number that changes whenever an event is added or erased: the largest rowid and
        the count of erasures that deleted events.

        Events are appended (an ignored duplicate takes no rowid) and deleted by an erasure,
        which bumps its generation in the same transaction, so an unchanged marker means no
        event was added or erased in between. Retention (events older than RETENTION_DAYS)
        and ``auren reprocess`` (values corrected in place) do not move it: NEUROS's cached
        series see those within their TTL. NEUROS uses it to
        skip re-counting a user's events on every chat. The lookup is one b-tree seek, so it
        runs right here on the caller's (the loop's) thread; None when the store is not open,
        a commit holds the writer connection, or the file is momentarily locked, and the caller
        counts as before.
        """
        conn = self._writer
        if conn is None or self._committing:
            return None
        try:
            row = conn.execute("SELECT (SELECT max(rowid) FROM biometric_events), "
                               "(SELECT generation FROM erasure_generation)").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0] or 0) + (int(row[1] or 0) << 48)

    async def count_events(self, user_id: str | None = None) -> int:
        if user_id is None:
            row = await self._read(
                lambda c: c.execute("SELECT count(*) FROM biometric_events").fetchone())
        else:
            row = await self._read(lambda c: c.execute(
                "SELECT count(*) FROM biometric_events WHERE user_id = ?", (user_id,)).fetchone())
        return int(row[0])

    async def count_fetch_jobs(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT count(*) FROM fetch_jobs").fetchone())
        return int(row[0])

    async def coverage(self, user_id: str, since: datetime) -> list[DayCoverage]:
        # Times are stored as RFC 3339 text in UTC: the first ten characters are the UTC day.
        rows = await self._read(lambda c: c.execute(
            "SELECT provider, metric, substr(start, 1, 10) AS day, count(*), max(start), "
            "max(received_at), max(fetched_at) FROM biometric_events "
            "WHERE user_id = ? AND start >= ? GROUP BY provider, metric, day",
            (user_id, iso(since))).fetchall())
        return [DayCoverage(r[0], r[1], date.fromisoformat(r[2]), int(r[3]),
                            datetime.fromisoformat(r[4]), datetime.fromisoformat(r[5]),
                            datetime.fromisoformat(r[6]) if r[6] else None) for r in rows]

    async def ping(self) -> dict[str, Any]:
        if self._failed:
            raise StoreUnavailable(self._failed, retry_after_s=30)
        started = time.perf_counter()
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        return {"engine": "sqlite", "responseTime_ms": (time.perf_counter() - started) * 1000}

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        if conn is None:
            raise StoreUnavailable("store is not open")
        return await self._run(self._read_thread, lambda: fn(conn))


_DeliveryRows = tuple[tuple[str, str, str], list[tuple[Any, ...]], list[tuple[Any, ...]],
                      tuple[Any, ...] | None]


def _delivery_rows(delivery: Delivery, now: str) -> _DeliveryRows:
    # Every item of a delivery usually carries the same received_at object: render it once.
    last: datetime | None = None
    text = ""
    events = []
    for e in delivery.events:
        if e.received_at is not last:
            last, text = e.received_at, iso(e.received_at)
        events.append((e.event_id, e.user_id, e.provider, e.provider_user_id, e.metric, e.value,
                       e.unit, e.start_text, e.end_text, e.source_record_id, text, e.provenance,
                       iso(e.fetched_at) if e.fetched_at is not None else None))
    jobs = [
        (j.job_id, j.provider, j.user_id, j.provider_user_id, j.kind, j.object_id,
         orjson.dumps(j.params).decode(), iso(j.received_at))
        for j in delivery.fetch_jobs
    ]
    raw = delivery.raw
    raw_row = None if raw is None else (
        raw.provider, raw.delivery_key, raw.received_at,
        raw.user_ids[0] if raw.user_ids else None, orjson.dumps(raw.user_ids).decode(),
        int(len(raw.user_ids) > 1), raw.sealed)
    return (delivery.provider, delivery.delivery_key, now), events, jobs, raw_row


# Rows per multi-row INSERT: a batch's deliveries fit one statement, and statements stay far
# below SQLite's limit of 32766 bound values. Each distinct row count is compiled once and kept
# in the writer connection's statement cache (see WRITER_STATEMENT_CACHE).
_ROWS_PER_INSERT = 256
WRITER_STATEMENT_CACHE = 3 * _ROWS_PER_INSERT + 64


@functools.lru_cache(maxsize=WRITER_STATEMENT_CACHE)
def _multi_row(insert: str, rows: int) -> str:
    """``insert`` (ending in one ``VALUES (?,...)`` group) with ``rows`` groups."""
    head, _, group = insert.rpartition(" VALUES ")
    return f"{head} VALUES {','.join([group] * rows)}"


def _insert_many(conn: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` with ``insert`` (OR IGNORE), a chunk per statement; rows inserted."""
    before = conn.total_changes
    for first in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[first:first + _ROWS_PER_INSERT]
        conn.execute(_multi_row(insert, len(chunk)), [value for row in chunk for value in row])
    return conn.total_changes - before


def _insert_all_new(conn: sqlite3.Connection, batch: list[_DeliveryRows]
                    ) -> list[WriteResult] | None:
    """BEGIN and insert the batch in a few multi-row statements, if every row is new.

    One statement per table instead of two per delivery: measured a seventh less CPU per
    delivery on the loop. The counts of inserted rows tell whether every delivery and every
    item was new; if not, nothing is kept (ROLLBACK) and the result is None.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        expected = [len(batch)]
        inserted = [_insert_many(conn, _INSERT_DELIVERY, [d for d, _, _, _ in batch])]
        if inserted == expected:
            events = [e for _, items, _, _ in batch for e in items]
            jobs = [j for _, _, items, _ in batch for j in items]
            raws = [raw for _, _, _, raw in batch if raw is not None]
            expected += [len(events), len(jobs), len(raws)]
            inserted += [_insert_many(conn, _INSERT_EVENT, events),
                         _insert_many(conn, _INSERT_JOB, jobs),
                         _insert_many(conn, _INSERT_RAW, raws)]
        if inserted != expected:
            conn.execute("ROLLBACK")
            return None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return [WriteResult(len(events) + len(jobs), 0, False) for _, events, jobs, _ in batch]


def _insert_and_commit(conn: sqlite3.Connection, batch: list[_DeliveryRows]
                       ) -> list[WriteResult]:
    """One group commit's transaction, on the helper thread: BEGIN, the batch, COMMIT (which
    writes and fsyncs the WAL). A file locked by another process raises SQLite's busy error
    before anything is written; the caller waits and tries again.

    The usual batch, all new, goes in a few multi-row statements; otherwise (a provider's
    retry, or an item repeated within the batch) delivery by delivery, which attributes each
    item exactly.
    """
    new = _insert_all_new(conn, batch)
    results = new if new is not None else _insert(conn, batch)
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _insert(conn: sqlite3.Connection, batch: list[_DeliveryRows]) -> list[WriteResult]:
    """BEGIN and insert a batch; on success the transaction is left open for the COMMIT."""
    results: list[WriteResult] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for delivery_row, events, jobs, raw in batch:
            before = conn.total_changes
            conn.execute(_INSERT_DELIVERY, delivery_row)
            if conn.total_changes == before:
                # Seen before: a provider retry. Its items were stored with the first one.
                results.append(WriteResult(0, len(events) + len(jobs), True))
                continue
            if raw is not None:
                conn.execute(_INSERT_RAW, raw)
            before = conn.total_changes
            if events:
                # Reprocessed events correct what is stored (column 11 is the provenance).
                conn.executemany(_INSERT_EVENT, [e for e in events if e[11] != REPROCESS])
                conn.executemany(_UPSERT_EVENT, [e for e in events if e[11] == REPROCESS])
            if jobs:
                conn.executemany(_INSERT_JOB, jobs)
            accepted = conn.total_changes - before
            results.append(WriteResult(accepted, len(events) + len(jobs) - accepted, False))
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results
