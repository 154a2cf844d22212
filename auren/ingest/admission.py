"""Admission control: at most N webhooks in their durable phase, a bounded queue behind them.

Past the queue, or after waiting ``wait_s`` for a slot, the answer is 503 with ``Retry-After``:
a provider retries a 503, while a request that hangs until the provider's own timeout (Fitbit
5 s, Withings 2 s) looks like a dead endpoint and can get the subscription disabled.

Every webhook passes through here, so the free-slot case is a plain counter (:meth:`try_enter`,
no coroutine, no lock object) and only a webhook that must wait pays for a future.
A slot is handed straight from the webhook that leaves to the first one waiting, so waiting
webhooks are served in arrival order and a newcomer can never overtake them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from auren.errors import Overloaded


class Admission:
    def __init__(self, limit: int, queue_limit: int, wait_s: float) -> None:
        if limit < 1 or queue_limit < 0 or wait_s < 0:
            raise ValueError("need limit >= 1, queue_limit >= 0 and wait_s >= 0")
        self.limit = limit
        self.queue_limit = queue_limit
        self._wait_s = wait_s
        # (deadline, waiter) in arrival order. Every waiter waits the same wait_s, so the
        # head always has the earliest deadline and one timer, armed for the head, serves
        # the whole line.
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def utilization(self) -> float:
        return self.in_flight / self.limit

    def try_enter(self) -> bool:
        """Take a free slot if there is one and nobody is waiting for it; never blocks."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def enter(self) -> None:
        """Take a slot, waiting in line for at most ``wait_s``.

        Raises:
            Overloaded: the line is full, or no slot came free in time (503 + Retry-After).
        """
        if self.try_enter():
            return
        if len(self._waiters) >= self.queue_limit:
            self.rejected += 1
            raise Overloaded("too many webhooks in flight", retry_after_s=1)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop.time() + self._wait_s, waiter))
        if self._timer is None:
            self._arm(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.leave()  # a slot was handed over just as the caller was cancelled
            else:
                self._forget(waiter)
            raise

    def leave(self) -> None:
        """Give the slot back: to the first webhook waiting, else to the pool."""
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; in_flight stays the same
                return
        self.in_flight -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_at(self._waiters[0][0], self._expire, loop) if self._waiters \
            else None

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        while self._waiters and self._waiters[0][0] <= now:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                self.rejected += 1
                waiter.set_exception(Overloaded("no capacity within the admission wait",
                                                retry_after_s=max(1, round(self._wait_s))))
        self._arm(loop)

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        for index, (_, queued) in enumerate(self._waiters):
            if queued is waiter:
                del self._waiters[index]
                return
