"""Connections and the job queue in PostgreSQL: the full stack's, shared by every bridge and
fetcher process.

The connections' tables mirror the SQLite store's (their migrations are the ``connections`` row
of ``schema_migrations``, under the same advisory lock as every schema change). The job queue
works on the event store's ``fetch_jobs`` table, filled by the sink and by the fetcher's
consumer of the notifications topic; fetchers claim due jobs with ``FOR UPDATE SKIP LOCKED``,
so several processes never run one job at once.

**Single-flight refresh across processes.** WHOOP, Fitbit, Withings and Garmin rotate refresh
tokens: two refreshes with the same one would leave one process with a dead token. A refresh
takes the connection's row lock (``SELECT … FOR UPDATE``) and holds it while the provider
answers (a finite timeout); a second process waits for the lock, then sees the new token
version and uses the new tokens instead of refreshing again. The connections' pool has no
circuit breaker: a refresh holds its call for as long as the provider takes, which would look
like a stalled database to a breaker's stall rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from auren.adapters.postgres import PostgresPool, erase_rows, migrate
from auren.connections import base
from auren.connections.base import Connection, ConnectState, JobRecord, Refresh, Tokens, User
from auren.connections.crypto import TokenCipher
from auren.connections.sqlite import (
    decode_tokens,
    encode_tokens,
    job_record,
    open_verifier,
    seal_verifier,
)
from auren.errors import StoreUnavailable
from auren.events import FetchJob

COMPONENT = "connections"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        user_id    text PRIMARY KEY,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE connections (
        provider         text NOT NULL,
        provider_user_id text NOT NULL,
        user_id          text NOT NULL,
        status           text NOT NULL,
        scopes           jsonb NOT NULL,
        connected_at     timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL,
        tokens           text,
        expires_at       timestamptz,
        token_type       text,
        token_version    integer NOT NULL DEFAULT 0,
        meta             jsonb NOT NULL DEFAULT '{}',
        last_fetch_at    timestamptz,
        last_success_at  timestamptz,
        last_error       text,
        last_error_at    timestamptz,
        PRIMARY KEY (provider, provider_user_id)
    );
    CREATE INDEX connections_user ON connections (user_id);
    CREATE TABLE connect_states (
        nonce      text PRIMARY KEY,
        user_id    text NOT NULL,
        provider   text NOT NULL,
        verifier   text,
        expires_at timestamptz NOT NULL
    );
    """,
)
EVENTS_WITH_JOB_STATE = 2

_CONNECTION = ("SELECT provider, provider_user_id, user_id, status, scopes::text, connected_at, "
               "updated_at, tokens, expires_at, token_type, token_version, meta::text, "
               "last_fetch_at, last_success_at, last_error, last_error_at FROM connections")
_JOB_COLUMNS = ("job_id, provider, user_id, provider_user_id, kind, object_id, params::text, "
                "received_at, status, attempts, rate_waits, due_at, last_error, updated_at")
_RETURNING = " RETURNING " + _CONNECTION.removeprefix("SELECT ").split(" FROM ")[0]  # noqa: S608
# Statements joined from the fixed column lists above; every value is a bound parameter.
_UPSERT = (
    "INSERT INTO connections (provider, provider_user_id, user_id, status, scopes, "
    "connected_at, updated_at, tokens, expires_at, token_type, token_version, meta) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, 1, $11::jsonb) "
    "ON CONFLICT (provider, provider_user_id) DO UPDATE SET "
    "user_id = excluded.user_id, status = excluded.status, scopes = excluded.scopes, "
    "connected_at = excluded.connected_at, updated_at = excluded.updated_at, "
    "tokens = excluded.tokens, expires_at = excluded.expires_at, "
    "token_type = excluded.token_type, token_version = connections.token_version + 1, "
    "meta = connections.meta || excluded.meta, last_error = NULL, last_error_at = NULL"
    + _RETURNING)
_STORE_TOKENS = (
    "UPDATE connections SET tokens = $1, expires_at = $2, token_type = $3, "  # noqa: S608
    "token_version = token_version + 1, updated_at = $4 "
    "WHERE provider = $5 AND provider_user_id = $6" + _RETURNING)
_CLAIM = (
    "UPDATE fetch_jobs SET status = $1, lease_until = $2, attempts = attempts + 1, "  # noqa: S608
    "updated_at = $3 WHERE job_id IN (SELECT job_id FROM fetch_jobs WHERE "
    "(status = $4 AND (due_at IS NULL OR due_at <= $3)) OR "
    "(status = $1 AND lease_until < $3) ORDER BY coalesce(due_at, received_at) "
    "LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING " + _JOB_COLUMNS)
_JOB = f"SELECT {_JOB_COLUMNS} FROM fetch_jobs"  # noqa: S608


def _script(sql: str) -> Callable[[Any], Awaitable[Any]]:
    async def run(conn: Any) -> Any:
        return await conn.execute(sql)

    return run


async def upgrade(conn: Any) -> int:
    async with conn.transaction():
        return await migrate(conn, COMPONENT, [_script(sql) for sql in MIGRATIONS])


async def _events_ready(conn: Any) -> None:
    version = await conn.fetchval("SELECT version FROM schema_migrations "
                                  "WHERE component = 'events'")
    if (version or 0) < EVENTS_WITH_JOB_STATE:
        raise StoreUnavailable("the event store's schema has no job state yet: open the event "
                               "store first (`auren db upgrade`)")


def _count(status: str) -> int:
    """Rows a statement touched, from its command tag ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresConnections:
    """``ConnectionStore`` on PostgreSQL; tokens encrypted with ``cipher``."""

    def __init__(self, pool: PostgresPool, cipher: TokenCipher | None) -> None:
        self._pool = pool
        self._cipher = cipher
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def open(self) -> None:
        await self._pool.open(upgrade)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> dict[str, Any]:
        return await self._pool.ping()

    def _connection(self, row: Any) -> Connection:
        return Connection(
            provider=row[0], provider_user_id=row[1], user_id=row[2], status=row[3],
            scopes=tuple(orjson.loads(row[4])), connected_at=row[5], updated_at=row[6],
            tokens=decode_tokens(self._cipher, row[7], row[8], row[9], f"{row[0]}:{row[1]}"),
            token_version=int(row[10]), meta=orjson.loads(row[11]), last_fetch_at=row[12],
            last_success_at=row[13], last_error=row[14], last_error_at=row[15])

    async def create_user(self, user_id: str, now: datetime) -> tuple[User, bool]:
        async def run(conn: Any) -> tuple[datetime, bool]:
            inserted = await conn.fetchval(
                "INSERT INTO users (user_id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING "
                "RETURNING created_at", user_id, now)
            if inserted is not None:
                return inserted, True
            return await conn.fetchval("SELECT created_at FROM users WHERE user_id = $1",
                                       user_id), False

        created_at, created = await self._pool.run(run)
        return User(user_id, created_at), created

    async def get_user(self, user_id: str) -> User | None:
        created = await self._pool.run(lambda conn: conn.fetchval(
            "SELECT created_at FROM users WHERE user_id = $1", user_id), retry=True)
        return User(user_id, created) if created is not None else None

    async def save_state(self, state: ConnectState) -> None:
        verifier = seal_verifier(self._cipher, state)

        async def run(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM connect_states WHERE expires_at < $1",
                                   state.expires_at - timedelta(days=1))
                await conn.execute("INSERT INTO connect_states (nonce, user_id, provider, "
                                   "verifier, expires_at) VALUES ($1, $2, $3, $4, $5)",
                                   state.nonce, state.user_id, state.provider, verifier,
                                   state.expires_at)

        await self._pool.run(run)

    async def take_state(self, nonce: str) -> ConnectState | None:
        row = await self._pool.run(lambda conn: conn.fetchrow(
            "DELETE FROM connect_states WHERE nonce = $1 "
            "RETURNING user_id, provider, verifier, expires_at", nonce))
        if row is None:
            return None
        return ConnectState(nonce, row[0], row[1], open_verifier(self._cipher, nonce, row[2]),
                            row[3])

    async def upsert_connection(self, connection: Connection) -> Connection:
        sealed, _, token_type = encode_tokens(self._cipher, connection.tokens,
                                              connection.context)
        expires = connection.tokens.expires_at if connection.tokens else None
        row = await self._pool.run(lambda conn: conn.fetchrow(
            _UPSERT, connection.provider, connection.provider_user_id, connection.user_id,
            base.ACTIVE, orjson.dumps(list(connection.scopes)).decode(), connection.connected_at,
            connection.updated_at, sealed, expires, token_type,
            orjson.dumps(connection.meta).decode()))
        return self._connection(row)

    async def get_connection(self, provider: str, provider_user_id: str) -> Connection | None:
        row = await self._pool.run(lambda conn: conn.fetchrow(
            _CONNECTION + " WHERE provider = $1 AND provider_user_id = $2",
            provider, provider_user_id), retry=True)
        return self._connection(row) if row else None

    async def connections_of(self, user_id: str) -> list[Connection]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            _CONNECTION + " WHERE user_id = $1 ORDER BY provider, provider_user_id", user_id),
            retry=True)
        return [self._connection(row) for row in rows]

    async def _execute(self, sql: str, *args: Any) -> int:
        return _count(await self._pool.run(lambda conn: conn.execute(sql, *args)))

    async def set_status(self, provider: str, provider_user_id: str, status: str,
                         error: str | None, now: datetime) -> None:
        await self._execute(
            "UPDATE connections SET status = $1, updated_at = $2, "
            "last_error = coalesce($3, last_error), "
            "last_error_at = CASE WHEN $3::text IS NULL THEN last_error_at ELSE $2 END "
            # A disconnected account stays so (a job running at its disconnection).
            "WHERE provider = $4 AND provider_user_id = $5 AND status <> $6",
            status, now, error, provider, provider_user_id, base.DISCONNECTED)

    async def record_fetch(self, provider: str, provider_user_id: str, *, ok: bool,
                           error: str | None, now: datetime) -> None:
        if ok:
            await self._execute("UPDATE connections SET last_fetch_at = $1, "
                                "last_success_at = $1 WHERE provider = $2 AND "
                                "provider_user_id = $3", now, provider, provider_user_id)
        else:
            await self._execute("UPDATE connections SET last_fetch_at = $1, last_error = $2, "
                                "last_error_at = $1 WHERE provider = $3 AND "
                                "provider_user_id = $4", now, error, provider, provider_user_id)

    async def merge_meta(self, provider: str, provider_user_id: str,
                         meta: dict[str, Any]) -> None:
        await self._execute("UPDATE connections SET meta = meta || $1::jsonb WHERE provider = $2 "
                            "AND provider_user_id = $3", orjson.dumps(meta).decode(), provider,
                            provider_user_id)

    async def forget(self, provider: str, provider_user_id: str, now: datetime) -> None:
        await self._execute("UPDATE connections SET tokens = NULL, expires_at = NULL, "
                            "status = $1, updated_at = $2, token_version = token_version + 1 "
                            "WHERE provider = $3 AND provider_user_id = $4",
                            base.DISCONNECTED, now, provider, provider_user_id)

    async def refresh_tokens(self, provider: str, provider_user_id: str, seen_version: int,
                             refresh: Refresh, now: datetime) -> Connection:
        async def run(conn: Any) -> tuple[Connection, BaseException | None]:
            async with conn.transaction():
                row = await conn.fetchrow(
                    _CONNECTION + " WHERE provider = $1 AND provider_user_id = $2 FOR UPDATE",
                    provider, provider_user_id)
                if row is None:
                    raise LookupError(f"no connection {provider}:{provider_user_id}")
                current = self._connection(row)
                if current.token_version != seen_version:
                    return current, None  # another task or process refreshed meanwhile
                try:
                    tokens: Tokens = await refresh(current)
                except Exception as exc:  # noqa: BLE001 - handed back, raised below
                    # Not raised in here: the pool would take a provider's failure for the
                    # database's. Nothing was written; the lock goes with the transaction.
                    return current, exc
                sealed, _, token_type = encode_tokens(self._cipher, tokens, current.context)
                row = await conn.fetchrow(_STORE_TOKENS, sealed, tokens.expires_at, token_type,
                                          now, provider, provider_user_id)
                return self._connection(row), None

        async with self._locks.setdefault((provider, provider_user_id), asyncio.Lock()):
            found, failure = await self._pool.run(run)
        if failure is not None:
            raise failure
        return found

    async def status_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            "SELECT provider, status, count(*) FROM connections GROUP BY 1, 2"), retry=True)
        return {(r[0], r[1]): int(r[2]) for r in rows}


    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the person, their connections (tokens included) and connect links, and
        VACUUM each table."""
        return {table: await erase_rows(self._pool, table, [("user_id = $1", (user_id,))])
                for table in ("connections", "connect_states", "users")}


class PostgresJobs:
    """``JobQueue`` on the event store's ``fetch_jobs`` table."""

    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await self._pool.open(_events_ready)

    async def close(self) -> None:
        await self._pool.close()

    async def add(self, jobs: Sequence[FetchJob]) -> int:
        if not jobs:
            return 0
        status = await self._pool.run(lambda conn: conn.execute(
            "INSERT INTO fetch_jobs (job_id, provider, user_id, provider_user_id, kind, "
            "object_id, params, received_at) SELECT * FROM unnest($1::text[], $2::text[], "
            "$3::text[], $4::text[], $5::text[], $6::text[], $7::text[]::jsonb[], "
            "$8::timestamptz[]) ON CONFLICT (job_id) DO NOTHING",
            [j.job_id for j in jobs], [j.provider for j in jobs], [j.user_id for j in jobs],
            [j.provider_user_id for j in jobs], [j.kind for j in jobs],
            [j.object_id for j in jobs], [orjson.dumps(j.params).decode() for j in jobs],
            [j.received_at for j in jobs]))
        return _count(status)

    async def claim(self, limit: int, lease_s: float, now: datetime) -> list[JobRecord]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            _CLAIM, base.RUNNING, now + timedelta(seconds=lease_s), now, base.PENDING, limit))
        # RETURNING gives no order: the oldest due first, as they were chosen.
        return sorted((job_record(row) for row in rows),
                      key=lambda r: r.due_at or r.job.received_at)

    async def _execute(self, sql: str, *args: Any) -> int:
        return _count(await self._pool.run(lambda conn: conn.execute(sql, *args)))

    async def renew(self, job_ids: Sequence[str], lease_until: datetime) -> None:
        if job_ids:
            await self._execute("UPDATE fetch_jobs SET lease_until = $1 WHERE job_id = "
                                "ANY($2::text[]) AND status = $3", lease_until, list(job_ids),
                                base.RUNNING)

    async def finish(self, job_id: str, state: str, now: datetime, *,
                     error: str | None = None, due_at: datetime | None = None,
                     rate_limited: bool = False) -> None:
        wait = 1 if rate_limited else 0
        await self._execute(
            "UPDATE fetch_jobs SET status = $1, due_at = $2, last_error = $3, updated_at = $4, "
            "lease_until = NULL, attempts = attempts - $5, rate_waits = rate_waits + $5 "
            "WHERE job_id = $6", state, due_at, error, now, wait, job_id)

    async def get(self, job_id: str) -> JobRecord | None:
        row = await self._pool.run(lambda conn: conn.fetchrow(
            _JOB + " WHERE job_id = $1", job_id), retry=True)
        return job_record(row) if row else None

    async def listing(self, state: str | None, provider: str | None,
                      limit: int) -> list[JobRecord]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            _JOB + " WHERE ($1::text IS NULL OR status = $1) "
            "AND ($2::text IS NULL OR provider = $2) "
            "ORDER BY coalesce(updated_at, received_at) DESC, job_id DESC LIMIT $3",
            state, provider, limit), retry=True)
        return [job_record(row) for row in rows]

    async def retry(self, job_ids: Sequence[str] | None, now: datetime, *,
                    state: str = base.DEAD, provider: str | None = None) -> int:
        reset = ("UPDATE fetch_jobs SET status = $1, attempts = 0, rate_waits = 0, "
                 "due_at = NULL, lease_until = NULL, updated_at = $2 WHERE ")
        if job_ids is not None:
            return await self._execute(reset + "job_id = ANY($3::text[])", base.PENDING, now,
                                       list(job_ids))
        return await self._execute(reset + "status = $3 AND ($4::text IS NULL OR provider = $4)",
                                   base.PENDING, now, state, provider)

    async def release(self, provider: str, provider_user_id: str, now: datetime) -> int:
        return await self._execute(
            "UPDATE fetch_jobs SET status = $1, due_at = NULL, updated_at = $2 "
            "WHERE status = $3 AND provider = $4 AND provider_user_id = $5",
            base.PENDING, now, base.BLOCKED, provider, provider_user_id)

    async def counts(self) -> dict[tuple[str, str], int]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            "SELECT provider, status, count(*) FROM fetch_jobs GROUP BY 1, 2"), retry=True)
        return {(r[0], r[1]): int(r[2]) for r in rows}
