"""Conversation memory: conversations and their messages, per user, erasable in one call.

``ConversationStore`` is the boundary; ``SQLiteConversations`` keeps its tables in the same
SQLite file as the events (``AUREN_DATA_DIR``). Its migrations are counted in a
``schema_migrations(component, version)`` row of its own, never in ``PRAGMA user_version``,
which belongs to the event store: the two schemas evolve without colliding.

Threads follow the event store: one writer thread, one reader thread, each with its own
connection, so reads proceed under WAL while a turn is being written. The writer commits with
``synchronous=NORMAL``: a power cut may lose the last turns of a chat (never corrupt the file),
a trade made so that chat writes do not wait on an fsync each; the events' own connection
keeps ``FULL``.

Every method takes the ``user_id`` the request was authorised for and filters by it; a
conversation id of another user is answered exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from auren.errors import NotFound, StoreUnavailable
from auren.events import iso

T = TypeVar("T")

COMPONENT = "neuros"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS conversations (
        conversation_id TEXT PRIMARY KEY,
        user_id         TEXT NOT NULL,
        title           TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        message_count   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS conversations_user_updated
        ON conversations (user_id, updated_at);
    CREATE TABLE IF NOT EXISTS messages (
        conversation_id TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        user_id         TEXT NOT NULL,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        meta            TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS messages_user ON messages (user_id);
    """,
)


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "user" | "assistant"
    content: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "meta": self.meta,
                "created_at": iso(self.created_at) if self.created_at else None}


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    conversation_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "title": self.title,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
                "message_count": self.message_count}


class ConversationStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> dict[str, Any]: ...

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        """The last ``limit`` messages, oldest first.

        Raises:
            NotFound: no such conversation for this user (another user's is not found either).
        """
        ...

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        """Add messages, creating the conversation on its first turn."""
        ...

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]: ...

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]: ...

    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete everything kept about the user; returns counts per kind."""
        ...


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, "
                     "version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_migrations WHERE component = ?",
                           (COMPONENT,)).fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (component, version) VALUES (?, ?) "
                         "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                         (COMPONENT, number))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _message(row: tuple[Any, ...]) -> Message:
    return Message(role=row[0], content=row[1], meta=orjson.loads(row[2]),
                   created_at=datetime.fromisoformat(row[3]))


class SQLiteConversations:
    """``ConversationStore`` in the embedded SQLite file."""

    def __init__(self, path: Path, *, timeout_s: float = 10.0) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="neuros-writer")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="neuros-reader")

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)

        def _open() -> sqlite3.Connection:
            conn = _connect(self._path, self._timeout_s)
            _migrate(conn)
            return conn

        self._writer = await self._run(self._write_thread, _open)
        self._reader = await self._run(self._read_thread,
                                       lambda: _connect(self._path, self._timeout_s))

    async def close(self) -> None:
        for conn, pool in ((self._writer, self._write_thread), (self._reader, self._read_thread)):
            if conn is not None:
                await self._run(pool, conn.close)
            pool.shutdown(wait=True)
        self._writer = self._reader = None

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, fn), self._timeout_s)
        except TimeoutError as exc:
            raise StoreUnavailable("conversation store did not answer in time",
                                   retry_after_s=2) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"conversation store error: {type(exc).__name__}",
                                   retry_after_s=2) from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        if conn is None:
            raise StoreUnavailable("conversation store is not open")
        return await self._run(self._read_thread, lambda: fn(conn))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("conversation store is not open")

        def transaction() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return await self._run(self._write_thread, transaction)

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        return {"engine": "sqlite", "responseTime_ms": (time.perf_counter() - started) * 1000}

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        def query(c: sqlite3.Connection) -> list[tuple[Any, ...]] | None:
            owner = c.execute("SELECT user_id FROM conversations WHERE conversation_id = ?",
                              (conversation_id,)).fetchone()
            if owner is None or owner[0] != user_id:
                return None
            if limit <= 0:
                return []
            return c.execute(
                "SELECT role, content, meta, created_at FROM messages "
                "WHERE conversation_id = ? AND user_id = ? ORDER BY seq DESC LIMIT ?",
                (conversation_id, user_id, limit)).fetchall()

        rows = await self._read(query)
        if rows is None:
            raise NotFound("no such conversation")
        return [_message(r) for r in reversed(rows)]

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        now = iso(datetime.now(UTC))
        title = next((m.content for m in messages if m.role == "user"), "")[:80]
        rows = [(m.role, m.content, orjson.dumps(m.meta).decode()) for m in messages]

        def write(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR IGNORE INTO conversations (conversation_id, user_id, title, "
                      "created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                      (conversation_id, user_id, title, now, now))
            owner = c.execute("SELECT user_id FROM conversations WHERE conversation_id = ?",
                              (conversation_id,)).fetchone()
            if owner is None or owner[0] != user_id:
                raise NotFound("no such conversation")
            (last,) = c.execute("SELECT COALESCE(MAX(seq), 0) FROM messages "
                                "WHERE conversation_id = ?", (conversation_id,)).fetchone()
            c.executemany(
                "INSERT INTO messages (conversation_id, seq, user_id, role, content, meta, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(conversation_id, last + i, user_id, role, content, meta, now)
                 for i, (role, content, meta) in enumerate(rows, start=1)])
            c.execute("UPDATE conversations SET updated_at = ?, message_count = message_count "
                      "+ ? WHERE conversation_id = ?", (now, len(rows), conversation_id))

        await self._write(write)

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]:
        rows = await self._read(lambda c: c.execute(
            "SELECT conversation_id, title, created_at, updated_at, message_count "
            "FROM conversations WHERE user_id = ? ORDER BY updated_at DESC, conversation_id "
            "LIMIT ?", (user_id, limit)).fetchall())
        return [ConversationSummary(r[0], r[1], datetime.fromisoformat(r[2]),
                                    datetime.fromisoformat(r[3]), int(r[4])) for r in rows]

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self.history(user_id, conversation_id, limit)

    async def erase_user(self, user_id: str) -> dict[str, int]:
        def erase(c: sqlite3.Connection) -> dict[str, int]:
            before = c.total_changes
            c.execute("DELETE FROM messages WHERE user_id = ?", (user_id,))
            messages = c.total_changes - before
            before = c.total_changes
            c.execute("DELETE FROM conversations WHERE user_id = ?", (user_id,))
            return {"conversations": c.total_changes - before, "messages": messages}

        return await self._write(erase)
