"""The SQLite file's write-ahead log kept bounded, and scrubbed after an erasure.

Each SQLite store (the events, NEUROS's conversations: the same file) keeps one
:class:`WalKeeper`. It owns a connection on a thread of its own and, in the background:

- every ``interval_s``, a PASSIVE checkpoint (copies what no reader still needs back into the
  database; never blocks a reader or a writer), as before;
- a truncating checkpoint (``wal_checkpoint(TRUNCATE)``) when the WAL has passed half of
  ``limit_bytes``, and when the file has been idle (no commit by anyone) since the last tick.
  PASSIVE alone cannot bound the WAL: SQLite rewinds it to its start only when a checkpoint has
  copied every frame and no reader is using it, which never happens while reads and writes
  keep coming (measured: a 438 MB WAL beside a 36 MB database). A truncating checkpoint waits
  (boundedly) for the current writer and the readers of older snapshots, copies everything and
  cuts the file to zero bytes. Its size is polled every ``poll_s`` (a ``stat``), so the
  headroom of half the limit covers what arrives while it runs;
- :meth:`scrub`: the same truncating checkpoint at once, for an erasure that has just
  committed. With ``secure_delete`` on (the connection prologue, ``auren.adapters.sqlite``) the
  deleted rows are zeroed in the pages the erasure wrote; the checkpoint copies those pages
  over the database's and removes the older frames that still hold the erased text from the
  WAL. Should readers keep it from completing, it is retried at every poll until it does.

``journal_size_limit`` (set by the prologue to the same limit) makes SQLite itself cut the WAL
file back to the limit whenever it rewinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from auren.errors import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("auren.store")

DEFAULT_WAL_LIMIT_BYTES = 64 * 1_048_576
# How long a truncating checkpoint may wait for the writer and old readers: writers of other
# connections are held off meanwhile (they retry), so it is kept short and simply tried again.
_TRUNCATE_WAIT_MS = 500


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


class WalKeeper:
    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection], *,
                 limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES, timeout_s: float = 10.0,
                 interval_s: float = 1.0, poll_s: float = 0.05, name: str = "sqlite",
                 pause_writes: Callable[[], AbstractAsyncContextManager[Any]] | None = None
                 ) -> None:
        self._wal = wal_path(path)
        self._connect = connect
        # Held around a truncating checkpoint: the store's own writer waits meanwhile. A writer
        # that commits back to back takes the lock again between the checkpoint's busy polls,
        # and would starve it for ever (measured: the WAL went on growing past 60 MiB).
        self._pause = pause_writes or contextlib.nullcontext
        self._limit = limit_bytes
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._poll_s = poll_s
        self._name = name
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._scrub_pending = False
        self._data_version: int | None = None
        self.truncations = 0  # completed truncating checkpoints (for tests and health)

    async def open(self) -> None:
        self._conn = await self._run(self._connect)
        self._task = asyncio.create_task(self._loop(), name=f"{self._name}-checkpoint")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)

    async def scrub(self) -> bool:
        """A truncating checkpoint now (after an erasure committed): True once the WAL holds
        nothing; otherwise it stays pending and the loop retries it at every poll."""
        self._scrub_pending = True
        return await self._truncate()

    async def before_write(self) -> None:
        """For a writer that commits back to back, called with its write lock held before each
        transaction: past half the limit, the truncating checkpoint runs first. (One group
        commit can add megabytes, more than the loop's poll can catch in time, and a writer
        that never lets go of its lock would never give the loop its turn.)"""
        if self._over():
            await self._truncate(paused=True)

    def wal_bytes(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except FileNotFoundError:
            return 0

    async def _loop(self) -> None:
        since_passive = 0.0
        while True:
            await asyncio.sleep(self._poll_s)
            since_passive += self._poll_s
            try:
                size = self.wal_bytes()
                if self._scrub_pending or size > self._limit // 2:
                    await self._truncate(when=self._due)
                elif since_passive >= self._interval_s:
                    since_passive = 0.0
                    idle = await self._run(self._unchanged)
                    if idle and size > 0:
                        await self._truncate()
                    else:
                        await self._run(lambda: self._execute("PRAGMA wal_checkpoint(PASSIVE)"))
            except StoreUnavailable:
                log.warning("checkpoint failed", extra={"detail": self._name})

    def _over(self) -> bool:
        return self.wal_bytes() > self._limit // 2

    def _due(self) -> bool:
        return self._scrub_pending or self._over()

    async def _truncate(self, *, paused: bool = False,
                        when: Callable[[], bool] | None = None) -> bool:
        async with contextlib.nullcontext() if paused else self._pause():
            # Decided again once writes are paused: the writer may have done it meanwhile.
            if when is not None and not when():
                return True
            busy, frames, _ = await self._run(self._truncate_now)
        done = busy == 0 and frames == 0
        if done:
            self._scrub_pending = False
            self.truncations += 1
        return done

    def _truncate_now(self) -> tuple[int, int, int]:
        conn = self._require()
        conn.execute(f"PRAGMA busy_timeout={_TRUNCATE_WAIT_MS}")
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
        return int(row[0]), int(row[1]), int(row[2])

    def _unchanged(self) -> bool:
        """Whether no connection (of any process) committed since the last call."""
        version = int(self._require().execute("PRAGMA data_version").fetchone()[0])
        unchanged = version == self._data_version
        self._data_version = version
        return unchanged

    def _execute(self, sql: str) -> None:
        self._require().execute(sql).fetchall()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("checkpointer is not open")
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await loop.run_in_executor(self._thread, fn)
        except TimeoutError as exc:
            raise StoreUnavailable("checkpoint did not finish in time", retry_after_s=2) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"checkpoint error: {type(exc).__name__}",
                                   retry_after_s=2) from exc
