"""Per-user token buckets, in process.

Each user may send ``rate_per_minute`` chats a minute with bursts up to the same number. The
state lives in the worker process: with N workers a user can get up to N times the rate, which
is acceptable for a cost guard; a shared limit would belong in Redis in the full stack.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from auren.errors import RateLimited


class RateLimiter:
    def __init__(self, rate_per_minute: int, *, max_users: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(rate_per_minute)
        self._per_second = rate_per_minute / 60.0
        self._max_users = max_users
        self._clock = clock
        # user -> (tokens, last refill); least recently seen first, so memory stays bounded.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, user_id: str) -> None:
        """Spend one token of ``user_id``'s bucket.

        Raises:
            RateLimited: the bucket is empty; ``Retry-After`` says when a token is back.
        """
        wait = self._spend(user_id)
        if wait:
            raise RateLimited("too many chat requests for this user", retry_after_s=wait)

    def try_take(self, user_id: str) -> bool:
        """Spend a token if there is one; False (nothing refused) when the bucket is empty.

        For what must be answered whatever the rate (an emergency): it still counts against
        the user's budget while there is one."""
        return self._spend(user_id) == 0

    def _spend(self, user_id: str) -> int:
        """0 when a token was spent, else the seconds until one is back."""
        now = self._clock()
        tokens, last = self._buckets.pop(user_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._per_second)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._per_second))
        self._buckets[user_id] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)
        return 0

    def forget(self, user_id: str) -> None:
        """Drop what is kept about the user (erasure)."""
        self._buckets.pop(user_id, None)
