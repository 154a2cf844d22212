"""Conversation memory in the embedded SQLite file.

``SQLiteConversations`` keeps its tables in the same SQLite file as the events
(``AUREN_DATA_DIR``). Its migrations are counted in a
``schema_migrations(component, version)`` row of its own, never in ``PRAGMA user_version``,
which belongs to the event store: the two schemas evolve without colliding.

Statements run on the event loop's thread (see ``SQLiteConversations``) and commit with
``synchronous=NORMAL``: a power cut may lose the last turns of a chat (never corrupt the file),
a trade made so that chat writes do not wait on an fsync each; the events' own connection
keeps ``FULL``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from auren.adapters.sqlite import connect, immediate_transaction, is_busy, migrate_component
from auren.adapters.wal import DEFAULT_WAL_LIMIT_BYTES, WalKeeper
from auren.errors import NotFound, StoreUnavailable
from auren.events import iso
from auren.neuros.memory.base import ConversationSummary, Message

T = TypeVar("T")
log = logging.getLogger("auren.neuros")

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
    # 2: messages become a rowid table. Keyed by (conversation_id, seq) WITHOUT ROWID, every
    # turn landed on its own conversation's leaf, and an assistant turn (its evidence JSON is
    # about a kilobyte) spilled into an overflow page: about twice the pages written per turn
    # and read per history than rows appended in arrival order with a small unique index
    # (measured: 61 -> 31 us per turn written, 33 -> 15 us per history read).
    """
    CREATE TABLE messages_v2 (
        conversation_id TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        user_id         TEXT NOT NULL,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        meta            TEXT NOT NULL,
        created_at      TEXT NOT NULL
    );
    INSERT INTO messages_v2 (conversation_id, seq, user_id, role, content, meta, created_at)
        SELECT conversation_id, seq, user_id, role, content, meta, created_at FROM messages
        ORDER BY created_at, conversation_id, seq;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE UNIQUE INDEX messages_conversation_seq ON messages (conversation_id, seq);
    CREATE INDEX messages_user ON messages (user_id);
    """,
)


def _connect(path: Path, timeout_s: float, wal_limit_bytes: int) -> sqlite3.Connection:
    return connect(path, timeout_s, synchronous="NORMAL", wal_limit_bytes=wal_limit_bytes)


def _migrate(conn: sqlite3.Connection) -> None:
    migrate_component(conn, COMPONENT, MIGRATIONS)


def _message(row: tuple[Any, ...]) -> Message:
    return Message(role=row[0], content=row[1], meta=orjson.loads(row[2]),
                   created_at=datetime.fromisoformat(row[3]))


_OWNER = "SELECT user_id FROM conversations WHERE conversation_id = ?"
_INSERT_CONVERSATION = ("INSERT OR IGNORE INTO conversations (conversation_id, user_id, title, "
                        "created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?"
_INSERT_MESSAGE = ("INSERT INTO messages (conversation_id, seq, user_id, role, content, meta, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
_TOUCH = ("UPDATE conversations SET updated_at = ?, message_count = message_count + ? "
          "WHERE conversation_id = ?")
# The next turn needs the assistant's words, not its evidence: only user turns carry meta it
# reads (the parsed intent), and parsing each assistant turn's evidence JSON was a tenth of a
# turn's CPU. ``messages`` (the read API) still returns every message's meta.
_HISTORY = ("SELECT role, content, CASE WHEN role = 'user' THEN meta ELSE '{}' END, created_at "
            "FROM messages WHERE conversation_id = ? AND user_id = ? ORDER BY seq DESC LIMIT ?")
_MESSAGES = ("SELECT role, content, meta, created_at FROM messages "
             "WHERE conversation_id = ? AND user_id = ? ORDER BY seq DESC LIMIT ?")


@dataclass(slots=True)
class _Append:
    user_id: str
    conversation_id: str
    title: str
    rows: list[tuple[str, str, str]]  # role, content, meta JSON
    now: str
    deadline: float
    future: asyncio.Future[None]


def _write_appends(conn: sqlite3.Connection, batch: Sequence[_Append]) -> list[bool]:
    """One transaction for the whole batch; per item, False when the conversation belongs to
    another user (nothing is written for that item)."""
    written: list[bool] = []
    with immediate_transaction(conn):
        for item in batch:
            cid, user_id, now = item.conversation_id, item.user_id, item.now
            conn.execute(_INSERT_CONVERSATION, (cid, user_id, item.title, now, now))
            owner = conn.execute(_OWNER, (cid,)).fetchone()
            if owner is None or owner[0] != user_id:
                written.append(False)
                continue
            (last,) = conn.execute(_LAST_SEQ, (cid,)).fetchone()
            conn.executemany(_INSERT_MESSAGE, [
                (cid, last + i, user_id, role, content, meta, now)
                for i, (role, content, meta) in enumerate(item.rows, start=1)])
            conn.execute(_TOUCH, (now, len(item.rows), cid))
            written.append(True)
    return written


class SQLiteConversations:
    """``ConversationStore`` in the embedded SQLite file.

    All statements run on the event loop's thread, on one connection. They are small indexed
    reads and writes (tens of microseconds in SQLite), and on a worker thread each one paid a
    hand-off plus a GIL convoy behind the busy loop that cost far more than the statement.
    Nothing may block the loop, so the connection never waits inside SQLite
    (``busy_timeout=0``): a locked database (another process writing) is retried with awaited
    back-off until ``timeout_s``. One connection for reads and writes also means NEUROS's own
    commits never invalidate its page cache. Checkpoints, which copy the WAL back and fsync
    the database file, run on a helper thread instead of inside whichever commit crosses
    SQLite's threshold.

    Appends are group-committed: the turns of concurrent chats that finish in the same
    iteration of the loop share one transaction (each caller still waits for its commit).
    """

    def __init__(self, path: Path, *, timeout_s: float = 10.0,
                 checkpoint_interval_s: float = 1.0,
                 wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._wal_limit = wal_limit_bytes
        self._conn: sqlite3.Connection | None = None
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="neuros-sqlite")
        # Checkpoints on a thread of their own; an erasure scrubs the WAL through it.
        self.wal = WalKeeper(path, lambda: _connect(path, timeout_s, wal_limit_bytes),
                             limit_bytes=wal_limit_bytes, timeout_s=timeout_s,
                             interval_s=checkpoint_interval_s, name="neuros")
        self._pending: list[_Append] = []
        self._flush_handle: asyncio.Handle | None = None
        self._retry_s = 0.0

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)

        def _open() -> sqlite3.Connection:
            conn = _connect(self._path, self._timeout_s, self._wal_limit)
            _migrate(conn)  # may wait for another process's migration: off the loop
            conn.execute("PRAGMA busy_timeout=0")  # from now on, waits are awaited
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint loop does them
            return conn

        self._conn = await self._on_helper(_open)
        await self.wal.open()

    async def close(self) -> None:
        await self.wal.close()
        if self._pending:
            self._flush_now()  # one last attempt; whatever is still locked out fails below
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._fail(self._pending, "conversation store is closing")
        self._pending = []
        if self._conn is not None:
            self._conn.close()
        self._helper.shutdown(wait=True)
        self._conn = None

    async def _on_helper(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await loop.run_in_executor(self._helper, fn)
        except TimeoutError as exc:
            raise StoreUnavailable("conversation store did not answer in time",
                                   retry_after_s=2) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"conversation store error: {type(exc).__name__}",
                                   retry_after_s=2) from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *,
                   transaction: bool = False) -> T:
        """``fn`` on the loop's connection, retried with awaited back-off while locked."""
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("conversation store is not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        delay = 0.001
        while True:
            try:
                if not transaction:
                    return fn(conn)
                with immediate_transaction(conn):
                    return fn(conn)
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise StoreUnavailable(f"conversation store error: {type(exc).__name__}",
                                           retry_after_s=2) from exc
                if loop.time() + delay > deadline:
                    raise StoreUnavailable("conversation store is locked",
                                           retry_after_s=2) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # --- group commit of appends ------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        batch = [item for item in self._pending if not item.future.done()]
        self._pending = []
        locked = self._commit(batch)
        if locked:
            self._retry_later(locked)
        else:
            self._retry_s = 0.0

    def _commit(self, batch: list[_Append]) -> list[_Append]:
        """Write ``batch`` and settle its futures; returns the items locked out (to retry)."""
        if not batch:
            return []
        conn = self._conn
        if conn is None:
            self._fail(batch, "conversation store is not open")
            return []
        try:
            written = _write_appends(conn, batch)
        except sqlite3.Error as exc:
            if is_busy(exc):
                return batch
            if len(batch) > 1:
                # Whatever broke the batch fails only its own turn: write them one by one.
                return [item for one in batch for item in self._commit([one])]
            self._fail(batch, f"conversation store error: {type(exc).__name__}")
            return []
        except Exception as exc:  # a callback must settle every future, whatever happens
            log.exception("conversation write crashed", extra={"error": type(exc).__name__})
            self._fail(batch, "conversation store error")
            return []
        for item, ok in zip(batch, written, strict=True):
            if item.future.done():
                continue
            if ok:
                item.future.set_result(None)
            else:
                item.future.set_exception(NotFound("no such conversation"))
        return []

    def _retry_later(self, locked: list[_Append]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._fail([item for item in locked if item.deadline <= now],
                   "conversation store is locked")
        # Appends made meanwhile join the retry: they would wait for the same lock anyway.
        self._pending = [item for item in locked if item.deadline > now] + self._pending
        if self._pending and self._flush_handle is None:
            self._retry_s = min(max(self._retry_s * 2, 0.001), 0.05)
            self._flush_handle = loop.call_later(self._retry_s, self._flush)

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    @staticmethod
    def _fail(items: Sequence[_Append], detail: str) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(StoreUnavailable(detail, retry_after_s=2))

    # --- the store ----------------------------------------------------------------------------

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._run(lambda c: c.execute("SELECT 1").fetchone())
        return {"engine": "sqlite", "responseTime_ms": (time.perf_counter() - started) * 1000}

    async def _messages(self, sql: str, user_id: str, conversation_id: str,
                        limit: int) -> list[Message]:
        def query(c: sqlite3.Connection) -> list[tuple[Any, ...]] | None:
            owner = c.execute(_OWNER, (conversation_id,)).fetchone()
            if owner is None or owner[0] != user_id:
                return None
            if limit <= 0:
                return []
            return c.execute(sql, (conversation_id, user_id, limit)).fetchall()

        rows = await self._run(query)
        if rows is None:
            raise NotFound("no such conversation")
        return [_message(r) for r in reversed(rows)]

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self._messages(_HISTORY, user_id, conversation_id, limit)

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        if self._conn is None:
            raise StoreUnavailable("conversation store is not open")
        loop = asyncio.get_running_loop()
        item = _Append(user_id, conversation_id,
                       next((m.content for m in messages if m.role == "user"), "")[:80],
                       [(m.role, m.content, orjson.dumps(m.meta).decode()) for m in messages],
                       iso(datetime.now(UTC)), loop.time() + self._timeout_s,
                       loop.create_future())
        self._pending.append(item)
        if self._flush_handle is None:
            # After the callbacks already queued: turns finishing in this iteration join.
            self._flush_handle = loop.call_soon(self._flush)
        await item.future

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]:
        rows = await self._run(lambda c: c.execute(
            "SELECT conversation_id, title, created_at, updated_at, message_count "
            "FROM conversations WHERE user_id = ? ORDER BY updated_at DESC, conversation_id "
            "LIMIT ?", (user_id, limit)).fetchall())
        return [ConversationSummary(r[0], r[1], datetime.fromisoformat(r[2]),
                                    datetime.fromisoformat(r[3]), int(r[4])) for r in rows]

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self._messages(_MESSAGES, user_id, conversation_id, limit)

    async def erase_user(self, user_id: str) -> dict[str, int]:
        if self._pending:
            # Turns already answered are written first, so that the erasure covers them.
            self._flush_now()

        def erase(c: sqlite3.Connection) -> dict[str, int]:
            before = c.total_changes
            c.execute("DELETE FROM messages WHERE user_id = ?", (user_id,))
            messages = c.total_changes - before
            before = c.total_changes
            c.execute("DELETE FROM conversations WHERE user_id = ?", (user_id,))
            return {"conversations": c.total_changes - before, "messages": messages}

        deleted = await self._run(erase, transaction=True)
        # The erased text is zeroed in the pages just written (secure_delete), but older WAL
        # frames still hold it: a truncating checkpoint now removes them (retried until done).
        try:
            scrubbed = await self.wal.scrub()
        except StoreUnavailable:
            scrubbed = False
        if not scrubbed:
            log.warning("erasure: the WAL could not be truncated yet; retried in the background")
        return deleted
