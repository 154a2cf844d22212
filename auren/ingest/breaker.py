"""Circuit breakers around Kafka, PostgreSQL and Redis.

::

    closed ──(≥ min_calls in the window and failure rate ≥ threshold)──▶ open
    open ──(open_s elapsed)──▶ half-open: ``probes`` calls let through, the rest refused
    half-open ──(``probes`` successes)──▶ closed
    half-open ──(any failure)──▶ open (for another open_s)

The window slides over time (one bucket per second), not over a count of calls, so a burst of
failures is forgotten after ``window_s`` even when traffic stops. A client error (the
``ClientError`` branch of ``auren.errors``: the request was wrong, the dependency was fine)
never counts, neither as a failure nor as a success.

A breaker only decides; callers that cannot use :meth:`CircuitBreaker.call` (the bus, which
falls back to the spool instead of failing) use :meth:`allow` and then report exactly once
with :meth:`success` or :meth:`failure`. Transitions are logged, kept (the last few) for
``/health``, and exported to Prometheus by :class:`BreakerCollector`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from auren.errors import ClientError, StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("auren.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitOpen(StoreUnavailable):
    """The dependency is presumed down; the call was not attempted (503 + Retry-After)."""

    title = "Dependency unavailable"
    slug = "circuit-open"


@dataclass(frozen=True, slots=True)
class Transition:
    at: float  # wall clock, for /health
    source: str
    target: str
    reason: str


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        window_s: float = 10.0,
        min_calls: int = 5,
        failure_rate: float = 0.5,
        open_s: float = 5.0,
        probes: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[CircuitBreaker, Transition], None] | None = None,
    ) -> None:
        if not 0 < failure_rate <= 1 or min_calls < 1 or probes < 1:
            raise ValueError("need 0 < failure_rate <= 1, min_calls >= 1, probes >= 1")
        self.name = name
        self._buckets = max(1, math.ceil(window_s))
        self._min_calls = min_calls
        self._failure_rate = failure_rate
        self._open_s = open_s
        self._probes = probes
        self._clock = clock
        self._on_transition = on_transition
        self._state = CLOSED
        # (second, calls, failures) per second of the window, oldest first.
        self._window: deque[list[int]] = deque()
        self._opened_at = 0.0
        self._probes_out = 0  # probe calls let through in this half-open period
        self._probe_successes = 0
        self.transitions: deque[Transition] = deque(maxlen=20)
        self.transition_counts: dict[tuple[str, str], int] = {}
        self.rejected = 0  # calls refused while open

    @classmethod
    def from_settings(cls, name: str, settings: Any, **kw: Any) -> CircuitBreaker:
        return cls(name, window_s=settings.breaker_window_s,
                   min_calls=settings.breaker_min_calls,
                   failure_rate=settings.breaker_failure_rate, open_s=settings.breaker_open_s,
                   probes=settings.breaker_half_open_probes, **kw)

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self._open_s:
            self._move(HALF_OPEN, f"{self._open_s:g} s open")
        return self._state

    def retry_after_s(self) -> int:
        """Seconds until the breaker will let a probe through (at least 1)."""
        if self._state != OPEN:
            return 1
        return max(1, math.ceil(self._open_s - (self._clock() - self._opened_at)))

    def allow(self) -> bool:
        """May a call go to the dependency now? In half-open this takes a probe slot, which
        the caller must give back by reporting :meth:`success` or :meth:`failure`."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and self._probes_out < self._probes:
            self._probes_out += 1
            return True
        self.rejected += 1
        return False

    def success(self) -> None:
        self._count(failed=False)
        if self._state == HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self._probes:
                self._move(CLOSED, f"{self._probes} probe(s) succeeded")

    def failure(self, error: BaseException | None = None) -> None:
        if isinstance(error, ClientError):
            self.release()
            return
        self._count(failed=True)
        reason = type(error).__name__ if error is not None else "failure"
        if self._state == HALF_OPEN:
            self._trip(f"probe failed: {reason}")
            return
        if self._state == CLOSED:
            calls, failures = self._totals()
            if calls >= self._min_calls and failures / calls >= self._failure_rate:
                self._trip(f"{failures}/{calls} calls failed in {self._buckets} s ({reason})")

    def release(self) -> None:
        """Report a call that says nothing about the dependency (e.g. a 4xx): frees a probe."""
        if self._state == HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1

    def force_open(self, reason: str) -> None:
        """Open now (e.g. a start-up check failed); probes begin after ``open_s``."""
        if self._state != OPEN:
            self._trip(reason)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` through the breaker: refused with :class:`CircuitOpen` while open."""
        if not self.allow():
            raise CircuitOpen(f"{self.name} circuit is open",
                              retry_after_s=self.retry_after_s())
        try:
            result = await fn()
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.failure(exc)
            else:  # cancelled: no verdict on the dependency
                self.release()
            raise
        self.success()
        return result

    def snapshot(self) -> dict[str, Any]:
        calls, failures = self._totals()
        body: dict[str, Any] = {"state": self.state, "windowCalls": calls,
                                "windowFailures": failures, "rejected": self.rejected}
        if self.transitions:
            last = self.transitions[-1]
            body["lastTransition"] = {"from": last.source, "to": last.target,
                                      "reason": last.reason, "at": last.at}
        return body

    # --- internals ----------------------------------------------------------------------------

    def _count(self, *, failed: bool) -> None:
        second = int(self._clock())
        window = self._window
        while window and window[0][0] <= second - self._buckets:
            window.popleft()
        if not window or window[-1][0] != second:
            window.append([second, 0, 0])
        window[-1][1] += 1
        window[-1][2] += failed

    def _totals(self) -> tuple[int, int]:
        horizon = int(self._clock()) - self._buckets
        calls = failures = 0
        for second, c, f in self._window:
            if second > horizon:
                calls += c
                failures += f
        return calls, failures

    def _trip(self, reason: str) -> None:
        self._opened_at = self._clock()
        self._move(OPEN, reason)

    def _move(self, target: str, reason: str) -> None:
        source, self._state = self._state, target
        self._probes_out = self._probe_successes = 0
        if target == CLOSED:
            # A fresh start: the failures that opened the breaker are history.
            self._window.clear()
        transition = Transition(time.time(), source, target, reason)
        self.transitions.append(transition)
        key = (source, target)
        self.transition_counts[key] = self.transition_counts.get(key, 0) + 1
        level = logging.INFO if target == CLOSED else logging.WARNING
        log.log(level, "circuit %s: %s -> %s (%s)", self.name, source, target, reason,
                extra={"breaker": self.name, "state": target, "detail": reason})
        if self._on_transition is not None:
            self._on_transition(self, transition)


class BreakerCollector(Collector):
    """Breaker states and transitions for ``/metrics``, read at scrape time."""

    def __init__(self, breakers: Iterable[CircuitBreaker]) -> None:
        self._breakers = list(breakers)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = GaugeMetricFamily("auren_breaker_state",
                                  "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                                  labels=["breaker"])
        transitions = CounterMetricFamily("auren_breaker_transitions",
                                          "Circuit breaker state changes",
                                          labels=["breaker", "from", "to"])
        rejected = CounterMetricFamily("auren_breaker_rejected",
                                       "Calls refused because the breaker was open",
                                       labels=["breaker"])
        for breaker in self._breakers:
            state.add_metric([breaker.name], _STATE_VALUE[breaker.state])
            for (source, target), count in breaker.transition_counts.items():
                transitions.add_metric([breaker.name, source, target], count)
            rejected.add_metric([breaker.name], breaker.rejected)
        yield state
        yield transitions
        yield rejected
