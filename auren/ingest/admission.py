"""Admission control: at most N webhooks in their durable phase, a bounded queue behind them.

Past the queue, or after waiting ``wait_s`` for a slot, the answer is 503 with ``Retry-After``:
a provider retries a 503, while a request that hangs until the provider's own timeout (Fitbit
5 s, Withings 2 s) looks like a dead endpoint and can get the subscription disabled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from auren.errors import Overloaded


class Admission:
    def __init__(self, limit: int, queue_limit: int, wait_s: float) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self._wait_s = wait_s
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.rejected = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self.waiting >= self.queue_limit:
                self.rejected += 1
                raise Overloaded("too many webhooks in flight", retry_after_s=1)
            self.waiting += 1
            try:
                # asyncio.timeout, not wait_for: no extra task per waiting webhook.
                async with asyncio.timeout(self._wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                self.rejected += 1
                raise Overloaded("no capacity within the admission wait",
                                 retry_after_s=max(1, round(self._wait_s))) from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()

    @property
    def utilization(self) -> float:
        return self.in_flight / self.limit
