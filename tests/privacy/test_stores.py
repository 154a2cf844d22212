"""The ``ConsentStore`` and ``AuditLog`` contract, run against every implementation: SQLite
(embedded), PostgreSQL (full stack, a fresh database per test) and the in-memory twins. Same
calls, same assertions, including what erasing a person leaves (nothing of them in consents;
audit records kept under a pseudonym, the id gone from the file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auren.adapters.postgres import PostgresPool
from auren.privacy.base import AuditLog, AuditQuery, AuditRecord, Consent, ConsentStore, key_id
from auren.privacy.memory import MemoryAudit, MemoryConsents
from auren.privacy.postgres import PostgresAudit, PostgresConsents
from auren.privacy.sqlite import SQLiteAudit, SQLiteConsents

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass
class Stores:
    consents: ConsentStore
    audit: AuditLog
    # Another audit log on the same database: another process, in production.
    other: AuditLog
    raw: Any


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.slow)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        audit = MemoryAudit()
        found = Stores(MemoryConsents(), audit, audit, None)
    elif request.param == "sqlite":
        path = tmp_path / "auren.sqlite3"
        found = Stores(SQLiteConsents(path), SQLiteAudit(path), SQLiteAudit(path), path)
    else:
        url = request.getfixturevalue("full_stack").new_database()
        found = Stores(PostgresConsents(PostgresPool(url)), PostgresAudit(PostgresPool(url)),
                       PostgresAudit(PostgresPool(url)), url)
    opened = [found.consents, found.audit] + ([found.other] if found.other is not found.audit
                                              else [])
    for store in opened:
        await store.open()
    yield found
    for store in opened:
        await store.close()


def consent(user: str, provider: str, n: int, account: str | None = "acct") -> Consent:
    return Consent(f"c-{user}-{provider}-{n}", user, provider, account, "personal_insights",
                   ("read:sleep", "offline"), "2026-12-01", T0 + timedelta(minutes=n))


def record(user: str | None, action: str = "read", minute: int = 0,
           actor: str = "key:0123") -> AuditRecord:
    return AuditRecord(at=T0 + timedelta(minutes=minute), actor=actor, action=action,
                       user_id=user, route="GET /api/v1/users/{user_id}/events",
                       client="127.0.0.1", outcome=200, request_id="r1")


async def test_consents_are_kept_withdrawn_and_given_again(stores: Stores):
    c = stores.consents
    await c.record(consent("alice", "whoop", 1))
    await c.record(consent("alice", "oura", 2, None))
    await c.record(consent("bob", "whoop", 3, "b-acct"))
    assert [x.provider for x in await c.consents_of("alice")] == ["whoop", "oura"]
    assert await c.withdrawn() == []
    assert not await c.is_withdrawn("alice", "whoop")
    assert not await c.is_withdrawn("alice", "fitbit")  # never given: nothing to withdraw

    changed = await c.withdraw("alice", "whoop", T0 + timedelta(hours=1))
    assert [(x.consent_id, x.withdrawn_at) for x in changed] == [
        ("c-alice-whoop-1", T0 + timedelta(hours=1))]
    assert await c.withdraw("alice", "whoop", T0 + timedelta(hours=2)) == []
    assert await c.is_withdrawn("alice", "whoop")
    assert not await c.is_withdrawn("bob", "whoop")
    (gone,) = await c.withdrawn()
    assert (gone.user_id, gone.provider, gone.provider_user_ids) == ("alice", "whoop",
                                                                     frozenset({"acct"}))
    listed = await c.consents_of("alice")
    assert [x.as_dict()["status"] for x in listed] == ["withdrawn", "given"]

    await c.record(consent("alice", "whoop", 9))  # connected again: a new consent
    assert not await c.is_withdrawn("alice", "whoop")
    assert await c.withdrawn() == []
    assert len(await c.consents_of("alice")) == 3

    assert await c.erase_user("alice") == 3
    assert await c.consents_of("alice") == []
    assert [x.user_id for x in await c.consents_of("bob")] == ["bob"]


async def test_the_audit_log_appends_in_order_and_filters(stores: Stores):
    seqs = [await stores.audit.append(record("alice", "read", 0)),
            await stores.other.append(record("bob", "export", 1)),
            await stores.audit.append(record("alice", "export", 2)),
            await stores.other.append(record(None, "read", 3))]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    everything = await stores.audit.query(AuditQuery(limit=100))
    assert [r.seq for r in everything] == seqs
    first = everything[0]
    assert (first.at, first.actor, first.action, first.user_id, first.route, first.client,
            first.outcome, first.request_id) == (T0, "key:0123", "read", "alice",
                                                  "GET /api/v1/users/{user_id}/events",
                                                  "127.0.0.1", 200, "r1")
    alice = await stores.audit.query(AuditQuery(user_id="alice"))
    assert [r.seq for r in alice] == [seqs[0], seqs[2]]
    exports = await stores.audit.query(AuditQuery(action="export"))
    assert [r.user_id for r in exports] == ["bob", "alice"]
    since = await stores.audit.query(AuditQuery(since=T0 + timedelta(minutes=2)))
    assert [r.seq for r in since] == seqs[2:]
    page = await stores.audit.query(AuditQuery(limit=2))
    rest = await stores.audit.query(AuditQuery(after_seq=page[-1].seq, limit=2))
    assert [r.seq for r in page + rest] == seqs


async def test_erasing_a_person_keeps_the_accounting_under_a_pseudonym(stores: Stores):
    await stores.audit.append(record("alice", "read", 0, actor="jwt:alice"))
    await stores.audit.append(record("alice", "export", 1, actor=key_id("k")))
    await stores.audit.append(record("bob", "read", 2, actor="jwt:bob"))
    replaced = await stores.audit.erase_user("alice", "erased-7f3a")
    assert replaced == 3  # twice the subject, once the actor of her own token
    found = await stores.audit.query(AuditQuery())
    assert [(r.actor, r.user_id) for r in found] == [
        ("jwt:erased-7f3a", "erased-7f3a"), (key_id("k"), "erased-7f3a"), ("jwt:bob", "bob")]
    assert await stores.audit.query(AuditQuery(user_id="alice")) == []
    if isinstance(stores.raw, Path):  # SQLite: the id is gone from the file's pages too
        import sqlite3

        conn = sqlite3.connect(stores.raw)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        assert b"alice" not in stores.raw.read_bytes()


def test_a_keys_id_is_stable_and_not_the_key():
    assert key_id("secret-key-1") == key_id("secret-key-1") != key_id("secret-key-2")
    assert "secret" not in key_id("secret-key-1") and key_id("x").startswith("key:")
