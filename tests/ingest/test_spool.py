from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auren.errors import StoreUnavailable
from auren.ingest import spool as spool_module
from auren.ingest.spool import Spool, SpoolFull


@pytest.fixture
async def spool(tmp_path):
    s = Spool(tmp_path / "spool", max_bytes=1_000_000, segment_bytes=200)
    await s.open()
    yield s
    await s.close()


def _records(n: int, start: int = 0) -> list[bytes]:
    return [f"record-{i:04d}".encode() * 3 for i in range(start, start + n)]


async def _reopen(path: Path, **kw) -> Spool:
    s = Spool(path, **kw)
    await s.open()
    return s


async def test_records_replay_in_order_and_go_away_once_acknowledged(spool, tmp_path):
    await spool.append(_records(3))
    await spool.append(_records(4, start=3))
    assert spool.pending_records == 7
    assert len(list((tmp_path / "spool").glob("*.seg"))) > 1, "small segments rotate"
    batch, upto = spool.read(5)
    assert batch == _records(5)
    await spool.ack(upto)
    assert spool.pending_records == 2
    rest, upto = spool.read(100)
    assert rest == _records(2, start=5)
    await spool.ack(upto)
    assert spool.empty and spool.pending_bytes == 0
    assert list((tmp_path / "spool").glob("*.seg")) == []
    assert spool.read(10)[0] == []


async def test_what_was_not_acknowledged_survives_a_restart(spool, tmp_path):
    await spool.append(_records(6))
    _, upto = spool.read(2)
    await spool.ack(upto)
    unacked, _ = spool.read(1)  # read but never acknowledged: must come back
    assert unacked == _records(1, start=2)
    await spool.close()
    again = await _reopen(tmp_path / "spool")
    try:
        assert again.pending_records == 4
        assert again.read(100)[0] == _records(4, start=2)
        await again.append(_records(1, start=6))
        replay, upto = again.read(100)
        assert replay == _records(5, start=2)
        await again.ack(upto)
        assert again.empty
    finally:
        await again.close()


async def test_a_torn_tail_is_cut_and_everything_before_it_kept(tmp_path):
    s = await _reopen(tmp_path / "spool")
    await s.append(_records(3))
    await s.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    size = segment.stat().st_size
    with segment.open("ab") as fh:  # a crash in the middle of writing the next record
        fh.write(b"AS\x01\x00\xff\x00\x00\x00\x00\x00\x00\x00partial")
    again = await _reopen(tmp_path / "spool")
    try:
        assert again.torn == 1 and again.corrupt == 0
        assert segment.stat().st_size == size
        assert again.read(10)[0] == _records(3)
    finally:
        await again.close()


async def test_a_record_failing_its_checksum_is_skipped_and_counted(tmp_path):
    s = await _reopen(tmp_path / "spool")
    await s.append(_records(3))
    await s.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = data.index(b"record-0001")
    data[second] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = await _reopen(tmp_path / "spool")
    try:
        assert again.corrupt == 1
        assert again.read(10)[0] == [_records(3)[0], _records(3)[2]]
    finally:
        await again.close()


async def test_full_means_refused_with_retry_after_never_dropped(tmp_path):
    s = await _reopen(tmp_path / "spool", max_bytes=200)
    try:
        await s.append(_records(3))  # 3 x (12 + 33) bytes
        with pytest.raises(SpoolFull) as info:
            await s.append(_records(2, start=3))
        assert info.value.status == 503 and "Retry-After" in info.value.headers()
        assert s.read(10)[0] == _records(3), "the refused records were not written"
        _, upto = s.read(10)
        await s.ack(upto)
        await s.append(_records(2, start=3))  # room again
    finally:
        await s.close()


async def test_a_failed_fsync_closes_the_spool_for_good(tmp_path, monkeypatch):
    s = await _reopen(tmp_path / "spool")

    def broken(fd: int, blob: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    try:
        monkeypatch.setattr(spool_module, "_write_and_sync", broken)
        with pytest.raises(StoreUnavailable):
            await s.append(_records(1))
        monkeypatch.undo()
        with pytest.raises(StoreUnavailable, match="spool write failed"):
            await s.append(_records(1))
    finally:
        await s.close()


_WRITER = """
import asyncio, sys
from pathlib import Path
from auren.ingest.spool import Spool

async def main():
    s = Spool(Path(sys.argv[1]), segment_bytes=4096)
    await s.open()
    i = 0
    while True:
        batch = [f"r{i + k:06d}".encode() * 20 for k in range(5)]
        await s.append(batch)
        i += 5
        print(i, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_kill_9_mid_write_keeps_every_acknowledged_record(tmp_path, delay):
    """K6: a writer killed at a random moment; every append that returned is replayed, in
    order, and a torn record (if the kill hit one) is cut, never served."""
    directory = tmp_path / "spool"
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(directory)],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    output = b""
    started = time.monotonic()
    while time.monotonic() - started < delay + 5:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        output += chunk
        if not chunk:
            if time.monotonic() - started > delay and b"\n" in output:
                break
            time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    os.set_blocking(fd, True)
    output += process.stdout.read()
    process.stdout.close()
    # Only complete lines: a number is printed after its append returned.
    lines = output.split(b"\n")[:-1]
    acknowledged = max((int(line) for line in lines), default=0)
    assert acknowledged > 0

    async def replay() -> tuple[list[bytes], int]:
        s = await _reopen(directory)
        try:
            return s.read(10_000_000)[0], s.corrupt
        finally:
            await s.close()

    records, corrupt = asyncio.run(replay())
    expected = [f"r{i:06d}".encode() * 20 for i in range(len(records))]
    assert records == expected, "in write order, nothing torn or corrupt served"
    assert len(records) >= acknowledged
    assert corrupt == 0


async def test_scrub_rewrites_segments_without_what_went_and_leaves_no_bytes_of_it(tmp_path):
    path = tmp_path / "spool"
    spool = Spool(path, max_bytes=1_000_000, segment_bytes=200)
    await spool.open()
    try:
        await spool.append(_records(6))
        _, upto = spool.read(1)
        await spool.ack(upto)  # record 0 already replayed
        secret = b"record-0003"

        def drop(payload: bytes) -> bytes | None:
            if payload.startswith(secret):
                return None
            if payload.startswith(b"record-0004"):
                return b"trimmed-0004"  # kept without part of it
            return payload

        assert await spool.scrub(drop) == 2
        assert all(secret not in p.read_bytes() for p in path.glob("*"))
        kept = [*_records(2, start=1), b"trimmed-0004", *_records(1, start=5)]
        assert spool.read(100)[0] == kept
        await spool.append(_records(1, start=9))  # appends go on, in a new segment
    finally:
        await spool.close()
    reopened = await _reopen(path, max_bytes=1_000_000, segment_bytes=200)
    try:
        assert reopened.read(100)[0] == [*kept, *_records(1, start=9)]
        assert reopened.corrupt == 0 and reopened.torn == 0
    finally:
        await reopened.close()
