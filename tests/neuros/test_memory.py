"""Conversation memory in the shared SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from auren.adapters.sqlite import MIGRATIONS, SQLiteStore
from auren.errors import NotFound
from auren.neuros.memory import Message, SQLiteConversations


@pytest.mark.parametrize("events_first", [True, False])
async def test_migrations_never_touch_the_event_stores_version(tmp_path: Path,
                                                               events_first: bool) -> None:
    path = tmp_path / "auren.sqlite3"
    events, conversations = SQLiteStore(path), SQLiteConversations(path)
    for store in ((events, conversations) if events_first else (conversations, events)):
        await store.open()
    await conversations.close()
    await events.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("SELECT component, version FROM schema_migrations").fetchall() == [
            ("neuros", 1)]
    # Opening again is a no-op.
    again = SQLiteConversations(path)
    await again.open()
    await again.close()


async def test_conversations_are_per_user_and_erasable(tmp_path: Path) -> None:
    store = SQLiteConversations(tmp_path / "auren.sqlite3")
    await store.open()
    try:
        await store.append("alice", "c1", [Message("user", "how did I sleep?", {"intent": "x"}),
                                           Message("assistant", "7 h", {})])
        await store.append("alice", "c1", [Message("user", "and hrv?"),
                                           Message("assistant", "52 ms")])
        await store.append("bob", "c2", [Message("user", "hi"), Message("assistant", "hello")])
        history = await store.history("alice", "c1", 3)
        assert [m.content for m in history] == ["7 h", "and hrv?", "52 ms"]
        assert history[0].created_at is not None
        with pytest.raises(NotFound):
            await store.history("bob", "c1", 10)
        with pytest.raises(NotFound):
            await store.append("bob", "c1", [Message("user", "mine now?")])
        with pytest.raises(NotFound):
            await store.history("alice", "nope", 10)
        listed = await store.conversations("alice", 10)
        assert [(c.conversation_id, c.message_count, c.title) for c in listed] == [
            ("c1", 4, "how did I sleep?")]
        assert await store.erase_user("alice") == {"conversations": 1, "messages": 4}
        assert await store.conversations("alice", 10) == []
        assert len(await store.history("bob", "c2", 10)) == 2
        assert (await store.ping())["engine"] == "sqlite"
    finally:
        await store.close()
