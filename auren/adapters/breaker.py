"""Circuit breakers around Kafka, PostgreSQL and Redis.

::

    closed ──(≥ min_calls in the window and (failed + slow) / calls ≥ threshold)──▶ open
    closed ──(stalled: see below)──▶ open
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

**A stall opens it at once.** A rate over a time window cannot see a hang under closed-loop
load: once the hung calls hold every client connection, almost nothing completes, so the few
slow calls never outweigh the many fast ones made just before the hang (measured: Kafka
SIGSTOPped for 8 s under 150 webhooks/s over 32 connections left ~128 slow deliveries against
~1,500 fast ones in the 10 s window, and the breaker stayed closed). So, with a slow-call
threshold set, the breaker also watches the calls in progress: when calls are outstanding, the
oldest has been running for at least ``slow_call_s``, and no call has completed successfully
within ``slow_call_s``, the dependency has stopped answering (rather than slowed a little) and
the breaker opens right then, reason ``stalled: ...``, whatever the window's rate says. A
dependency that is merely slow keeps completing calls, so the stall rule leaves it to the
rate. A client error is an answer too (the dependency was fine). Callers announce a call with
:meth:`begin` and end it with :meth:`end` (:meth:`call` does both). The rule is checked
whenever the breaker's state is read (every :meth:`allow`), on every slow report, and by a
watchdog timer on the running event loop, so it fires even when every caller is stuck waiting.
Callers waiting on a call in flight can stop waiting when the breaker opens
(:meth:`opened`). Bookkeeping is O(1) per call: calls in progress are counted in slots of
``slow_call_s / 20`` by start time (oldest first), never listed one by one.

**Weighted calls.** A batched caller (the group commit, Redis's batched lookups) makes one
round trip for many webhooks; it reports the round trip with ``calls=`` the number of items
in it. Otherwise the many small batches of a healthy dependency outweigh the few big ones of a
hung dependency (one per timeout), and the rate never gets there while the fault lasts.

A breaker only decides; callers that cannot use :meth:`CircuitBreaker.call` (the bus, which
falls back to the spool instead of failing) use :meth:`allow`, bracket the call with
:meth:`begin` / :meth:`end`, and report exactly once with :meth:`success` or
:meth:`failure`. Transitions are logged (with their reason), kept (the last few) for
``/health``, and exported to Prometheus by :class:`BreakerCollector`.
"""

from __future__ import annotations

import asyncio
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
        # Calls in progress, for the stall rule: [first start, last start, outstanding] per
        # slot of _grain seconds of start time, oldest first (a slot is the token begin() hands
        # out). Empty slots at the head are dropped as calls end: O(1) amortized per call.
        self._starts: deque[list[float]] = deque()
        self._in_flight = 0
        self._grain = (slow_call_s or 1.0) / 20
        self._last_answer = clock()  # the last successful completion (or client error)
        self.stalls = 0  # times the stall rule opened the breaker
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None
        self._opened: asyncio.Future[None] | None = None

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
        if self._state == OPEN:
            if self._clock() - self._opened_at >= self._open_s:
                self._move(HALF_OPEN, f"{self._open_s:g} s open")
        elif self._in_flight and self._state == CLOSED and self.slow_call_s is not None:
            self._check_stall()
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

    @property
    def in_flight(self) -> int:
        """Calls begun and not yet ended."""
        return self._in_flight

    def is_slow(self, elapsed_s: float) -> bool:
        return self.slow_call_s is not None and elapsed_s >= self.slow_call_s

    def success(self, *, elapsed_s: float | None = None, calls: int = 1) -> None:
        """The call succeeded; one that took ``elapsed_s`` ≥ ``slow_call_s`` counts as slow.
        ``calls``: how many items the round trip carried (its weight in the rate)."""
        self._last_answer = self._clock()
        if elapsed_s is not None and self.is_slow(elapsed_s):
            self.slow(elapsed_s, calls=calls)
            return
        self._count(calls, failed=0, slow=0)
        if self._state == HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self._probes:
                self._move(CLOSED, f"{self._probes} probe(s) succeeded")

    def slow(self, elapsed_s: float, *, calls: int = 1, running: bool = False) -> None:
        """The call took (or has been running for) ``elapsed_s``, longer than ``slow_call_s``:
        its report, whatever its outcome turns out to be. Counts like a failure.
        ``running``: the call is still in progress, ``elapsed_s`` its age so far (queueing
        before :meth:`begin` included), which the stall rule takes as the oldest call's age."""
        self.slow_calls += calls
        self._count(calls, failed=0, slow=calls)
        self._judge(f"slow call: {elapsed_s:.3g} s", "probe slow")
        if self._state == CLOSED and self.slow_call_s is not None:
            self._check_stall(elapsed_s if running else 0.0)

    def failure(self, error: BaseException | None = None, *, calls: int = 1) -> None:
        if isinstance(error, ClientError):
            self._last_answer = self._clock()  # the dependency answered: it is not stalled
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

    def begin(self) -> list[float]:
        """A call to the dependency starts now; returns its token for :meth:`end`. O(1)."""
        now = self._clock()
        starts = self._starts
        if starts and now - starts[-1][0] < self._grain:
            slot = starts[-1]
            slot[1] = now
            slot[2] += 1
        else:
            slot = [now, now, 1]
            starts.append(slot)
        self._in_flight += 1
        if self.slow_call_s is not None and (
                self._watchdog is None or self._watchdog_loop is None
                or self._watchdog_loop.is_closed()):
            self._arm(self.slow_call_s)
        return slot

    def end(self, token: list[float], *, answered: bool = False) -> None:
        """The call of ``token`` (from :meth:`begin`) is over, whatever its outcome.
        ``answered``: it succeeded, though its report was already made (:meth:`slow` while it
        ran), so only the stall rule needs to hear of it."""
        if answered:
            self._last_answer = self._clock()
        if token[2] <= 0:
            return  # ended twice: ignored
        token[2] -= 1
        self._in_flight -= 1
        starts = self._starts
        while starts and starts[0][2] <= 0:
            starts.popleft()

    def opened(self) -> asyncio.Future[None]:
        """A future that completes when the breaker next opens (shared by every waiter): a
        caller waiting on a call in flight can stop waiting then."""
        loop = asyncio.get_running_loop()
        future = self._opened
        if future is None or future.done() or future.get_loop() is not loop:
            future = self._opened = loop.create_future()
        return future

    async def call(self, fn: Callable[[], Awaitable[T]], *, calls: int = 1) -> T:
        """Run ``fn`` through the breaker: refused with :class:`CircuitOpen` while open; a
        success slower than ``slow_call_s`` counts as slow. ``fn`` bounds its own wait."""
        if not self.allow():
            raise CircuitOpen(f"{self.name} circuit is open",
                              retry_after_s=self.retry_after_s())
        token = self.begin()
        started = token[1]
        try:
            result = await fn()
        except BaseException as exc:
            self.end(token)
            if isinstance(exc, Exception):
                self.failure(exc, calls=calls)
            else:  # cancelled: no verdict on the dependency
                self.release()
            raise
        self.end(token)
        self.success(elapsed_s=self._clock() - started, calls=calls)
        return result

    def snapshot(self) -> dict[str, Any]:
        calls, failures, slow = self._totals()
        now = self._clock()
        body: dict[str, Any] = {"state": self.state, "windowCalls": calls,
                                "windowFailures": failures, "windowSlowCalls": slow,
                                "slowCallThreshold_s": self.slow_call_s,
                                "slowCalls": self.slow_calls, "rejected": self.rejected,
                                # The stall rule: open when the oldest call in flight and the
                                # last success are both at least slowCallThreshold_s old.
                                "inFlight": self._in_flight,
                                "oldestInFlight_s": round(now - self._starts[0][1], 3)
                                if self._in_flight and self._starts else 0.0,
                                "sinceLastSuccess_s": round(now - self._last_answer, 3),
                                "stalls": self.stalls}
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

    def _check_stall(self, running_s: float = 0.0) -> None:
        """Closed, with a slow-call threshold: open now if the dependency stopped answering
        (the oldest call in flight, or ``running_s`` reported by one, and the last success are
        both at least ``slow_call_s`` old)."""
        threshold = self.slow_call_s
        if threshold is None or self._state != CLOSED:
            return
        now = self._clock()
        silent = now - self._last_answer
        if silent < threshold:
            return
        starts = self._starts
        # The head slot's last start: the oldest call is at least this old (conservative).
        oldest = now - starts[0][1] if self._in_flight and starts else 0.0
        oldest = max(oldest, running_s)
        if oldest < threshold:
            return
        self.stalls += 1
        self._trip(f"stalled: the oldest of {self._in_flight} call(s) in flight has run "
                   f"{oldest:.3g} s and none succeeded for {silent:.3g} s (threshold "
                   f"{threshold:g} s)")

    def _arm(self, delay_s: float) -> None:
        """The watchdog: checks for a stall while calls are in flight, even when no caller
        asks (they may all be stuck in the hung calls). One timer per breaker, at most."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the checks on reads suffice
            return
        self._watchdog_loop = loop
        self._watchdog = loop.call_later(delay_s, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        threshold = self.slow_call_s
        if threshold is None or not self._in_flight:
            return  # the next begin() arms it again
        _ = self.state  # checks the stall rule (and open -> half-open)
        if self._in_flight and self._state == CLOSED and self._starts:
            now = self._clock()
            due = max(self._starts[0][1], self._last_answer) + threshold - now
            self._arm(max(self._grain, due))

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
        future, self._opened = self._opened, None
        if future is not None and not future.done() and not future.get_loop().is_closed():
            future.set_result(None)

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
        stalls = CounterMetricFamily("auren_breaker_stalls",
                                     "Times the stall rule opened the breaker (calls in flight "
                                     "past the slow-call threshold, no success within it)",
                                     labels=["breaker"])
        in_flight = GaugeMetricFamily("auren_breaker_calls_in_flight",
                                      "Calls to the dependency in progress", labels=["breaker"])
        for breaker in self._breakers:
            state.add_metric([breaker.name], _STATE_VALUE[breaker.state])
            for (source, target), count in breaker.transition_counts.items():
                transitions.add_metric([breaker.name, source, target], count)
            rejected.add_metric([breaker.name], breaker.rejected)
            slow.add_metric([breaker.name], breaker.slow_calls)
            if breaker.slow_call_s is not None:
                threshold.add_metric([breaker.name], breaker.slow_call_s)
            stalls.add_metric([breaker.name], breaker.stalls)
            in_flight.add_metric([breaker.name], breaker.in_flight)
        yield state
        yield transitions
        yield rejected
        yield slow
        yield threshold
        yield stalls
        yield in_flight
