"""Erasure records and the ledger's persistence: the ``ErasureStore`` Protocol, its in-memory
twin, and the SQLite (embedded) and PostgreSQL (full stack) stores.

An erasure record is durable before the erasure's 202 is answered, and every step's outcome is
written as soon as it is known, so a process killed midway leaves a record that the next one
resumes (a lease, renewed after every step, keeps two processes from running one erasure at
once). The record names the person only through their pseudonym and a sealed subject (the
user id and provider accounts, encrypted with ``AUREN_ENCRYPTION_KEY``), so that it keeps
nothing readable of them once their data is gone; the receipt opens it to show the user id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from auren.adapters.postgres import PostgresPool, migrate
from auren.adapters.sqlite import immediate_transaction, migrate_component
from auren.connections.sqlite import SQLiteComponent
from auren.events import iso

T = TypeVar("T")

PENDING = "pending"
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
STATUSES = (PENDING, RUNNING, COMPLETE, FAILED)
UNFINISHED = (PENDING, RUNNING)


@dataclass(slots=True)
class StepState:
    """One store's step as the receipt shows it."""

    store: str
    status: str = PENDING
    at: str | None = None  # when it completed (or last failed)
    detail: dict[str, Any] = field(default_factory=dict)  # counts, per provider facts
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store, "status": self.status, "at": self.at}
        if self.detail:
            out["detail"] = self.detail
        if self.error:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class Erasure:
    erasure_id: str
    pseudonym: str  # the ledger digest of the person: finds their erasure again
    subject: str  # sealed JSON: {"user_id", "accounts": [[provider, provider user id], ...]}
    status: str
    steps: list[StepState]
    created_at: str
    updated_at: str
    attempts: int = 0  # failed attempts of the current step
    due_at: str | None = None  # the next attempt, after a failed one
    lease_owner: str | None = None
    lease_until: str | None = None

    def steps_json(self) -> str:
        return orjson.dumps([s.as_dict() for s in self.steps]).decode()


def _steps(text: str) -> list[StepState]:
    return [StepState(s["store"], s["status"], s.get("at"), s.get("detail") or {},
                      s.get("error")) for s in orjson.loads(text)]


_COLUMNS = ("erasure_id, pseudonym, subject, status, steps, created_at, updated_at, attempts, "
            "due_at, lease_owner, lease_until")


def _erasure(row: Sequence[Any]) -> Erasure:
    return Erasure(row[0], row[1], row[2], row[3], _steps(row[4]), row[5], row[6], int(row[7]),
                   row[8], row[9], row[10])


def _row(e: Erasure) -> tuple[Any, ...]:
    return (e.erasure_id, e.pseudonym, e.subject, e.status, e.steps_json(), e.created_at,
            e.updated_at, e.attempts, e.due_at, e.lease_owner, e.lease_until)


class ErasureStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, erasure: Erasure) -> tuple[Erasure, bool]:
        """Store a new erasure unless the person (``pseudonym``) has one; the stored one and
        whether this call made it."""
        ...

    async def get(self, erasure_id: str) -> Erasure | None: ...

    async def save(self, erasure: Erasure) -> None:
        """Write the erasure's status, steps, attempts, due time and lease."""
        ...

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> list[Erasure]:
        """The unfinished erasures that are due and whose lease is free or expired, now
        leased to ``owner``."""
        ...

    async def add_to_ledger(self, digests: Sequence[str], now: datetime) -> None: ...

    async def ledger_since(self, seq: int) -> tuple[list[str], int]:
        """Digests added after position ``seq``, and the position after them."""
        ...


class MemoryErasures:
    """``ErasureStore`` in process: the twin for tests."""

    def __init__(self) -> None:
        self._erasures: dict[str, Erasure] = {}
        self._ledger: list[str] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create(self, erasure: Erasure) -> tuple[Erasure, bool]:
        for found in self._erasures.values():
            if found.pseudonym == erasure.pseudonym:
                return replace(found, steps=list(found.steps)), False
        self._erasures[erasure.erasure_id] = replace(erasure, steps=list(erasure.steps))
        return erasure, True

    async def get(self, erasure_id: str) -> Erasure | None:
        found = self._erasures.get(erasure_id)
        return replace(found, steps=list(found.steps)) if found else None

    async def save(self, erasure: Erasure) -> None:
        self._erasures[erasure.erasure_id] = replace(erasure, steps=list(erasure.steps))

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> list[Erasure]:
        at = iso(now)
        claimed = []
        for e in self._erasures.values():
            if e.status in UNFINISHED and (e.due_at is None or e.due_at <= at) and (
                    e.lease_until is None or e.lease_until < at):
                e.lease_owner, e.lease_until = owner, iso(lease_until)
                claimed.append(replace(e, steps=list(e.steps)))
        return claimed

    async def add_to_ledger(self, digests: Sequence[str], now: datetime) -> None:
        self._ledger += [d for d in digests if d not in self._ledger]

    async def ledger_since(self, seq: int) -> tuple[list[str], int]:
        return self._ledger[seq:], len(self._ledger)


# --- SQLite -----------------------------------------------------------------------------------

COMPONENT = "erasure"
SQLITE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS erasures (
        erasure_id  TEXT PRIMARY KEY,
        pseudonym   TEXT NOT NULL UNIQUE,
        subject     TEXT NOT NULL,
        status      TEXT NOT NULL,
        steps       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        due_at      TEXT,
        lease_owner TEXT,
        lease_until TEXT
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS erasure_ledger (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        digest   TEXT NOT NULL UNIQUE,
        added_at TEXT NOT NULL
    );
    """,
)
_CLAIMABLE = ("status IN ('pending', 'running') AND (due_at IS NULL OR due_at <= {now}) "
              "AND (lease_until IS NULL OR lease_until < {now})")


class SQLiteErasures(SQLiteComponent):
    """``ErasureStore`` in the embedded SQLite file (its own component of the schema)."""

    def __init__(self, path: Path, timeout_s: float = 10.0) -> None:
        super().__init__(path, timeout_s)

    async def open(self) -> None:
        await self._connect(lambda conn: migrate_component(conn, COMPONENT, SQLITE_MIGRATIONS))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            with immediate_transaction(conn):
                return fn(conn)

        return await self._run(run)

    async def create(self, erasure: Erasure) -> tuple[Erasure, bool]:
        def run(c: sqlite3.Connection) -> tuple[Erasure, bool]:
            made = c.execute(f"INSERT OR IGNORE INTO erasures ({_COLUMNS}) "  # noqa: S608
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?)", _row(erasure)).rowcount == 1
            row = c.execute(f"SELECT {_COLUMNS} FROM erasures WHERE pseudonym = ?",  # noqa: S608
                            (erasure.pseudonym,)).fetchone()
            return _erasure(row), made

        return await self._write(run)

    async def get(self, erasure_id: str) -> Erasure | None:
        row = await self._run(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM erasures WHERE erasure_id = ?",  # noqa: S608
            (erasure_id,)).fetchone())
        return _erasure(row) if row else None

    async def save(self, erasure: Erasure) -> None:
        e = erasure
        await self._write(lambda c: c.execute(
            "UPDATE erasures SET status = ?, steps = ?, updated_at = ?, attempts = ?, "
            "due_at = ?, lease_owner = ?, lease_until = ? WHERE erasure_id = ?",
            (e.status, e.steps_json(), e.updated_at, e.attempts, e.due_at, e.lease_owner,
             e.lease_until, e.erasure_id)))

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> list[Erasure]:
        at = iso(now)
        where = _CLAIMABLE.format(now="?")
        rows = await self._write(lambda c: c.execute(
            f"UPDATE erasures SET lease_owner = ?, lease_until = ? WHERE {where} "  # noqa: S608
            f"RETURNING {_COLUMNS}", (owner, iso(lease_until), at, at)).fetchall())
        return [_erasure(r) for r in rows]

    async def add_to_ledger(self, digests: Sequence[str], now: datetime) -> None:
        await self._write(lambda c: c.executemany(
            "INSERT OR IGNORE INTO erasure_ledger (digest, added_at) VALUES (?, ?)",
            [(d, iso(now)) for d in digests]))

    async def ledger_since(self, seq: int) -> tuple[list[str], int]:
        rows = await self._run(lambda c: c.execute(
            "SELECT seq, digest FROM erasure_ledger WHERE seq > ? ORDER BY seq",
            (seq,)).fetchall())
        return [r[1] for r in rows], (int(rows[-1][0]) if rows else seq)


# --- PostgreSQL -------------------------------------------------------------------------------

PG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE erasures (
        erasure_id  text PRIMARY KEY,
        pseudonym   text NOT NULL UNIQUE,
        subject     text NOT NULL,
        status      text NOT NULL,
        steps       text NOT NULL,
        created_at  text NOT NULL,
        updated_at  text NOT NULL,
        attempts    integer NOT NULL DEFAULT 0,
        due_at      text,
        lease_owner text,
        lease_until text
    );
    CREATE TABLE erasure_ledger (
        seq      bigserial PRIMARY KEY,
        digest   text NOT NULL UNIQUE,
        added_at text NOT NULL
    );
    """,
)


async def _pg_upgrade(conn: Any) -> int:
    def script(sql: str) -> Callable[[Any], Awaitable[Any]]:
        async def run(c: Any) -> Any:
            return await c.execute(sql)

        return run

    async with conn.transaction():
        return await migrate(conn, COMPONENT, [script(sql) for sql in PG_MIGRATIONS])


class PostgresErasures:
    """``ErasureStore`` in the full stack's PostgreSQL database."""

    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await self._pool.open(_pg_upgrade)

    async def close(self) -> None:
        await self._pool.close()

    async def create(self, erasure: Erasure) -> tuple[Erasure, bool]:
        async def run(conn: Any) -> tuple[Erasure, bool]:
            async with conn.transaction():
                made = await conn.execute(
                    f"INSERT INTO erasures ({_COLUMNS}) VALUES "  # noqa: S608
                    "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT DO NOTHING",
                    *_row(erasure))
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM erasures WHERE pseudonym = $1",  # noqa: S608
                    erasure.pseudonym)
            return _erasure(row), made.endswith(" 1")

        return await self._pool.run(run)

    async def get(self, erasure_id: str) -> Erasure | None:
        row = await self._pool.run(lambda conn: conn.fetchrow(
            f"SELECT {_COLUMNS} FROM erasures WHERE erasure_id = $1",  # noqa: S608
            erasure_id), retry=True)
        return _erasure(row) if row else None

    async def save(self, erasure: Erasure) -> None:
        e = erasure
        await self._pool.run(lambda conn: conn.execute(
            "UPDATE erasures SET status = $1, steps = $2, updated_at = $3, attempts = $4, "
            "due_at = $5, lease_owner = $6, lease_until = $7 WHERE erasure_id = $8",
            e.status, e.steps_json(), e.updated_at, e.attempts, e.due_at, e.lease_owner,
            e.lease_until, e.erasure_id))

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> list[Erasure]:
        where = _CLAIMABLE.format(now="$3")
        rows = await self._pool.run(lambda conn: conn.fetch(
            f"UPDATE erasures SET lease_owner = $1, lease_until = $2 WHERE {where} "  # noqa: S608
            f"RETURNING {_COLUMNS}", owner, iso(lease_until), iso(now)))
        return [_erasure(r) for r in rows]

    async def add_to_ledger(self, digests: Sequence[str], now: datetime) -> None:
        await self._pool.run(lambda conn: conn.executemany(
            "INSERT INTO erasure_ledger (digest, added_at) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING", [(d, iso(now)) for d in digests]))

    async def ledger_since(self, seq: int) -> tuple[list[str], int]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            "SELECT seq, digest FROM erasure_ledger WHERE seq > $1 ORDER BY seq", seq),
            retry=True)
        return [r[1] for r in rows], (int(rows[-1][0]) if rows else seq)


