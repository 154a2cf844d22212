"""Group commit: concurrent deliveries share one store transaction.

There is no timer. While one transaction is being written and fsynced, every delivery that
arrives waits in ``_pending``; when the write finishes, the next transaction takes all of them
at once. Under light load each delivery commits alone (lowest latency); under heavy load batches
grow by themselves and the cost per event falls. That is the speed lever of the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from auren.adapters.base import DurableLog, WriteResult
from auren.errors import AurenError, StoreUnavailable
from auren.providers.base import Delivery

log = logging.getLogger("auren.ingest")

_Pending = tuple[Delivery, asyncio.Future[WriteResult]]


class GroupCommitter:
    def __init__(self, store: DurableLog, *, max_batch: int = 256,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._on_batch = on_batch

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def submit(self, delivery: Delivery) -> WriteResult:
        if self._closing or self._task is None:
            raise StoreUnavailable("shutting down", retry_after_s=5)
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        self._wakeup.set()
        return await future

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    async def close(self, timeout_s: float) -> None:
        """Stop taking new work, finish what was submitted (bounded by ``timeout_s``)."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            self._fail_pending(StoreUnavailable("shutdown timed out", retry_after_s=5))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._store.write_batch([d for d, _ in batch])
        except AurenError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            log.warning("store write failed", extra={"error": type(exc).__name__,
                                                     "batch": len(batch)})
            return
        except Exception as exc:
            log.exception("store write crashed", extra={"batch": len(batch)})
            error = StoreUnavailable("store write failed", retry_after_s=2)
            error.__cause__ = exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(len(d.events) for d, _ in batch))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _fail_pending(self, error: AurenError) -> None:
        for _, future in self._pending:
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
