"""The ``ConnectionStore`` and ``JobQueue`` contract, run against every implementation: SQLite
(embedded), PostgreSQL (full stack, a fresh database per test) and the in-memory twins.

Same calls, same assertions: people, single-use connect states, connections with their tokens
(never readable in the database), the single-flight refresh across store instances (processes
in production), and the jobs' lifecycle: claim, lease, reclaim, retry, dead letters, blocked
jobs released on reconnect.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auren.adapters.postgres import PostgresPool, PostgresStore
from auren.adapters.sqlite import SQLiteStore
from auren.connections.base import (
    ACTIVE,
    BLOCKED,
    DEAD,
    DONE,
    PENDING,
    REAUTHORIZATION_REQUIRED,
    RUNNING,
    Connection,
    ConnectionStore,
    ConnectState,
    JobQueue,
    Tokens,
)
from auren.connections.crypto import TokenCipher, generate_key, parse_key
from auren.connections.memory import MemoryConnections, MemoryJobs
from auren.connections.postgres import PostgresConnections, PostgresJobs
from auren.connections.sqlite import SQLiteConnections, SQLiteJobs
from auren.events import FetchJob, fetch_job_id

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CIPHER = TokenCipher([parse_key(generate_key())])


@dataclass
class Stores:
    connections: ConnectionStore
    jobs: JobQueue
    # Another instance on the same database: another process, in production.
    other: ConnectionStore
    raw: Any  # how to read the database around the store (None for memory)


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.slow)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    opened: list[Any] = []
    if request.param == "memory":
        memory = MemoryConnections()
        found = Stores(memory, MemoryJobs(), memory, None)
    elif request.param == "sqlite":
        path = tmp_path / "auren.sqlite3"
        events = SQLiteStore(path)
        await events.open()
        opened.append(events)
        found = Stores(SQLiteConnections(path, CIPHER, refresh_lease_s=5),
                       SQLiteJobs(path, 10.0), SQLiteConnections(path, CIPHER), path)
    else:
        url = request.getfixturevalue("full_stack").new_database()
        events = PostgresStore(url)
        await events.open()
        opened.append(events)
        found = Stores(PostgresConnections(PostgresPool(url), CIPHER),
                       PostgresJobs(PostgresPool(url)),
                       PostgresConnections(PostgresPool(url), CIPHER), url)
    for store in (found.connections, found.jobs, found.other):
        await store.open()
    yield found
    for store in (found.connections, found.jobs, found.other):
        await store.close()
    for store in opened:
        await store.close()


def connection(user: str = "u1", provider: str = "whoop", puid: str = "w1",
               version: str = "a") -> Connection:
    return Connection(provider, puid, user, ACTIVE, ("read:sleep", "offline"), T0, T0,
                      tokens=Tokens(f"access-{version}-secret", f"refresh-{version}-secret",
                                    T0 + timedelta(hours=1)), meta={"offset": 60})


def job(n: int, provider: str = "whoop", puid: str = "w1") -> FetchJob:
    return FetchJob(job_id=fetch_job_id(provider, puid, n), provider=provider,
                    user_id=f"{provider}:{puid}", provider_user_id=puid, kind="sleep.updated",
                    object_id=str(n), params={"n": n}, received_at=T0 + timedelta(seconds=n))


async def test_people_are_created_once(stores: Stores):
    first, created = await stores.connections.create_user("alice", T0)
    again, created_again = await stores.connections.create_user("alice", T0 + timedelta(1))
    assert (created, created_again) == (True, False)
    assert first.created_at == again.created_at == T0
    assert await stores.connections.get_user("alice") == first
    assert await stores.connections.get_user("bob") is None


async def test_a_connect_state_is_taken_once(stores: Stores):
    state = ConnectState("nonce-1", "alice", "fitbit", "verifier-" + "v" * 50,
                         T0 + timedelta(minutes=10))
    await stores.connections.save_state(state)
    assert await stores.other.take_state("nonce-1") == state
    assert await stores.connections.take_state("nonce-1") is None


async def test_connections_keep_their_tokens_encrypted_and_move_with_their_person(
        stores: Stores):
    stored = await stores.connections.upsert_connection(connection())
    assert stored.tokens is not None and stored.tokens.access_token == "access-a-secret"
    assert stored.meta == {"offset": 60} and stored.status == ACTIVE
    if isinstance(stores.raw, Path):
        with sqlite3.connect(stores.raw) as conn:
            dump = "\n".join(conn.iterdump())
        assert "access-a-secret" not in dump and "refresh-a-secret" not in dump
        assert "verifier-" not in dump
    # The same account connected again, by another person: it is theirs now.
    moved = await stores.connections.upsert_connection(connection(user="u2", version="b"))
    assert moved.user_id == "u2" and moved.token_version > stored.token_version
    assert await stores.connections.connections_of("u1") == []
    assert [c.key for c in await stores.connections.connections_of("u2")] == [("whoop", "w1")]
    await stores.connections.set_status("whoop", "w1", REAUTHORIZATION_REQUIRED, "revoked", T0)
    await stores.connections.record_fetch("whoop", "w1", ok=True, error=None, now=T0)
    await stores.connections.merge_meta("whoop", "w1", {"zone": "+01:00"})
    found = await stores.connections.get_connection("whoop", "w1")
    assert found is not None and found.status == REAUTHORIZATION_REQUIRED
    assert found.last_error == "revoked" and found.last_success_at == T0
    assert found.meta == {"offset": 60, "zone": "+01:00"}
    assert await stores.connections.status_counts() == {("whoop", REAUTHORIZATION_REQUIRED): 1}
    await stores.connections.forget("whoop", "w1", T0)
    gone = await stores.connections.get_connection("whoop", "w1")
    assert gone is not None and gone.tokens is None and gone.status == "disconnected"


async def test_a_refresh_is_single_flight_across_tasks_and_instances(stores: Stores):
    stored = await stores.connections.upsert_connection(connection())
    calls: list[str] = []

    async def refresh(current: Connection) -> Tokens:
        assert current.tokens is not None
        calls.append(current.tokens.refresh_token or "")
        await asyncio.sleep(0.3)  # the provider is slow: everyone else arrives meanwhile
        return Tokens("access-b-secret", "refresh-b-secret", T0 + timedelta(hours=2))

    results = await asyncio.gather(*(
        store.refresh_tokens("whoop", "w1", stored.token_version, refresh, T0)
        for store in [stores.connections, stores.other] * 3))
    assert calls == ["refresh-a-secret"]  # one refresh, with the token that was current
    assert {r.tokens.access_token for r in results if r.tokens} == {"access-b-secret"}
    assert len({r.token_version for r in results}) == 1

    async def refused(current: Connection) -> Tokens:
        raise LookupError("provider said no")

    with pytest.raises(LookupError):
        await stores.connections.refresh_tokens("whoop", "w1", results[0].token_version,
                                                refused, T0)
    after = await stores.other.get_connection("whoop", "w1")
    assert after is not None and after.tokens is not None
    assert after.tokens.access_token == "access-b-secret"  # a failed refresh stores nothing


async def test_jobs_are_claimed_under_a_lease_and_claimed_again_when_it_runs_out(
        stores: Stores):
    assert await stores.jobs.add([job(1), job(2), job(3)]) == 3
    assert await stores.jobs.add([job(1)]) == 0
    first = await stores.jobs.claim(2, 5.0, T0)
    assert [r.job.job_id for r in first] == [job(1).job_id, job(2).job_id]
    assert {(r.state, r.attempts) for r in first} == {(RUNNING, 1)}
    assert [r.job.job_id for r in await stores.jobs.claim(5, 5.0, T0)] == [job(3).job_id]
    assert await stores.jobs.claim(5, 5.0, T0 + timedelta(seconds=1)) == []
    await stores.jobs.renew([job(1).job_id], T0 + timedelta(seconds=60))
    # job 2's lease ran out (its fetcher died); job 1's was renewed.
    later = await stores.jobs.claim(5, 5.0, T0 + timedelta(seconds=10))
    assert {r.job.job_id for r in later} == {job(2).job_id, job(3).job_id}
    assert {r.attempts for r in later} == {2}
    restored = later[0].job
    assert restored.params == job(2).params or restored.params == job(3).params
    assert restored.received_at in (job(2).received_at, job(3).received_at)


async def test_a_job_run_ends_done_retried_dead_or_blocked(stores: Stores):
    await stores.jobs.add([job(n) for n in range(1, 6)])
    claimed = await stores.jobs.claim(5, 5.0, T0)
    ids = [r.job.job_id for r in claimed]
    await stores.jobs.finish(ids[0], DONE, T0)
    await stores.jobs.finish(ids[1], PENDING, T0, error="HTTP 503",
                             due_at=T0 + timedelta(seconds=30))
    await stores.jobs.finish(ids[2], PENDING, T0, error="429", due_at=T0 + timedelta(
        seconds=30), rate_limited=True)
    await stores.jobs.finish(ids[3], DEAD, T0, error="HTTP 403")
    await stores.jobs.finish(ids[4], BLOCKED, T0, error="grant revoked")
    assert await stores.jobs.claim(5, 5.0, T0 + timedelta(seconds=29)) == []
    again = await stores.jobs.claim(5, 5.0, T0 + timedelta(seconds=31))
    by_id = {r.job.job_id: r for r in again}
    assert set(by_id) == {ids[1], ids[2]}
    assert (by_id[ids[1]].attempts, by_id[ids[1]].rate_waits) == (2, 0)
    assert (by_id[ids[2]].attempts, by_id[ids[2]].rate_waits) == (1, 1)  # a wait, not a try
    dead = await stores.jobs.listing(DEAD, "whoop", 10)
    assert [(r.job.job_id, r.last_error) for r in dead] == [(ids[3], "HTTP 403")]
    counts = await stores.jobs.counts()
    assert counts == {("whoop", DONE): 1, ("whoop", RUNNING): 2, ("whoop", DEAD): 1,
                      ("whoop", BLOCKED): 1}
    assert await stores.jobs.retry(None, T0, state=DEAD, provider="oura") == 0
    assert await stores.jobs.retry(None, T0, state=DEAD) == 1
    assert await stores.jobs.release("whoop", "w1", T0) == 1
    retried = {r.job.job_id: r for r in await stores.jobs.claim(5, 5.0, T0)}
    assert set(retried) == {ids[3], ids[4]}
    assert retried[ids[3]].attempts == 1  # a retried dead letter starts its attempts afresh
    got = await stores.jobs.get(ids[0])
    assert got is not None and got.state == DONE and await stores.jobs.get("nope") is None
