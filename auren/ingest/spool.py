"""The local spool: where accepted deliveries wait, fsynced, while Kafka is unreachable.

Reliability K4/K6: a webhook may be answered 2xx on the strength of the spool, so a record is
acknowledged only after ``fsync``; every record carries a CRC; the spool is bounded and, when
full, refuses (the bridge answers 503 + ``Retry-After``, the provider retries) rather than
dropping anything; a failed ``fsync`` stops the spool for good (the kernel may have discarded
the dirty pages, so a later ``fsync`` proves nothing).

Layout under ``<AUREN_DATA_DIR>/spool/``: append-only segment files ``<seq>.seg`` holding
records ``magic(2) version(1) pad(1) length(u32) crc32(u32) payload``, and ``ack`` naming the
replay position (segment and byte offset). Records are replayed in the order they were
written and a record is forgotten only after its publish was acknowledged (:meth:`Spool.ack`);
a whole segment is deleted once replayed. The ack position is written without ``fsync``:
after a crash the spool may replay a few records again, which the sink's unique keys absorb.

Recovery (:meth:`Spool.open`): every segment is scanned. A record cut short at the end of a
file (a crash mid-write, never acknowledged) is a torn tail: the file is truncated there. A
complete record whose CRC does not match is skipped and counted; a header that does not parse
ends that segment's records (nothing after it can be found again). Writing always starts a new
segment after a restart, so nothing is ever appended behind a damaged tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from auren.errors import Overloaded, StoreUnavailable

log = logging.getLogger("auren.spool")

_HEADER = struct.Struct("<2sBxII")
_MAGIC = b"AS"
_VERSION = 1
_SEGMENT_BYTES = 16 * 1_048_576
_MAX_RECORD = 64 * 1_048_576


class SpoolFull(Overloaded):
    title = "Spool full"
    slug = "spool-full"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Everything before record ``index`` of segment ``segment`` (and of earlier segments)."""

    segment: int
    index: int


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    # (header offset, payload length) of every intact record, in write order.
    records: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0  # bytes written and fsynced
    done: int = 0  # records replayed and acknowledged

    def end_of(self, index: int) -> int:
        """Byte offset just past record ``index - 1`` (0 for index 0)."""
        if index == 0:
            return 0
        offset, length = self.records[index - 1]
        return offset + _HEADER.size + length


def _scan(path: Path) -> tuple[list[tuple[int, int]], int, int]:
    """The intact records of a segment, where its readable part ends, and how many records
    were skipped as corrupt."""
    data = path.read_bytes()
    records: list[tuple[int, int]] = []
    corrupt = offset = 0
    while offset + _HEADER.size <= len(data):
        magic, version, length, crc = _HEADER.unpack_from(data, offset)
        if magic != _MAGIC or version != _VERSION or length > _MAX_RECORD:
            log.error("spool segment damaged; the rest of it is unreadable",
                      extra={"detail": f"{path.name}@{offset}"})
            corrupt += 1
            break
        end = offset + _HEADER.size + length
        if end > len(data):
            break  # a torn tail: written when the process died, never acknowledged
        if zlib.crc32(memoryview(data)[offset + _HEADER.size:end]) == crc:
            records.append((offset, length))
        else:
            corrupt += 1
            log.error("spool record failed its checksum; skipped",
                      extra={"detail": f"{path.name}@{offset}"})
        offset = end
    return records, offset, corrupt


def claim_slot(base: Path, *, slots: int = 64) -> tuple[Path, int]:
    """A spool directory ``<base>/<n>`` that no other live process uses, and the descriptor
    holding its lock (an exclusive ``flock``, released by the kernel when the process dies).

    Each bridge worker process needs a spool of its own. Slots are taken lowest first, so a
    worker that replaces a dead one finds the dead one's slot free, records and all, and
    replays them: no spool is ever orphaned.

    Raises:
        StoreUnavailable: every slot is taken.
    """
    base.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        directory = base / str(slot)
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return directory, fd
    raise StoreUnavailable(f"all {slots} spool slots under {base} are in use")


def free_slots(base: Path) -> list[tuple[Path, int]]:
    """Every spool slot under ``base`` that no live process holds, locked for the caller (a
    dead worker's records, left for its successor), with the descriptors holding the locks."""
    found: list[tuple[Path, int]] = []
    if not base.is_dir():
        return found
    for directory in sorted(p for p in base.iterdir() if p.is_dir()):
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        found.append((directory, fd))
    return found


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int = 256 * 1_048_576,
                 segment_bytes: int = _SEGMENT_BYTES, lock_fd: int | None = None) -> None:
        self._dir = directory
        self._lock_fd = lock_fd  # closed (lock released) by close()
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []  # oldest first
        self._fd: int | None = None  # open on the last segment while it takes appends
        self._next_seq = 1
        self._lock = asyncio.Lock()
        self._sync = ThreadPoolExecutor(1, thread_name_prefix="spool-fsync")
        self.failed: str | None = None
        self.corrupt = 0  # records skipped for a bad checksum or header (since open)
        self.torn = 0  # segments whose torn tail was cut at open

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(self._sync, self._recover)
        if self.pending_records:
            log.warning("spool holds records from a previous run; they will be replayed",
                        extra={"count": self.pending_records})

    def _recover(self) -> None:
        ack_seq, ack_offset = self._read_ack()
        for path in sorted(self._dir.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            self._next_seq = max(self._next_seq, seq + 1)
            records, readable, corrupt = _scan(path)
            self.corrupt += corrupt
            if readable < path.stat().st_size:
                if not corrupt:
                    self.torn += 1
                    log.warning("spool segment had a torn tail; cut",
                                extra={"detail": f"{path.name}@{readable}"})
                with open(path, "r+b") as fh:
                    fh.truncate(readable)
                    os.fsync(fh.fileno())
            segment = _Segment(seq, path, records, readable)
            if seq < ack_seq:
                segment.done = len(records)
            elif seq == ack_seq:
                segment.done = sum(1 for offset, _ in records if offset < ack_offset)
            if segment.done >= len(segment.records):
                path.unlink(missing_ok=True)
                continue
            self._segments.append(segment)

    @property
    def directory(self) -> Path:
        return self._dir

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._sync.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- size -----------------------------------------------------------------------------

    @property
    def pending_records(self) -> int:
        return sum(len(s.records) - s.done for s in self._segments)

    @property
    def pending_bytes(self) -> int:
        """Bytes on disk not yet replayed (what the bound applies to)."""
        return sum(s.size - s.end_of(s.done) for s in self._segments)

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    # --- writing --------------------------------------------------------------------------

    async def append(self, payloads: Sequence[bytes]) -> None:
        """Write the records and fsync them; on return they survive a crash.

        Raises:
            SpoolFull: the bound would be exceeded (nothing is written).
            StoreUnavailable: the disk refused the write or the fsync.
        """
        if self.failed:
            raise StoreUnavailable(self.failed, retry_after_s=30)
        headers = [_HEADER.pack(_MAGIC, _VERSION, len(p), zlib.crc32(p)) for p in payloads]
        blob = b"".join(h + p for h, p in zip(headers, payloads, strict=True))
        async with self._lock:
            if self.pending_bytes + len(blob) > self._max_bytes:
                raise SpoolFull(f"the spool holds {self.pending_bytes} bytes, its bound is "
                                f"{self._max_bytes}", retry_after_s=30)
            segment = self._writable(len(blob))
            assert self._fd is not None  # noqa: S101 - opened by _writable
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._sync, _write_and_sync, self._fd, blob)
            except OSError as exc:
                # Perhaps partly written, perhaps written and not durable: stop acknowledging
                # (the kernel may have dropped the pages) until an operator restarts.
                self.failed = f"spool write failed: {exc.strerror}"
                log.error("spool write failed; the spool is closed",
                          extra={"error": type(exc).__name__})
                raise StoreUnavailable(self.failed, retry_after_s=30) from exc
            offset = segment.size
            for payload in payloads:
                segment.records.append((offset, len(payload)))
                offset += _HEADER.size + len(payload)
            segment.size = offset

    def _writable(self, size: int) -> _Segment:
        last = self._segments[-1] if self._segments else None
        if self._fd is not None and last is not None and (
                last.size == 0 or last.size + size <= self._segment_bytes):
            return last
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        # Always a new file (also after a restart): nothing is appended behind a damaged tail.
        segment = _Segment(self._next_seq, self._dir / f"{self._next_seq:016d}.seg")
        self._next_seq += 1
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                           0o600)
        # The new file's directory entry must be durable too, or a crash could lose the file.
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._segments.append(segment)
        return segment

    # --- replay ---------------------------------------------------------------------------

    def read(self, max_records: int) -> tuple[list[bytes], Position]:
        """Up to ``max_records`` records not yet replayed, in write order, and the position
        to :meth:`ack` once every one of them is published."""
        out: list[bytes] = []
        position = Position(self._segments[0].seq, self._segments[0].done) if \
            self._segments else Position(0, 0)
        for segment in self._segments:
            if len(out) >= max_records:
                break
            if segment.done >= len(segment.records):
                continue
            take = segment.records[segment.done:segment.done + max_records - len(out)]
            start = take[0][0]
            end = take[-1][0] + _HEADER.size + take[-1][1]
            with open(segment.path, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
            for offset, length in take:
                begin = offset - start + _HEADER.size
                out.append(data[begin:begin + length])
            position = Position(segment.seq, segment.done + len(take))
        return out, position

    async def ack(self, position: Position) -> None:
        """Forget every record before ``position``: they were published."""
        async with self._lock:
            for segment in self._segments:
                if segment.seq < position.segment:
                    segment.done = len(segment.records)
                elif segment.seq == position.segment:
                    segment.done = max(segment.done, position.index)
            while self._segments and self._segments[0].done >= len(self._segments[0].records):
                done = self._segments[0]
                if done is self._segments[-1] and self._fd is not None:
                    os.close(self._fd)  # fully replayed: the next append starts a new file
                    self._fd = None
                self._segments.pop(0)
                done.path.unlink(missing_ok=True)
            first = self._segments[0] if self._segments else None
            self._write_ack(first.seq if first else self._next_seq,
                            first.end_of(first.done) if first else 0)

    # --- erasure --------------------------------------------------------------------------

    async def scrub(self, drop: Callable[[bytes], bytes | None]) -> int:
        """Rewrite every segment holding records ``drop`` changes: for each record not yet
        replayed, ``drop`` answers None (the record goes), the record itself (kept as it is) or
        a new payload (kept without what was erased). A changed segment is written anew,
        fsynced, the old file's bytes overwritten with zeros and fsynced, and the new file
        renamed over it, so nothing of what went stays in the spool's files. Returns how many
        records changed or went. Appends wait meanwhile; the next one starts a new segment."""
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(
                self._sync, self._scrub, drop)

    def _scrub(self, drop: Callable[[bytes], bytes | None]) -> int:
        changed = 0
        for segment in list(self._segments):
            kept: list[bytes] = []
            touched = 0
            with open(segment.path, "rb") as fh:
                data = fh.read(segment.size)
            for offset, length in segment.records[segment.done:]:
                payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
                screened = drop(payload)
                if screened is not payload:
                    touched += 1
                if screened is not None:
                    kept.append(screened)
            if not touched:
                continue
            changed += touched
            if segment is self._segments[-1] and self._fd is not None:
                os.close(self._fd)  # appends go to a new segment from now on
                self._fd = None
            blob = b"".join(_HEADER.pack(_MAGIC, _VERSION, len(k), zlib.crc32(k)) + k
                            for k in kept)
            if kept:
                tmp = segment.path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write_and_sync(fd, blob)
                finally:
                    os.close(fd)
            _zero(segment.path, len(data))
            if kept:
                tmp.replace(segment.path)
                records, offset = [], 0
                for payload in kept:
                    records.append((offset, len(payload)))
                    offset += _HEADER.size + len(payload)
                segment.records, segment.size, segment.done = records, offset, 0
            else:
                segment.path.unlink(missing_ok=True)
                self._segments.remove(segment)
            _sync_directory(self._dir)
        if changed:
            first = self._segments[0] if self._segments else None
            self._write_ack(first.seq if first else self._next_seq,
                            first.end_of(first.done) if first else 0)
        return changed

    def _write_ack(self, seq: int, offset: int) -> None:
        tmp = self._dir / "ack.tmp"
        tmp.write_text(f"{seq} {offset}\n")
        tmp.replace(self._dir / "ack")

    def _read_ack(self) -> tuple[int, int]:
        with contextlib.suppress(OSError, ValueError):
            seq, offset = (self._dir / "ack").read_text().split()
            return int(seq), int(offset)
        return 0, 0


def _write_and_sync(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _zero(path: Path, size: int) -> None:
    """Overwrite the file's first ``size`` bytes with zeros and fsync them."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        _write_and_sync(fd, bytes(size))
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
