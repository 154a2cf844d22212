"""Conversation memory: the ``ConversationStore`` contract, run against every implementation
(SQLite embedded, PostgreSQL in the full stack on a fresh database of the real server, and the
in-memory twin), then what only the SQLite file does (its migrations beside the events', its
locks)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auren.adapters.postgres import PostgresPool
from auren.adapters.sqlite import MIGRATIONS, SQLiteStore
from auren.errors import NotFound, StoreUnavailable
from auren.neuros.memory import ConversationStore, MemoryConversations, Message
from auren.neuros.memory.postgres import PostgresConversations
from auren.neuros.memory.sqlite import MIGRATIONS as CONVERSATION_MIGRATIONS
from auren.neuros.memory.sqlite import SQLiteConversations


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.slow)])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[ConversationStore]:
    s: ConversationStore
    if request.param == "sqlite":
        s = SQLiteConversations(tmp_path / "auren.sqlite3")
    elif request.param == "memory":
        s = MemoryConversations()
    else:
        s = PostgresConversations(PostgresPool(request.getfixturevalue("full_stack")
                                               .new_database()))
    await s.open()
    yield s
    await s.close()


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
            ("neuros", len(CONVERSATION_MIGRATIONS))]
    # Opening again is a no-op.
    again = SQLiteConversations(path)
    await again.open()
    await again.close()


async def test_a_first_version_database_keeps_its_conversations(tmp_path: Path) -> None:
    path = tmp_path / "auren.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (component TEXT PRIMARY KEY, "
                     "version INTEGER NOT NULL)")
        for statement in filter(str.strip, CONVERSATION_MIGRATIONS[0].split(";")):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES ('neuros', 1)")
        conn.execute("INSERT INTO conversations VALUES ('c1', 'alice', 'q', "
                     "'2026-03-01T00:00:00Z', '2026-03-01T00:00:01Z', 2)")
        conn.executemany("INSERT INTO messages VALUES ('c1', ?, 'alice', ?, ?, ?, ?)", [
            (2, "assistant", "a", '{"evidence": []}', "2026-03-01T00:00:01Z"),
            (1, "user", "q", '{"intent": "sleep"}', "2026-03-01T00:00:00Z")])
    store = SQLiteConversations(path)
    await store.open()
    try:
        assert [(m.role, m.content, m.meta) for m in await store.messages("alice", "c1", 10)] \
            == [("user", "q", {"intent": "sleep"}), ("assistant", "a", {"evidence": []})]
        await store.append("alice", "c1", [Message("user", "again")])
        assert [m.content for m in await store.history("alice", "c1", 2)] == ["a", "again"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchone() == (
            len(CONVERSATION_MIGRATIONS),)


async def test_conversations_are_per_user_and_erasable(store: ConversationStore) -> None:
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
    assert (await store.ping())["engine"] in ("sqlite", "postgresql", "memory")


async def test_concurrent_turns_are_each_whole_and_fail_alone(store: ConversationStore) -> None:
    await store.append("bob", "taken", [Message("user", "mine")])

    async def turn(user: str, cid: str) -> None:
        await store.append(user, cid, [Message("user", f"q {cid}", {"intent": "sleep"}),
                                       Message("assistant", f"a {cid}")])

    results = await asyncio.gather(
        *(turn(f"u{i % 5}", f"c{i % 10}") for i in range(30)), turn("alice", "taken"),
        return_exceptions=True)
    assert [type(r) for r in results[:30]] == [type(None)] * 30
    assert isinstance(results[30], NotFound)
    for i in range(10):
        history = await store.messages(f"u{i % 5}", f"c{i}", 100)
        assert [m.content for m in history] == [f"q c{i}", f"a c{i}"] * 3
    assert [m.content for m in await store.history("bob", "taken", 10)] == ["mine"]


async def test_history_keeps_user_meta_and_messages_keep_all_meta(
        store: ConversationStore) -> None:
    await store.append("alice", "c1", [Message("user", "q", {"intent": "hrv"}),
                                       Message("assistant", "a", {"evidence": [1]})])
    assert [m.meta for m in await store.history("alice", "c1", 10)] == [
        {"intent": "hrv"}, {}]
    assert [m.meta for m in await store.messages("alice", "c1", 10)] == [
        {"intent": "hrv"}, {"evidence": [1]}]


async def test_a_locked_file_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "auren.sqlite3"
    store = SQLiteConversations(path, timeout_s=5.0)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing
        pending = asyncio.create_task(store.append("alice", "c1", [Message("user", "q")]))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not pending.done()
        assert await store.conversations("alice", 10) == []  # reads go on under WAL
        other.execute("COMMIT")
        await asyncio.wait_for(pending, 2)
        assert [m.content for m in await store.history("alice", "c1", 10)] == ["q"]
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_too_long_is_a_503_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "auren.sqlite3"
    store = SQLiteConversations(path, timeout_s=0.2)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.append("alice", "c1", [Message("user", "q")]), 2)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.erase_user("alice"), 2)
        other.execute("ROLLBACK")
        await store.append("alice", "c1", [Message("user", "q")])
        assert await store.erase_user("alice") == {"conversations": 1, "messages": 1}
    finally:
        other.close()
        await store.close()
