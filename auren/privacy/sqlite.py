"""Consents and the audit log in the embedded SQLite file: their tables are the ``privacy``
component of ``schema_migrations``. Every write commits with ``synchronous=FULL`` before it is
acknowledged (an audit record is written before the data it accounts for is answered), on the
connections' helper pattern: one connection on one helper thread, every call bounded in time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from auren.adapters.sqlite import immediate_transaction, migrate_component
from auren.connections.sqlite import SQLiteComponent
from auren.events import iso
from auren.privacy.base import (
    AuditQuery,
    AuditRecord,
    Consent,
    GroupedAppends,
    Withdrawn,
    actor_of,
    withdrawn_groups,
)

COMPONENT = "privacy"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS consents (
        consent_id       TEXT PRIMARY KEY,
        user_id          TEXT NOT NULL,
        provider         TEXT NOT NULL,
        provider_user_id TEXT,
        purpose          TEXT NOT NULL,
        scopes           TEXT NOT NULL,
        text_version     TEXT NOT NULL,
        given_at         TEXT NOT NULL,
        withdrawn_at     TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS consents_user ON consents (user_id, provider);
    CREATE TABLE IF NOT EXISTS audit_log (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        user_id    TEXT,
        route      TEXT NOT NULL,
        client     TEXT,
        outcome    INTEGER NOT NULL,
        request_id TEXT
    );
    CREATE INDEX IF NOT EXISTS audit_user ON audit_log (user_id, seq);
    CREATE INDEX IF NOT EXISTS audit_actor ON audit_log (actor)
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


def _migrate(conn: sqlite3.Connection) -> None:
    migrate_component(conn, COMPONENT, MIGRATIONS)


def consent_row(row: Sequence[Any]) -> Consent:
    """A row of ``_CONSENT``'s columns (PostgreSQL gives datetimes, SQLite text)."""

    def moment(value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)

    given = moment(row[7])
    assert given is not None  # noqa: S101 - NOT NULL
    return Consent(row[0], row[1], row[2], row[3], row[4], tuple(orjson.loads(row[5])),
                   row[6], given, moment(row[8]))


def audit_row(row: Sequence[Any]) -> AuditRecord:
    at = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(row[1])
    return AuditRecord(at=at, actor=row[2], action=row[3], user_id=row[4], route=row[5],
                       client=row[6], outcome=int(row[7]), request_id=row[8], seq=int(row[0]))


class SQLiteConsents(SQLiteComponent):
    def __init__(self, path: Path, *, timeout_s: float = 10.0) -> None:
        super().__init__(path, timeout_s)

    async def open(self) -> None:
        await self._connect(_migrate)

    async def _write(self, sql: str, args: Sequence[Any]) -> int:
        def run(c: sqlite3.Connection) -> int:
            with immediate_transaction(c):
                return int(c.execute(sql, args).rowcount)

        return await self._run(run)

    async def record(self, consent: Consent) -> None:
        await self._write(
            "INSERT INTO consents (consent_id, user_id, provider, provider_user_id, purpose, "
            "scopes, text_version, given_at, withdrawn_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (consent.consent_id, consent.user_id, consent.provider, consent.provider_user_id,
             consent.purpose, orjson.dumps(list(consent.scopes)).decode(),
             consent.text_version, iso(consent.given_at),
             iso(consent.withdrawn_at) if consent.withdrawn_at else None))

    async def consents_of(self, user_id: str) -> list[Consent]:
        rows = await self._run(lambda c: c.execute(
            _CONSENT + " WHERE user_id = ? ORDER BY given_at, consent_id", (user_id,)
        ).fetchall())
        return [consent_row(r) for r in rows]

    async def withdraw(self, user_id: str, provider: str, now: datetime) -> list[Consent]:
        def run(c: sqlite3.Connection) -> list[Any]:
            with immediate_transaction(c):
                return c.execute(
                    "UPDATE consents SET withdrawn_at = ? WHERE user_id = ? AND provider = ? "
                    "AND withdrawn_at IS NULL RETURNING consent_id, user_id, provider, "
                    "provider_user_id, purpose, scopes, text_version, given_at, withdrawn_at",
                    (iso(now), user_id, provider)).fetchall()

        return [consent_row(r) for r in await self._run(run)]

    async def withdrawn(self) -> list[Withdrawn]:
        rows = await self._run(lambda c: c.execute(_WITHDRAWN).fetchall())
        return withdrawn_groups([consent_row(r) for r in rows])

    async def is_withdrawn(self, user_id: str, provider: str) -> bool:
        row = await self._run(lambda c: c.execute(
            "SELECT count(*), count(withdrawn_at) FROM consents WHERE user_id = ? "
            "AND provider = ?", (user_id, provider)).fetchone())
        return bool(row[0]) and row[0] == row[1]

    async def erase_user(self, user_id: str) -> int:
        return await self._write("DELETE FROM consents WHERE user_id = ?", (user_id,))


class SQLiteAudit(SQLiteComponent):
    """The audit log. Its connection gives up waiting for another process's lock at half the
    store's bound, so an append the caller gave up on (and answered 503 for) fails inside
    SQLite too, rather than landing later as the record of a disclosure that never was."""

    def __init__(self, path: Path, *, timeout_s: float = 10.0) -> None:
        super().__init__(path, timeout_s)
        self._appends = GroupedAppends(self._append_all)

    async def open(self) -> None:
        busy_ms = int(self._timeout_s * 500)

        def prepare(conn: sqlite3.Connection) -> None:
            _migrate(conn)
            conn.execute(f"PRAGMA busy_timeout={busy_ms}")

        await self._connect(prepare)

    async def append(self, record: AuditRecord) -> int:
        return await self._appends.append(record)

    async def _append_all(self, records: list[AuditRecord]) -> list[int]:
        def run(c: sqlite3.Connection) -> list[int]:
            with immediate_transaction(c):
                return [int(c.execute(
                    "INSERT INTO audit_log (at, actor, action, user_id, route, client, outcome, "
                    "request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (iso(r.at), r.actor, r.action, r.user_id, r.route, r.client, r.outcome,
                     r.request_id)).lastrowid or 0) for r in records]

        return await self._run(run)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = ["seq > ?"]
        args: list[Any] = [query.after_seq or 0]
        if query.user_id is not None:
            where.append("user_id = ?")
            args.append(query.user_id)
        if query.action is not None:
            where.append("action = ?")
            args.append(query.action)
        if query.since is not None:
            where.append("at >= ?")
            args.append(iso(query.since))
        sql = f"{_AUDIT} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, (*args, query.limit)).fetchall())
        return [audit_row(r) for r in rows]

    async def erase_user(self, user_id: str, pseudonym: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            with immediate_transaction(c):
                named = c.execute("UPDATE audit_log SET user_id = ? WHERE user_id = ?",
                                  (pseudonym, user_id)).rowcount
                acted = c.execute("UPDATE audit_log SET actor = ? WHERE actor = ?",
                                  (actor_of(pseudonym), actor_of(user_id))).rowcount
                return int(named + acted)

        return await self._run(run)
