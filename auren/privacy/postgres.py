"""Consents and the audit log in PostgreSQL, shared by every bridge process of the full stack.
Their tables mirror the SQLite store's; the migrations are the ``privacy`` row of
``schema_migrations``, applied under the same advisory lock as every schema change. The pool
has no circuit breaker of its own: an audit record is written before the data it accounts for
is answered, so a database that fails refuses the read (503) rather than serving it
unrecorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from auren.adapters.postgres import PostgresPool, migrate_scripts
from auren.privacy.base import (
    AuditQuery,
    AuditRecord,
    Consent,
    GroupedAppends,
    Withdrawn,
    actor_of,
    withdrawn_groups,
)
from auren.privacy.sqlite import audit_row, consent_row

COMPONENT = "privacy"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE consents (
        consent_id       text PRIMARY KEY,
        user_id          text NOT NULL,
        provider         text NOT NULL,
        provider_user_id text,
        purpose          text NOT NULL,
        scopes           text NOT NULL,
        text_version     text NOT NULL,
        given_at         timestamptz NOT NULL,
        withdrawn_at     timestamptz
    );
    CREATE INDEX consents_user ON consents (user_id, provider);
    CREATE TABLE audit_log (
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         timestamptz NOT NULL,
        actor      text NOT NULL,
        action     text NOT NULL,
        user_id    text,
        route      text NOT NULL,
        client     text,
        outcome    integer NOT NULL,
        request_id text
    );
    CREATE INDEX audit_user ON audit_log (user_id, seq);
    CREATE INDEX audit_actor ON audit_log (actor);
    """,
)
_CONSENT = ("SELECT consent_id, user_id, provider, provider_user_id, purpose, scopes, "
            "text_version, given_at, withdrawn_at FROM consents")
# Rows of (person, provider) pairs none of whose consents is in force.
_WITHDRAWN = _CONSENT + (" AS c WHERE NOT EXISTS (SELECT 1 FROM consents a WHERE "  # noqa: S608
                         "a.user_id = c.user_id AND a.provider = c.provider "
                         "AND a.withdrawn_at IS NULL)")
_AUDIT = ("SELECT seq, at, actor, action, user_id, route, client, outcome, request_id "
          "FROM audit_log")


async def upgrade(conn: Any) -> int:
    return await migrate_scripts(conn, COMPONENT, MIGRATIONS)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class _Postgres:
    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await self._pool.open(upgrade)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> dict[str, Any]:
        return await self._pool.ping()


class PostgresConsents(_Postgres):
    async def record(self, consent: Consent) -> None:
        await self._pool.run(lambda conn: conn.execute(
            "INSERT INTO consents (consent_id, user_id, provider, provider_user_id, purpose, "
            "scopes, text_version, given_at, withdrawn_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            consent.consent_id, consent.user_id, consent.provider, consent.provider_user_id,
            consent.purpose, orjson.dumps(list(consent.scopes)).decode(),
            consent.text_version, consent.given_at, consent.withdrawn_at))

    async def consents_of(self, user_id: str) -> list[Consent]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            _CONSENT + " WHERE user_id = $1 ORDER BY given_at, consent_id", user_id),
            retry=True)
        return [consent_row(r) for r in rows]

    async def withdraw(self, user_id: str, provider: str, now: datetime) -> list[Consent]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            "UPDATE consents SET withdrawn_at = $1 WHERE user_id = $2 AND provider = $3 "
            "AND withdrawn_at IS NULL RETURNING consent_id, user_id, provider, "
            "provider_user_id, purpose, scopes, text_version, given_at, withdrawn_at",
            now, user_id, provider))
        return [consent_row(r) for r in rows]

    async def withdrawn(self) -> list[Withdrawn]:
        rows = await self._pool.run(lambda conn: conn.fetch(_WITHDRAWN), retry=True)
        return withdrawn_groups([consent_row(r) for r in rows])

    async def is_withdrawn(self, user_id: str, provider: str) -> bool:
        row = await self._pool.run(lambda conn: conn.fetchrow(
            "SELECT count(*), count(withdrawn_at) FROM consents WHERE user_id = $1 "
            "AND provider = $2", user_id, provider), retry=True)
        return bool(row[0]) and row[0] == row[1]

    async def erase_user(self, user_id: str) -> int:
        return _count(await self._pool.run(lambda conn: conn.execute(
            "DELETE FROM consents WHERE user_id = $1", user_id)))


class PostgresAudit(_Postgres):
    def __init__(self, pool: PostgresPool) -> None:
        super().__init__(pool)
        self._appends = GroupedAppends(self._append_all)

    async def append(self, record: AuditRecord) -> int:
        return await self._appends.append(record)

    async def _append_all(self, records: list[AuditRecord]) -> list[int]:
        async def run(conn: Any) -> list[int]:
            async with conn.transaction():
                return [int(await conn.fetchval(
                    "INSERT INTO audit_log (at, actor, action, user_id, route, client, "
                    "outcome, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                    "RETURNING seq", r.at, r.actor, r.action, r.user_id, r.route, r.client,
                    r.outcome, r.request_id)) for r in records]

        return await self._pool.run(run)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = ["seq > $1"]
        args: list[Any] = [query.after_seq or 0]
        for column, value in (("user_id", query.user_id), ("action", query.action),
                              ("at", query.since)):
            if value is not None:
                args.append(value)
                where.append(f"{column} {'>=' if column == 'at' else '='} ${len(args)}")
        args.append(query.limit)
        sql = (f"{_AUDIT} WHERE {' AND '.join(where)} "
               f"ORDER BY seq LIMIT ${len(args)}")
        rows = await self._pool.run(lambda conn: conn.fetch(sql, *args), retry=True)
        return [audit_row(r) for r in rows]

    async def erase_user(self, user_id: str, pseudonym: str) -> int:
        async def run(conn: Any) -> int:
            async with conn.transaction():
                named = await conn.execute("UPDATE audit_log SET user_id = $1 "
                                           "WHERE user_id = $2", pseudonym, user_id)
                acted = await conn.execute("UPDATE audit_log SET actor = $1 WHERE actor = $2",
                                           actor_of(pseudonym), actor_of(user_id))
                return _count(named) + _count(acted)

        return await self._pool.run(run)
