from __future__ import annotations

import asyncio
import sqlite3

import pytest

from auren.adapters.sqlite import SQLiteStore
from auren.errors import StoreUnavailable
from auren.ingest.committer import GroupCommitter
from tests.helpers import delivery


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "auren.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_concurrent_submissions_share_transactions(store):
    batches: list[int] = []
    committer = GroupCommitter(store, max_batch=64, on_batch=lambda d, e, s: batches.append(d))
    committer.start()
    results = await asyncio.gather(*(committer.enqueue(delivery(f"k{i}", f"u{i % 3}",
                                                               range(i, i + 2)))
                                     for i in range(200)))
    await committer.close(5)
    assert sum(r.accepted for r in results) == await store.count_events()
    assert sum(batches) == 200
    assert max(batches) > 1, "no group commit happened under concurrency"
    assert max(batches) <= 64


async def test_a_failed_commit_fails_every_waiter_of_that_batch(store, tmp_path):
    committer = GroupCommitter(store)
    committer.start()
    assert (await committer.enqueue(delivery("ok", "u", range(1)))).accepted == 1
    with sqlite3.connect(tmp_path / "auren.sqlite3") as conn:
        conn.execute("DROP TABLE biometric_events")
    outcomes = await asyncio.gather(*(committer.enqueue(delivery(f"x{i}", "u", range(1)))
                                      for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    await committer.close(5)


async def test_close_drains_then_refuses(store):
    committer = GroupCommitter(store)
    committer.start()
    pending = [committer.enqueue(delivery(f"d{i}", "u", range(i, i + 1))) for i in range(50)]
    await committer.close(5)
    assert sum(r.accepted for r in await asyncio.gather(*pending)) == 50
    with pytest.raises(StoreUnavailable):
        await committer.enqueue(delivery("late", "u", range(1)))


async def test_on_settled_runs_once_per_delivery_whatever_the_outcome(store, tmp_path):
    settled: list[str] = []
    committer = GroupCommitter(store)
    committer.start()
    ok = [committer.enqueue(delivery(f"s{i}", "u", range(i, i + 1)),
                            lambda i=i: settled.append(f"s{i}")) for i in range(10)]
    assert sum(r.accepted for r in await asyncio.gather(*ok)) == 10
    assert sorted(settled) == sorted(f"s{i}" for i in range(10))

    with sqlite3.connect(tmp_path / "auren.sqlite3") as conn:
        conn.execute("DROP TABLE deliveries")
    failing = [committer.enqueue(delivery(f"f{i}", "u", range(1)),
                                 lambda i=i: settled.append(f"f{i}")) for i in range(5)]
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert sorted(s for s in settled if s[0] == "f") == [f"f{i}" for i in range(5)]
    await committer.close(5)
    with pytest.raises(StoreUnavailable):
        committer.enqueue(delivery("late", "u", range(1)), lambda: settled.append("late"))
    assert "late" not in settled and len(settled) == 15
