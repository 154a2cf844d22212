"""Committing deliveries: the ``Committer`` Protocol the pipeline uses, and group commit.

``GroupCommitter``: concurrent deliveries share one store transaction.

There is no timer. While one transaction is being written and fsynced, every delivery that
arrives waits in ``_pending``; when the write finishes, the next transaction takes all of them
at once. Under light load each delivery commits alone (lowest latency); under heavy load batches
grow by themselves and the cost per event falls. That is the speed lever of the bridge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from auren.adapters.base import DurableLog, WriteResult
from auren.errors import AurenError, StoreUnavailable
from auren.events import Delivery

log = logging.getLogger("auren.ingest")

_Pending = tuple[Delivery, asyncio.Future[WriteResult], Callable[[], None] | None]


class Committer(Protocol):
    """Makes a delivery durable and settles its future: the pipeline's durable step."""

    def start(self) -> None: ...

    def enqueue(self, delivery: Delivery, on_settled: Callable[[], None] | None = None
                ) -> asyncio.Future[WriteResult]:
        """Queue ``delivery``; the future settles once it is durable (or failed).

        ``on_settled`` runs exactly once, as soon as the delivery's write is committed or has
        failed (or at shutdown), before the waiting task resumes. If this raises, nothing was
        queued and ``on_settled`` will not run.
        """
        ...

    @property
    def queue_depth(self) -> int: ...

    async def close(self, timeout_s: float) -> None:
        """Stop taking new work; finish what was submitted within ``timeout_s``."""
        ...


class GroupCommitter:
    """``Committer`` that writes every delivery waiting at that moment in one batch."""

    def __init__(self, store: DurableLog, *, max_batch: int = 256,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._on_batch = on_batch

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    def enqueue(self, delivery: Delivery, on_settled: Callable[[], None] | None = None
                ) -> asyncio.Future[WriteResult]:
        """Queue ``delivery`` for the next commit; the future settles when it is durable.

        ``on_settled`` runs exactly once, as soon as the delivery's batch is committed or has
        failed (or at shutdown), before the waiting task even resumes: the pipeline hands its
        admission slot on from here, a loop iteration earlier than the task could. If this
        raises, nothing was queued and ``on_settled`` will not run.
        """
        if self._closing or self._task is None:
            raise StoreUnavailable("shutting down", retry_after_s=5)
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future, on_settled))
        self._wakeup.set()
        return future

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
                # One turn of the loop before the next batch: the webhooks this commit handed
                # admission slots to queue up first and ride along. Without it they missed
                # every other batch, which settled at half of MAX_CONCURRENT_WEBHOOKS and cost
                # a sixth of the bridge's throughput when measured.
                await asyncio.sleep(0)
            if self._closing:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._store.write_batch([d for d, _, _ in batch])
        except AurenError as exc:
            _settle(batch)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            log.warning("store write failed", extra={"error": type(exc).__name__,
                                                     "batch": len(batch)})
            return
        except Exception as exc:
            _settle(batch)
            log.exception("store write crashed", extra={"batch": len(batch)})
            error = StoreUnavailable("store write failed", retry_after_s=2)
            error.__cause__ = exc
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # cancelled at shutdown: the slots must not leak
            _settle(batch)
            raise
        _settle(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(len(d.events) for d, _, _ in batch),
                           time.perf_counter() - started)
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _fail_pending(self, error: AurenError) -> None:
        pending, self._pending = self._pending, []
        _settle(pending)
        for _, future, _ in pending:
            if not future.done():
                future.set_exception(error)


def _settle(batch: list[_Pending]) -> None:
    for _, _, on_settled in batch:
        if on_settled is not None:
            on_settled()
