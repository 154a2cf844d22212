"""The SQLite write-ahead log stays bounded under load, and an erasure leaves no trace of the
erased person in the raw files (``auren.adapters.wal``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from auren.adapters.sqlite import SQLiteStore
from auren.adapters.wal import wal_path
from auren.events import Delivery, make_event
from tests.helpers import T0, run_server

MIB = 1_048_576
LIMIT = 16 * MIB


def _delivery(n: int) -> Delivery:
    """Ten events with random ids (each dirties its own index pages, as real traffic does)."""
    key = uuid.uuid4().hex
    events = [make_event(provider="auren", user_id=f"load-{n % 50}", provider_user_id="p",
                         metric="heart_rate", value=60 + i, unit="/min",
                         start=T0.replace(hour=i % 24, minute=n % 60),
                         source_record_id=f"{key}-{i}", received_at=T0) for i in range(10)]
    return Delivery(provider="auren", delivery_key=key, events=events)


@contextlib.contextmanager
def _readers(path: Path) -> Iterator[None]:
    """Two connections that keep read snapshots open in turn, always one at a time at least,
    as NEUROS and the read API do under load: SQLite cannot rewind the WAL past them."""
    stop = threading.Event()

    def read(offset: float) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        time.sleep(offset)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM biometric_events").fetchone()
            time.sleep(0.03)
            conn.execute("COMMIT")
            time.sleep(0.005)
        conn.close()

    threads = [threading.Thread(target=read, args=(offset,)) for offset in (0.0, 0.015)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)


async def _load(path: Path, limit: int, seconds: float) -> tuple[int, int, int]:
    """Group commits for ``seconds`` while readers hold snapshots; returns the largest WAL
    seen (sampled every 2 ms), the events written and the database's size at the end."""
    store = SQLiteStore(path, wal_limit_bytes=limit)
    await store.open()
    largest = written = 0
    wal = wal_path(path)
    stopped = asyncio.Event()

    async def sample() -> None:
        nonlocal largest
        while not stopped.is_set():
            with contextlib.suppress(FileNotFoundError):
                largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        with _readers(path):
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                batch = [_delivery(n + i) for i in range(50)]
                n += len(batch)
                results = await store.write_batch(batch)
                written += sum(r.accepted for r in results)
    finally:
        stopped.set()
        await sampler
        await store.close()
    return largest, written, await asyncio.to_thread(lambda: path.stat().st_size)


@pytest.mark.timeout(180)
async def test_the_wal_stays_under_its_limit_under_load(tmp_path: Path) -> None:
    # The same load with a limit too large to act on: the WAL must outgrow LIMIT, or this load
    # would prove nothing about the bound.
    control, control_events, _ = await _load(tmp_path / "control.sqlite3", 16 * 1024 * MIB, 8)
    largest, events, database = await _load(tmp_path / "bounded.sqlite3", LIMIT, 8)
    print(f"\nWAL limit {LIMIT / MIB:.0f} MiB: largest WAL {largest / MIB:.2f} MiB with the "
          f"bound ({events} events, database {database / MIB:.1f} MiB); "
          f"{control / MIB:.2f} MiB without it ({control_events} events)")
    assert control > LIMIT, "the load did not grow the WAL past the limit: no evidence"
    # Writes go on: each truncation pauses them for one checkpoint (tens of ms). The control
    # is no fair yardstick of cost: it never copies its WAL back into the database at all.
    assert events > 0.25 * control_events
    assert 0 < largest < LIMIT


@pytest.mark.timeout(120)
def test_an_erasure_leaves_no_trace_in_the_database_or_wal_files(tmp_path: Path) -> None:
    """A real NEUROS process: what a person said is in the raw files (the control), and after
    their erasure neither the database file nor its WAL contains any of it."""
    user = f"erase-me-{uuid.uuid4().hex[:8]}"
    secret = f"quokka-zanzibar-{uuid.uuid4().hex}"
    with run_server("neuros", tmp_path, {"NEUROS_RATE_PER_MINUTE": "1000"}) as neuros, \
            httpx.Client(base_url=neuros.base_url, timeout=15) as client:
        for turn in range(3):
            answer = client.post("/chat", content=orjson.dumps(
                {"user_id": user, "message": f"how did I sleep? {secret} turn {turn}"}))
            assert answer.status_code == 200, answer.text
        # Someone else's words stay.
        kept = f"kept-{uuid.uuid4().hex}"
        assert client.post("/chat", content=orjson.dumps(
            {"user_id": "other-user", "message": f"what about my HRV? {kept}"})).status_code == 200
        files = [neuros.data_dir / "auren.sqlite3", wal_path(neuros.data_dir / "auren.sqlite3")]

        def raw() -> bytes:
            return b"".join(p.read_bytes() for p in files if p.exists())

        assert secret.encode() in raw()  # the control: the words are on disk
        assert user.encode() in raw()
        erased = client.delete(f"/api/v1/users/{user}/conversations")
        assert erased.status_code == 200, erased.text
        assert erased.json()["deleted"]["messages"] == 6  # three questions, three replies
        left = raw()
        assert secret.encode() not in left
        assert kept.encode() in left
        # The person's id stays in one place: the audit log, the accounting of who read and
        # forgot what, which outlives a conversation (an erasure pseudonymizes it there; the
        # erasure's own tests grep for it).
        with sqlite3.connect(files[0]) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            naming = {t for t in tables if t != "audit_log" and user in repr(
                conn.execute(f'SELECT * FROM "{t}"').fetchall())}  # noqa: S608
        assert naming == set(), naming
        # (The WAL is not empty afterwards: the forget's own audit record follows the
        # truncation. What matters, that none of the words is in it, is checked above.)
