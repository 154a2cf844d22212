"""Each provider's documented rate limits, kept on AUREN's side before a call is made.

A provider refuses calls past its limit (429, or Withings' status 601) and some stop an app
that keeps trying. So every call first counts itself in fixed windows mirroring the provider's
documented limits, per app or per person, and waits (or, when the wait is long, reschedules its
job) instead of calling. In the full stack the windows are counted in Redis, so every fetcher
process shares one budget; without Redis, or when Redis does not answer, a process counts in
memory (failing open to its own count rather than to none). Windows are aligned to multiples
of their length since the epoch, as Fitbit's hour resets at the top of the hour.

The figures are the providers' own where they publish them; the ones no provider states
exactly are marked *unconfirmed* in docs/connections.md and kept conservative.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Window:
    scope: Literal["app", "user"]
    limit: int
    window_s: int


LIMITS: dict[str, tuple[Window, ...]] = {
    # 5,000 per 5 minutes per access token (one stated value; sources disagree).
    "oura": (Window("user", 5000, 300),),
    "whoop": (Window("app", 100, 60), Window("app", 10_000, 86_400)),
    "fitbit": (Window("user", 150, 3600),),
    # 500 + 20 per registered user per 15 minutes, 5,000 + 100 per user per day: the base
    # alone, since AUREN does not count Polar's registrations against its window.
    "polar": (Window("app", 500, 900), Window("app", 5000, 86_400)),
    "withings": (Window("app", 120, 60),),
    # An assumed figure: Garmin publishes none for the Health API.
    "garmin": (Window("app", 100, 60),),
    "terra": (),
}


def scaled(factor: float, limits: Mapping[str, tuple[Window, ...]] = LIMITS
           ) -> dict[str, tuple[Window, ...]]:
    """Every limit times ``factor`` (a provider that granted the app more)."""
    return {provider: tuple(Window(w.scope, max(1, int(w.limit * factor)), w.window_s)
                            for w in windows) for provider, windows in limits.items()}


class WindowCounter(Protocol):
    async def window_count(self, bucket: str, window_s: int) -> int | None:
        """Count one call in the bucket's current window; the count, or None if unknown."""
        ...


class LocalCounter:
    """Windows counted in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, int, int], int] = {}

    async def window_count(self, bucket: str, window_s: int) -> int | None:
        return self.count(bucket, window_s)

    def count(self, bucket: str, window_s: int) -> int:
        window = int(self._clock() // window_s)
        key = (bucket, window_s, window)
        self._counts[key] = self._counts.get(key, 0) + 1
        if len(self._counts) > 10_000:  # windows that ended are never read again
            self._counts = {k: v for k, v in self._counts.items()
                            if k[2] >= int(self._clock() // k[1])}
        return self._counts[key]


class RateLimiter:
    def __init__(self, shared: WindowCounter | None = None, *,
                 limits: Mapping[str, tuple[Window, ...]] = LIMITS,
                 clock: Callable[[], float] = time.time) -> None:
        self._shared = shared
        self._local = LocalCounter(clock)
        self._limits = limits
        self._clock = clock

    async def acquire(self, provider: str, user: str) -> float:
        """Count one call of ``user`` at ``provider``: 0 when it may go now, else the seconds
        until the fullest window resets (the call was not made; ask again then)."""
        wait = 0.0
        now = self._clock()
        for window in self._limits.get(provider, ()):
            bucket = f"{provider}:{window.scope}" + (f":{user}" if window.scope == "user"
                                                     else "")
            shared = (await self._shared.window_count(bucket, window.window_s)
                      if self._shared is not None else None)
            count = shared if shared is not None else self._local.count(bucket, window.window_s)
            if count > window.limit:
                wait = max(wait, window.window_s - now % window.window_s)
        return wait
