"""What conversation memory is: the ``ConversationStore`` Protocol, its records, and the
in-memory twin. The stores themselves are ``sqlite`` (embedded) and ``postgres`` (full stack)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from auren.errors import NotFound, StoreUnavailable
from auren.events import iso


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
    """Conversations and their messages, per user. Every method takes the ``user_id`` the
    request was authorised for and filters by it; a conversation id of another user is
    answered exactly like an unknown one."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> dict[str, Any]: ...

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        """The last ``limit`` messages, oldest first, as the next turn needs them: assistant
        turns without their meta (their evidence), user turns with theirs (the parsed intent).

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
    # 128 random bits as 32 hex digits, like ``uuid4().hex`` without building a UUID object.
    return os.urandom(16).hex()


class MemoryConversations:
    """``ConversationStore`` in process: the twin for tests; per process, lost on restart."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}  # conversation id -> user id
        self._summaries: dict[str, ConversationSummary] = {}
        self._messages: dict[str, list[Message]] = {}
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> dict[str, Any]:
        self._check()
        return {"engine": "memory", "responseTime_ms": 0.0}

    def _check(self) -> None:
        if not self._open:
            raise StoreUnavailable("conversation store is not open")

    def _owned(self, user_id: str, conversation_id: str) -> list[Message]:
        self._check()
        if self._owners.get(conversation_id) != user_id:
            raise NotFound("no such conversation")
        return self._messages[conversation_id]

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return [m if m.role == "user" else Message(m.role, m.content, {}, m.created_at)
                for m in await self.messages(user_id, conversation_id, limit)]

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        found = self._owned(user_id, conversation_id)
        return list(found[-limit:]) if limit > 0 else []

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        self._check()
        now = datetime.now(UTC)
        if conversation_id not in self._owners:
            self._owners[conversation_id] = user_id
            self._messages[conversation_id] = []
            title = next((m.content for m in messages if m.role == "user"), "")[:80]
            self._summaries[conversation_id] = ConversationSummary(conversation_id, title, now,
                                                                   now, 0)
        stored = self._owned(user_id, conversation_id)
        stored.extend(Message(m.role, m.content, dict(m.meta), now) for m in messages)
        summary = self._summaries[conversation_id]
        self._summaries[conversation_id] = ConversationSummary(
            conversation_id, summary.title, summary.created_at, now, len(stored))

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]:
        self._check()
        mine = [s for cid, s in self._summaries.items() if self._owners[cid] == user_id]
        # Most recent first; ties by id, as the SQL stores order them.
        mine.sort(key=lambda s: s.conversation_id)
        mine.sort(key=lambda s: s.updated_at, reverse=True)
        return mine[:limit]

    async def erase_user(self, user_id: str) -> dict[str, int]:
        self._check()
        mine = [cid for cid, owner in self._owners.items() if owner == user_id]
        messages = sum(len(self._messages.pop(cid)) for cid in mine)
        for cid in mine:
            del self._owners[cid], self._summaries[cid]
        return {"conversations": len(mine), "messages": messages}
