"""Conversation memory in PostgreSQL: the full stack's, shared by every NEUROS process.

Two NEUROS replicas behind a load balancer must see one person's conversations alike, and an
erasure sent to either must remove them for both: so with ``POSTGRES_URL`` the conversations
live in the same database as the events, never in a process's own file. The tables mirror the
SQLite store's; their migrations are NEUROS's own row (``neuros``) of ``schema_migrations``,
applied under the same advisory lock as the events' so that every process may start at once.

An append is one transaction that locks its conversation's row first, so two processes
appending to one conversation at the same moment number their messages one after the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from auren.adapters.postgres import PostgresPool, migrate
from auren.errors import NotFound
from auren.neuros.memory.base import ConversationSummary, Message

COMPONENT = "neuros"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        conversation_id text PRIMARY KEY,
        user_id         text NOT NULL,
        title           text NOT NULL,
        created_at      timestamptz NOT NULL,
        updated_at      timestamptz NOT NULL,
        message_count   integer NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at);
    CREATE TABLE messages (
        conversation_id text NOT NULL,
        seq             integer NOT NULL,
        user_id         text NOT NULL,
        role            text NOT NULL,
        content         text NOT NULL,
        meta            text NOT NULL,
        created_at      timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE INDEX messages_user ON messages (user_id);
    """,
)

_OWNER_FOR_UPDATE = "SELECT user_id FROM conversations WHERE conversation_id = $1 FOR UPDATE"
_OWNER = "SELECT user_id FROM conversations WHERE conversation_id = $1"
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (conversation_id, user_id, title, created_at, updated_at) "
    "VALUES ($1, $2, $3, now(), now()) ON CONFLICT (conversation_id) DO NOTHING")
_INSERT_MESSAGES = (
    "INSERT INTO messages (conversation_id, seq, user_id, role, content, meta, created_at) "
    "SELECT $1, $2 + n, $3, role, content, meta, now() "
    "FROM unnest($4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS m(role, content, meta, n)")
_TOUCH = ("UPDATE conversations SET updated_at = now(), message_count = message_count + $2 "
          "WHERE conversation_id = $1 RETURNING message_count")
# As in SQLite: the next turn reads the assistant's words, not its evidence.
_HISTORY = ("SELECT role, content, CASE WHEN role = 'user' THEN meta ELSE '{}' END, created_at "
            "FROM messages WHERE conversation_id = $1 AND user_id = $2 "
            "ORDER BY seq DESC LIMIT $3")
_MESSAGES = ("SELECT role, content, meta, created_at FROM messages "
             "WHERE conversation_id = $1 AND user_id = $2 ORDER BY seq DESC LIMIT $3")


def _script(sql: str) -> Callable[[Any], Awaitable[Any]]:
    async def run(conn: Any) -> Any:
        return await conn.execute(sql)

    return run


async def upgrade(conn: Any) -> int:
    """Apply NEUROS's pending migrations; returns how many were applied."""
    async with conn.transaction():
        return await migrate(conn, COMPONENT, [_script(sql) for sql in MIGRATIONS])


def _message(row: Any) -> Message:
    return Message(role=row[0], content=row[1], meta=orjson.loads(row[2]), created_at=row[3])


def _count(status: str) -> int:
    """Rows a DELETE touched, from its command tag ("DELETE 3")."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresConversations:
    """``ConversationStore`` on PostgreSQL, through a :class:`PostgresPool` of its own."""

    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await self._pool.open(upgrade)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> dict[str, Any]:
        return await self._pool.ping()

    async def _messages(self, sql: str, user_id: str, conversation_id: str,
                        limit: int) -> list[Message]:
        async def query(conn: Any) -> list[Any] | None:
            owner = await conn.fetchval(_OWNER, conversation_id)
            if owner != user_id:
                return None
            if limit <= 0:
                return []
            return list(await conn.fetch(sql, conversation_id, user_id, limit))

        rows = await self._pool.run(query, retry=True)
        if rows is None:
            raise NotFound("no such conversation")
        return [_message(r) for r in reversed(rows)]

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self._messages(_HISTORY, user_id, conversation_id, limit)

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self._messages(_MESSAGES, user_id, conversation_id, limit)

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        title = next((m.content for m in messages if m.role == "user"), "")[:80]
        roles = [m.role for m in messages]
        contents = [m.content for m in messages]
        metas = [orjson.dumps(m.meta).decode() for m in messages]

        async def write(conn: Any) -> bool:
            async with conn.transaction():
                await conn.execute(_INSERT_CONVERSATION, conversation_id, user_id, title)
                # The row lock orders concurrent appends to one conversation (other processes).
                if await conn.fetchval(_OWNER_FOR_UPDATE, conversation_id) != user_id:
                    return False
                last = await conn.fetchval(_TOUCH, conversation_id, len(messages))
                await conn.execute(_INSERT_MESSAGES, conversation_id, last - len(messages),
                                   user_id, roles, contents, metas)
            return True

        if not await self._pool.run(write):
            raise NotFound("no such conversation")

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]:
        rows = await self._pool.run(lambda conn: conn.fetch(
            "SELECT conversation_id, title, created_at, updated_at, message_count "
            "FROM conversations WHERE user_id = $1 "
            "ORDER BY updated_at DESC, conversation_id LIMIT $2", user_id, limit), retry=True)
        return [ConversationSummary(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    async def erase_user(self, user_id: str) -> dict[str, int]:
        async def erase(conn: Any) -> dict[str, int]:
            async with conn.transaction():
                messages = await conn.execute("DELETE FROM messages WHERE user_id = $1",
                                              user_id)
                conversations = await conn.execute(
                    "DELETE FROM conversations WHERE user_id = $1", user_id)
            # VACUUM (outside the transaction): the dead rows' space is free for reuse at once.
            await conn.execute("VACUUM messages")
            await conn.execute("VACUUM conversations")
            return {"conversations": _count(conversations), "messages": _count(messages)}

        return await self._pool.run(erase)
