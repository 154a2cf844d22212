"""Connections and the job queue in the embedded SQLite file.

The connections' tables (``users``, ``connections``, ``connect_states``) are their own
component in ``schema_migrations``; the job queue works on the event store's ``fetch_jobs``
table (its state columns came with the event store's migration 2), where the bridge writes
jobs in the same transaction as the webhook's delivery.

Each store has one connection on one helper thread (statements wait there for a lock another
process holds, never on the event loop) and commits with ``synchronous=FULL``: a rotated
refresh token that was acknowledged must survive a power cut, or the person has to connect
again. Transactions are short and never span a network call: the single-flight token refresh
takes a lease on the connection's row (compare and set) instead of holding SQLite's write
lock while the provider answers, so webhooks are never held up by a refresh.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from auren.adapters.sqlite import connect, immediate_transaction, migrate_component
from auren.connections import base
from auren.connections.base import Connection, ConnectState, JobRecord, Refresh, Tokens, User
from auren.connections.crypto import TokenCipher
from auren.errors import StoreUnavailable
from auren.events import FetchJob, iso

T = TypeVar("T")

COMPONENT = "connections"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS users (
        user_id    TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS connections (
        provider         TEXT NOT NULL,
        provider_user_id TEXT NOT NULL,
        user_id          TEXT NOT NULL,
        status           TEXT NOT NULL,
        scopes           TEXT NOT NULL,
        connected_at     TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        tokens           TEXT,
        expires_at       TEXT,
        token_type       TEXT,
        token_version    INTEGER NOT NULL DEFAULT 0,
        meta             TEXT NOT NULL DEFAULT '{}',
        last_fetch_at    TEXT,
        last_success_at  TEXT,
        last_error       TEXT,
        last_error_at    TEXT,
        refresh_owner    TEXT,
        refresh_until    TEXT,
        PRIMARY KEY (provider, provider_user_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS connections_user ON connections (user_id);
    CREATE TABLE IF NOT EXISTS connect_states (
        nonce      TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL,
        provider   TEXT NOT NULL,
        verifier   TEXT,
        expires_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)
# The event store's schema version that added the job state columns to fetch_jobs.
EVENTS_WITH_JOB_STATE = 2

_CONNECTION = ("SELECT provider, provider_user_id, user_id, status, scopes, connected_at, "
               "updated_at, tokens, expires_at, token_type, token_version, meta, last_fetch_at, "
               "last_success_at, last_error, last_error_at FROM connections")
_JOB = ("SELECT job_id, provider, user_id, provider_user_id, kind, object_id, params, "
        "received_at, status, attempts, rate_waits, due_at, last_error, updated_at "
        "FROM fetch_jobs")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def job_record(row: Sequence[Any]) -> JobRecord:
    """A row of ``_JOB``'s columns (PostgreSQL gives params as JSON text too)."""
    params = row[6] if isinstance(row[6], dict) else orjson.loads(row[6])
    received = row[7] if isinstance(row[7], datetime) else datetime.fromisoformat(row[7])
    job = FetchJob(job_id=row[0], provider=row[1], user_id=row[2], provider_user_id=row[3],
                   kind=row[4], object_id=row[5], params=params, received_at=received)

    def moment(value: Any) -> datetime | None:
        return value if isinstance(value, datetime) or value is None else _time(value)

    return JobRecord(job, row[8], int(row[9]), int(row[10]), moment(row[11]), row[12],
                     moment(row[13]))


def _due(record: JobRecord) -> datetime:
    return record.due_at or record.job.received_at


def encode_tokens(cipher: TokenCipher | None, tokens: Tokens | None,
                  context: str) -> tuple[str | None, str | None, str | None]:
    """(ciphertext, expires_at, token_type) as stored."""
    if tokens is None:
        return None, None, None
    if cipher is None:
        raise ValueError("this connection store was opened without the encryption key")
    sealed = cipher.encrypt(orjson.dumps({"a": tokens.access_token, "r": tokens.refresh_token}),
                            context)
    return sealed, iso(tokens.expires_at) if tokens.expires_at else None, tokens.token_type


def decode_tokens(cipher: TokenCipher | None, sealed: str | None,
                  expires_at: datetime | None, token_type: str | None,
                  context: str) -> Tokens | None:
    """The tokens, or None: none stored, or a store opened without the key (NEUROS reads
    connections' status, never their tokens)."""
    if not sealed or cipher is None:
        return None
    plain = orjson.loads(cipher.decrypt(sealed, context))
    return Tokens(plain["a"], plain.get("r"), expires_at, token_type or "bearer")


def seal_verifier(cipher: TokenCipher | None, state: ConnectState) -> str | None:
    if not state.verifier:
        return None
    if cipher is None:
        raise ValueError("this connection store was opened without the encryption key")
    return cipher.encrypt(state.verifier.encode(), "state:" + state.nonce)


def open_verifier(cipher: TokenCipher | None, nonce: str, sealed: str | None) -> str | None:
    if not sealed or cipher is None:
        return None
    return cipher.decrypt(sealed, "state:" + nonce).decode()


class SQLiteComponent:
    """One connection to the file on one helper thread; every call bounded in time."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-connections")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._thread, fn, conn),
                                          self._timeout_s)
        except TimeoutError as exc:
            raise StoreUnavailable("store did not answer in time", retry_after_s=2) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store error: {type(exc).__name__}",
                                   retry_after_s=2) from exc

    async def _connect(self, prepare: Callable[[sqlite3.Connection], None]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)

        def opened() -> sqlite3.Connection:
            conn = connect(self._path, self._timeout_s)
            prepare(conn)
            return conn

        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._thread, opened)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store error: {type(exc).__name__}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        self._thread.shutdown(wait=True)

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._run(lambda c: c.execute("SELECT 1").fetchone())
        return {"engine": "sqlite", "responseTime_ms": (time.perf_counter() - started) * 1000}


def _migrate(conn: sqlite3.Connection) -> None:
    migrate_component(conn, COMPONENT, MIGRATIONS)


class SQLiteConnections(SQLiteComponent):
    """``ConnectionStore`` in the embedded SQLite file; tokens encrypted with ``cipher`` (None:
    a reader of connections that never sees their tokens)."""

    def __init__(self, path: Path, cipher: TokenCipher | None, *, timeout_s: float = 10.0,
                 refresh_lease_s: float = 60.0) -> None:
        super().__init__(path, timeout_s)
        self._cipher = cipher
        self._refresh_lease_s = refresh_lease_s
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def open(self) -> None:
        await self._connect(_migrate)

    def _connection(self, row: Sequence[Any]) -> Connection:
        context = f"{row[0]}:{row[1]}"
        return Connection(
            provider=row[0], provider_user_id=row[1], user_id=row[2], status=row[3],
            scopes=tuple(orjson.loads(row[4])), connected_at=datetime.fromisoformat(row[5]),
            updated_at=datetime.fromisoformat(row[6]),
            tokens=decode_tokens(self._cipher, row[7], _time(row[8]), row[9], context),
            token_version=int(row[10]), meta=orjson.loads(row[11]),
            last_fetch_at=_time(row[12]), last_success_at=_time(row[13]), last_error=row[14],
            last_error_at=_time(row[15]))

    async def create_user(self, user_id: str, now: datetime) -> tuple[User, bool]:
        def run(c: sqlite3.Connection) -> tuple[str, bool]:
            with immediate_transaction(c):
                created = c.execute("INSERT OR IGNORE INTO users (user_id, created_at) "
                                    "VALUES (?, ?)", (user_id, iso(now))).rowcount == 1
                row = c.execute("SELECT created_at FROM users WHERE user_id = ?",
                                (user_id,)).fetchone()
            return str(row[0]), created

        created_at, created = await self._run(run)
        return User(user_id, datetime.fromisoformat(created_at)), created

    async def get_user(self, user_id: str) -> User | None:
        row = await self._run(lambda c: c.execute(
            "SELECT created_at FROM users WHERE user_id = ?", (user_id,)).fetchone())
        return User(user_id, datetime.fromisoformat(row[0])) if row else None

    async def save_state(self, state: ConnectState) -> None:
        verifier = seal_verifier(self._cipher, state)

        def run(c: sqlite3.Connection) -> None:
            with immediate_transaction(c):
                # Expired states are swept as new ones arrive: the table stays small.
                c.execute("DELETE FROM connect_states WHERE expires_at < ?",
                          (iso(state.expires_at - timedelta(days=1)),))
                c.execute("INSERT INTO connect_states (nonce, user_id, provider, verifier, "
                          "expires_at) VALUES (?, ?, ?, ?, ?)",
                          (state.nonce, state.user_id, state.provider, verifier,
                           iso(state.expires_at)))

        await self._run(run)

    async def take_state(self, nonce: str) -> ConnectState | None:
        row = await self._run(lambda c: c.execute(
            "DELETE FROM connect_states WHERE nonce = ? "
            "RETURNING user_id, provider, verifier, expires_at", (nonce,)).fetchone())
        if row is None:
            return None
        return ConnectState(nonce, row[0], row[1], open_verifier(self._cipher, nonce, row[2]),
                            datetime.fromisoformat(row[3]))

    async def upsert_connection(self, connection: Connection) -> Connection:
        sealed, expires, token_type = encode_tokens(self._cipher, connection.tokens,
                                                    connection.context)
        now = iso(connection.updated_at)

        def run(c: sqlite3.Connection) -> None:
            with immediate_transaction(c):
                c.execute(
                    "INSERT INTO connections (provider, provider_user_id, user_id, status, "
                    "scopes, connected_at, updated_at, tokens, expires_at, token_type, "
                    "token_version, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) "
                    "ON CONFLICT (provider, provider_user_id) DO UPDATE SET "
                    "user_id = excluded.user_id, status = excluded.status, "
                    "scopes = excluded.scopes, connected_at = excluded.connected_at, "
                    "updated_at = excluded.updated_at, tokens = excluded.tokens, "
                    "expires_at = excluded.expires_at, token_type = excluded.token_type, "
                    "token_version = connections.token_version + 1, "
                    "meta = json_patch(connections.meta, excluded.meta), "
                    "last_error = NULL, last_error_at = NULL, refresh_owner = NULL, "
                    "refresh_until = NULL",
                    (connection.provider, connection.provider_user_id, connection.user_id,
                     base.ACTIVE, orjson.dumps(list(connection.scopes)).decode(),
                     iso(connection.connected_at), now, sealed, expires, token_type,
                     orjson.dumps(connection.meta).decode()))

        await self._run(run)
        stored = await self.get_connection(*connection.key)
        assert stored is not None  # noqa: S101 - written just above
        return stored

    async def get_connection(self, provider: str, provider_user_id: str) -> Connection | None:
        row = await self._run(lambda c: c.execute(
            _CONNECTION + " WHERE provider = ? AND provider_user_id = ?",
            (provider, provider_user_id)).fetchone())
        return self._connection(row) if row else None

    async def connections_of(self, user_id: str) -> list[Connection]:
        rows = await self._run(lambda c: c.execute(
            _CONNECTION + " WHERE user_id = ? ORDER BY provider, provider_user_id",
            (user_id,)).fetchall())
        return [self._connection(row) for row in rows]

    async def _update(self, sql: str, args: Sequence[Any]) -> int:
        def run(c: sqlite3.Connection) -> int:
            with immediate_transaction(c):
                return int(c.execute(sql, args).rowcount)

        return await self._run(run)

    async def set_status(self, provider: str, provider_user_id: str, status: str,
                         error: str | None, now: datetime) -> None:
        await self._update(
            "UPDATE connections SET status = ?, updated_at = ?, "
            "last_error = coalesce(?, last_error), "
            "last_error_at = CASE WHEN ? IS NULL THEN last_error_at ELSE ? END "
            # A disconnected account stays so: a job that was running when it was
            # disconnected (its grant now revoked) must not bring it back.
            "WHERE provider = ? AND provider_user_id = ? AND status <> ?",
            (status, iso(now), error, error, iso(now), provider, provider_user_id,
             base.DISCONNECTED))

    async def record_fetch(self, provider: str, provider_user_id: str, *, ok: bool,
                           error: str | None, now: datetime) -> None:
        if ok:
            await self._update("UPDATE connections SET last_fetch_at = ?, last_success_at = ? "
                               "WHERE provider = ? AND provider_user_id = ?",
                               (iso(now), iso(now), provider, provider_user_id))
        else:
            await self._update("UPDATE connections SET last_fetch_at = ?, last_error = ?, "
                               "last_error_at = ? WHERE provider = ? AND provider_user_id = ?",
                               (iso(now), error, iso(now), provider, provider_user_id))

    async def merge_meta(self, provider: str, provider_user_id: str,
                         meta: dict[str, Any]) -> None:
        await self._update("UPDATE connections SET meta = json_patch(meta, ?) "
                           "WHERE provider = ? AND provider_user_id = ?",
                           (orjson.dumps(meta).decode(), provider, provider_user_id))

    async def forget(self, provider: str, provider_user_id: str, now: datetime) -> None:
        await self._update("UPDATE connections SET tokens = NULL, expires_at = NULL, "
                           "status = ?, updated_at = ?, token_version = token_version + 1 "
                           "WHERE provider = ? AND provider_user_id = ?",
                           (base.DISCONNECTED, iso(now), provider, provider_user_id))

    async def refresh_tokens(self, provider: str, provider_user_id: str, seen_version: int,
                             refresh: Refresh, now: datetime) -> Connection:
        key = (provider, provider_user_id)
        # One refresh per connection in this process; the row's lease covers the others.
        async with self._locks.setdefault(key, asyncio.Lock()):
            owner = uuid.uuid4().hex
            deadline = time.monotonic() + self._refresh_lease_s
            while True:
                current = await self.get_connection(provider, provider_user_id)
                if current is None:
                    raise LookupError(f"no connection {provider}:{provider_user_id}")
                if current.token_version != seen_version:
                    return current  # refreshed meanwhile, here or by another process
                moment = datetime.now(now.tzinfo)
                until = moment + timedelta(seconds=self._refresh_lease_s)
                taken = await self._update(
                    "UPDATE connections SET refresh_owner = ?, refresh_until = ? "
                    "WHERE provider = ? AND provider_user_id = ? AND token_version = ? "
                    "AND (refresh_until IS NULL OR refresh_until < ?)",
                    (owner, iso(until), provider, provider_user_id, seen_version,
                     iso(moment)))
                if taken:
                    break
                if time.monotonic() > deadline:
                    raise StoreUnavailable("another process is refreshing this connection's "
                                           "tokens", retry_after_s=5)
                await asyncio.sleep(0.05)
            try:
                tokens = await refresh(current)
            except BaseException:
                await self._update("UPDATE connections SET refresh_owner = NULL, "
                                   "refresh_until = NULL WHERE provider = ? AND "
                                   "provider_user_id = ? AND refresh_owner = ?",
                                   (provider, provider_user_id, owner))
                raise
            sealed, expires, token_type = encode_tokens(self._cipher, tokens, current.context)
            await self._update(
                "UPDATE connections SET tokens = ?, expires_at = ?, token_type = ?, "
                "token_version = token_version + 1, updated_at = ?, refresh_owner = NULL, "
                "refresh_until = NULL WHERE provider = ? AND provider_user_id = ? "
                "AND refresh_owner = ?",
                (sealed, expires, token_type, iso(now), provider, provider_user_id, owner))
            found = await self.get_connection(provider, provider_user_id)
            assert found is not None  # noqa: S101 - connections are never deleted
            return found

    async def status_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._run(lambda c: c.execute(
            "SELECT provider, status, count(*) FROM connections GROUP BY 1, 2").fetchall())
        return {(r[0], r[1]): int(r[2]) for r in rows}


    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the person, their connections (tokens included) and connect links."""
        def run(c: sqlite3.Connection) -> dict[str, int]:
            with immediate_transaction(c):
                return {table: int(c.execute(f"DELETE FROM {table} WHERE user_id = ?",  # noqa: S608
                                             (user_id,)).rowcount)
                        for table in ("connections", "connect_states", "users")}

        return await self._run(run)


class SQLiteJobs(SQLiteComponent):
    """``JobQueue`` on the event store's ``fetch_jobs`` table (open the event store first: its
    migrations make the table)."""

    async def open(self) -> None:
        def check(conn: sqlite3.Connection) -> None:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < EVENTS_WITH_JOB_STATE:
                raise sqlite3.OperationalError("the event store's schema has no job state yet")

        await self._connect(check)

    async def add(self, jobs: Sequence[FetchJob]) -> int:
        rows = [(j.job_id, j.provider, j.user_id, j.provider_user_id, j.kind, j.object_id,
                 orjson.dumps(j.params).decode(), iso(j.received_at)) for j in jobs]

        def run(c: sqlite3.Connection) -> int:
            with immediate_transaction(c):
                before = c.total_changes
                c.executemany("INSERT OR IGNORE INTO fetch_jobs (job_id, provider, user_id, "
                              "provider_user_id, kind, object_id, params, received_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                return c.total_changes - before

        return await self._run(run)

    async def claim(self, limit: int, lease_s: float, now: datetime) -> list[JobRecord]:
        at, until = iso(now), iso(now + timedelta(seconds=lease_s))

        args = (base.PENDING, at, base.RUNNING, at)

        def run(c: sqlite3.Connection) -> list[Any]:
            # An idle fetcher polls every second or so, and the file's one write lock is the
            # webhook path's: a plain read first, and the lock only when a job is due.
            if c.execute("SELECT 1 FROM fetch_jobs WHERE (status = ? AND (due_at IS NULL OR "
                         "due_at <= ?)) OR (status = ? AND lease_until < ?) LIMIT 1",
                         args).fetchone() is None:
                return []
            with immediate_transaction(c):
                return c.execute(
                    "UPDATE fetch_jobs SET status = ?, lease_until = ?, "
                    "attempts = attempts + 1, updated_at = ? WHERE job_id IN ("
                    "SELECT job_id FROM fetch_jobs WHERE (status = ? AND (due_at IS NULL OR "
                    "due_at <= ?)) OR (status = ? AND lease_until < ?) "
                    "ORDER BY coalesce(due_at, received_at) LIMIT ?) "
                    "RETURNING job_id, provider, user_id, provider_user_id, kind, object_id, "
                    "params, received_at, status, attempts, rate_waits, due_at, last_error, "
                    "updated_at",
                    (base.RUNNING, until, at, *args, limit)).fetchall()

        # RETURNING gives no order: the oldest due first, as they were chosen.
        return sorted((job_record(row) for row in await self._run(run)), key=_due)

    async def _update(self, sql: str, args: Sequence[Any]) -> int:
        def run(c: sqlite3.Connection) -> int:
            with immediate_transaction(c):
                return int(c.execute(sql, args).rowcount)

        return await self._run(run)

    async def renew(self, job_ids: Sequence[str], lease_until: datetime) -> None:
        for job_id in job_ids:
            await self._update("UPDATE fetch_jobs SET lease_until = ? WHERE job_id = ? "
                               "AND status = ?", (iso(lease_until), job_id, base.RUNNING))

    async def finish(self, job_id: str, state: str, now: datetime, *,
                     error: str | None = None, due_at: datetime | None = None,
                     rate_limited: bool = False) -> None:
        wait = 1 if rate_limited else 0
        await self._update(
            "UPDATE fetch_jobs SET status = ?, due_at = ?, last_error = ?, updated_at = ?, "
            "lease_until = NULL, attempts = attempts - ?, rate_waits = rate_waits + ? "
            "WHERE job_id = ?",
            (state, iso(due_at) if due_at else None, error, iso(now), wait, wait, job_id))

    async def get(self, job_id: str) -> JobRecord | None:
        row = await self._run(lambda c: c.execute(
            _JOB + " WHERE job_id = ?", (job_id,)).fetchone())
        return job_record(row) if row else None

    async def listing(self, state: str | None, provider: str | None,
                      limit: int) -> list[JobRecord]:
        sql, args = [_JOB, "WHERE 1 = 1"], []
        if state is not None:
            sql.append("AND status = ?")
            args.append(state)
        if provider is not None:
            sql.append("AND provider = ?")
            args.append(provider)
        sql.append("ORDER BY coalesce(updated_at, received_at) DESC, job_id DESC LIMIT ?")
        statement = " ".join(sql)
        rows = await self._run(lambda c: c.execute(statement, [*args, limit]).fetchall())
        return [job_record(row) for row in rows]

    async def retry(self, job_ids: Sequence[str] | None, now: datetime, *,
                    state: str = base.DEAD, provider: str | None = None) -> int:
        reset = ("UPDATE fetch_jobs SET status = ?, attempts = 0, rate_waits = 0, due_at = NULL, "
                 "lease_until = NULL, updated_at = ? WHERE ")
        if job_ids is not None:
            total = 0
            for job_id in job_ids:
                total += await self._update(reset + "job_id = ?", (base.PENDING, iso(now), job_id))
            return total
        if provider is None:
            return await self._update(reset + "status = ?", (base.PENDING, iso(now), state))
        return await self._update(reset + "status = ? AND provider = ?",
                                  (base.PENDING, iso(now), state, provider))

    async def release(self, provider: str, provider_user_id: str, now: datetime) -> int:
        return await self._update(
            "UPDATE fetch_jobs SET status = ?, due_at = NULL, updated_at = ? "
            "WHERE status = ? AND provider = ? AND provider_user_id = ?",
            (base.PENDING, iso(now), base.BLOCKED, provider, provider_user_id))

    async def counts(self) -> dict[tuple[str, str], int]:
        rows = await self._run(lambda c: c.execute(
            "SELECT provider, status, count(*) FROM fetch_jobs GROUP BY 1, 2").fetchall())
        return {(r[0], r[1]): int(r[2]) for r in rows}
