"""Circuit breakers around Kafka, PostgreSQL and Redis.

::

    closed ──(≥ min_calls in the window and (failed + slow) / calls ≥ threshold)──▶ open
    open ──(open_s elapsed)──▶ half-open: ``probes`` calls let through, the rest refused
    half-open ──(``probes`` fast successes)──▶ closed
    half-open ──(any failure or slow call)──▶ open (for another open_s)

The window slides over time (one bucket per second), not over a count of calls, so a burst of
failures is forgotten after ``window_s`` even when traffic stops. A client error (the
``ClientError`` branch of ``auren.errors``: the request was wrong, the dependency was fine)
never counts, neither as a failure nor as a success.

**Slow calls count as failures** (resilience4j's slow-call rate, folded into the one rate): a
hung dependency (a SIGSTOPped broker, a Redis stuck in a fork) answers nothing, errors come
only when a timeout fires, and the calls that do finish are merely late. A successful call
that took at least ``slow_call_s`` is counted as slow (a failed one is a failure anyway), and
slow calls add to the failures. A caller that waits on a call in flight may report it as soon
as it has been slow (:meth:`slow`), without waiting for the outcome: that is how a breaker
opens while the dependency is still hanging.

**Weighted calls.** A batched caller (the group commit, Redis's batched lookups) makes one
round trip for many webhooks; it reports the round trip with ``calls=`` the number of items
in it. Otherwise the many small batches of a healthy dependency outweigh the few big ones of a
hung dependency (one per timeout), and the rate never gets there while the fault lasts.

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
        slow_call_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[CircuitBreaker, Transition], None] | None = None,
    ) -> None:
        if not 0 < failure_rate <= 1 or min_calls < 1 or probes < 1:
            raise ValueError("need 0 < failure_rate <= 1, min_calls >= 1, probes >= 1")
        if slow_call_s is not None and slow_call_s <= 0:
            raise ValueError("slow_call_s must be positive (or None: no call is slow)")
        self.name = name
        self._buckets = max(1, math.ceil(window_s))
        self._min_calls = min_calls
        self._failure_rate = failure_rate
        self._open_s = open_s
        self._probes = probes
        self.slow_call_s = slow_call_s
        self._clock = clock
        self._on_transition = on_transition
        self._state = CLOSED
        # [second, calls, failures, slow] per second of the window, oldest first.
        self._window: deque[list[int]] = deque()
        self._opened_at = 0.0
        self._probes_out = 0  # probe calls let through in this half-open period
        self._probe_successes = 0
        self.transitions: deque[Transition] = deque(maxlen=20)
        self.transition_counts: dict[tuple[str, str], int] = {}
        self.rejected = 0  # calls refused while open
        self.slow_calls = 0  # calls counted as slow since start (weighted)

    @classmethod
    def from_settings(cls, name: str, settings: Any, **kw: Any) -> CircuitBreaker:
        """The breaker around ``name`` (kafka, postgres, redis): the shared breaker settings
        and that dependency's slow-call threshold (``<name>_slow_call_s``; 0 turns it off)."""
        slow = getattr(settings, f"{name}_slow_call_s", None)
        kw.setdefault("slow_call_s", slow or None)
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

    def is_slow(self, elapsed_s: float) -> bool:
        return self.slow_call_s is not None and elapsed_s >= self.slow_call_s

    def success(self, *, elapsed_s: float | None = None, calls: int = 1) -> None:
        """The call succeeded; one that took ``elapsed_s`` ≥ ``slow_call_s`` counts as slow.
        ``calls``: how many items the round trip carried (its weight in the rate)."""
        if elapsed_s is not None and self.is_slow(elapsed_s):
            self.slow(elapsed_s, calls=calls)
            return
        self._count(calls, failed=0, slow=0)
        if self._state == HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self._probes:
                self._move(CLOSED, f"{self._probes} probe(s) succeeded")

    def slow(self, elapsed_s: float, *, calls: int = 1) -> None:
        """The call took (or has been running for) ``elapsed_s``, longer than ``slow_call_s``:
        its report, whatever its outcome turns out to be. Counts like a failure."""
        self.slow_calls += calls
        self._count(calls, failed=0, slow=calls)
        self._judge(f"slow call: {elapsed_s:.3g} s", "probe slow")

    def failure(self, error: BaseException | None = None, *, calls: int = 1) -> None:
        if isinstance(error, ClientError):
            self.release()
            return
        self._count(calls, failed=calls, slow=0)
        self._judge(type(error).__name__ if error is not None else "failure", "probe failed")

    def release(self) -> None:
        """Report a call that says nothing about the dependency (e.g. a 4xx): frees a probe."""
        if self._state == HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1

    def force_open(self, reason: str) -> None:
        """Open now (e.g. a start-up check failed); probes begin after ``open_s``."""
        if self._state != OPEN:
            self._trip(reason)

    async def call(self, fn: Callable[[], Awaitable[T]], *, calls: int = 1) -> T:
        """Run ``fn`` through the breaker: refused with :class:`CircuitOpen` while open; a
        success slower than ``slow_call_s`` counts as slow. ``fn`` bounds its own wait."""
        if not self.allow():
            raise CircuitOpen(f"{self.name} circuit is open",
                              retry_after_s=self.retry_after_s())
        started = self._clock()
        try:
            result = await fn()
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.failure(exc, calls=calls)
            else:  # cancelled: no verdict on the dependency
                self.release()
            raise
        self.success(elapsed_s=self._clock() - started, calls=calls)
        return result

    def snapshot(self) -> dict[str, Any]:
        calls, failures, slow = self._totals()
        body: dict[str, Any] = {"state": self.state, "windowCalls": calls,
                                "windowFailures": failures, "windowSlowCalls": slow,
                                "slowCallThreshold_s": self.slow_call_s,
                                "slowCalls": self.slow_calls, "rejected": self.rejected}
        if self.transitions:
            last = self.transitions[-1]
            body["lastTransition"] = {"from": last.source, "to": last.target,
                                      "reason": last.reason, "at": last.at}
        return body

    # --- internals ----------------------------------------------------------------------------

    def _judge(self, reason: str, probe_verdict: str) -> None:
        """After a failed or slow call: open when the rate says so (any bad probe reopens)."""
        if self._state == HALF_OPEN:
            self._trip(f"{probe_verdict}: {reason}")
            return
        if self._state == CLOSED:
            calls, failures, slow = self._totals()
            if calls >= self._min_calls and (failures + slow) / calls >= self._failure_rate:
                self._trip(f"{failures} failed and {slow} slow of {calls} calls in "
                           f"{self._buckets} s ({reason})")

    def _count(self, calls: int, *, failed: int, slow: int) -> None:
        second = int(self._clock())
        window = self._window
        while window and window[0][0] <= second - self._buckets:
            window.popleft()
        if not window or window[-1][0] != second:
            window.append([second, 0, 0, 0])
        bucket = window[-1]
        bucket[1] += calls
        bucket[2] += failed
        bucket[3] += slow

    def _totals(self) -> tuple[int, int, int]:
        horizon = int(self._clock()) - self._buckets
        calls = failures = slow = 0
        for second, c, f, s in self._window:
            if second > horizon:
                calls += c
                failures += f
                slow += s
        return calls, failures, slow

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
        slow = CounterMetricFamily("auren_breaker_slow_calls",
                                   "Calls slower than the breaker's slow-call threshold "
                                   "(weighted by the items they carried)", labels=["breaker"])
        threshold = GaugeMetricFamily("auren_breaker_slow_call_threshold_seconds",
                                      "The slow-call threshold (absent: none)",
                                      labels=["breaker"])
        for breaker in self._breakers:
            state.add_metric([breaker.name], _STATE_VALUE[breaker.state])
            for (source, target), count in breaker.transition_counts.items():
                transitions.add_metric([breaker.name, source, target], count)
            rejected.add_metric([breaker.name], breaker.rejected)
            slow.add_metric([breaker.name], breaker.slow_calls)
            if breaker.slow_call_s is not None:
                threshold.add_metric([breaker.name], breaker.slow_call_s)
        yield state
        yield transitions
        yield rejected
        yield slow
        yield threshold
