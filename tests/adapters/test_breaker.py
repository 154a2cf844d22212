from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from auren.adapters.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCollector,
    CircuitBreaker,
    CircuitOpen,
)
from auren.errors import InvalidPayload, StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw) -> CircuitBreaker:
    options = {"window_s": 10, "min_calls": 4, "failure_rate": 0.5, "open_s": 5, "probes": 2}
    options.update(kw)
    return CircuitBreaker("bus", clock=clock, **options)


def test_opens_on_failure_rate_over_min_calls_then_half_opens_and_closes():
    clock = Clock()
    b = breaker(clock)
    b.success()
    b.failure(StoreUnavailable())
    b.failure(StoreUnavailable())
    assert b.state == CLOSED  # 3 calls < min_calls, whatever the rate
    b.failure(StoreUnavailable())
    assert b.state == OPEN  # 3 of 4 failed
    assert not b.allow()
    assert b.retry_after_s() == 5
    clock.now += 5
    assert b.state == HALF_OPEN
    assert b.allow() and b.allow()
    assert not b.allow(), "only the permitted number of probes goes through"
    b.success()
    assert b.state == HALF_OPEN
    b.success()
    assert b.state == CLOSED
    assert [(t.source, t.target) for t in b.transitions] == [
        (CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_opens_again_for_a_full_period():
    clock = Clock()
    b = breaker(clock)
    b.force_open("start-up check failed")
    clock.now += 5
    assert b.allow()
    b.failure(TimeoutError())
    assert b.state == OPEN
    clock.now += 4.9
    assert b.state == OPEN
    clock.now += 0.1
    assert b.state == HALF_OPEN


def test_rate_below_threshold_keeps_it_closed():
    clock = Clock()
    b = breaker(clock)
    for _ in range(10):
        b.success()
        b.success()
        b.failure(StoreUnavailable())
    assert b.state == CLOSED


def test_the_window_slides_old_failures_are_forgotten():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure(StoreUnavailable())
    clock.now += 11  # the window is 10 s
    b.failure(StoreUnavailable())
    assert b.state == CLOSED, "only 1 call in the current window"
    assert b.snapshot()["windowCalls"] == 1


def test_client_errors_never_count():
    clock = Clock()
    b = breaker(clock)
    for _ in range(20):
        b.failure(InvalidPayload("bad item"))
    assert b.state == CLOSED
    assert b.snapshot()["windowCalls"] == 0
    # ... and in half-open they give the probe slot back.
    b.force_open("test")
    clock.now += 5
    assert b.allow()
    b.failure(InvalidPayload("bad item"))
    assert b.state == HALF_OPEN
    assert b.allow() and b.allow()


async def test_call_refuses_fast_while_open_and_reports_outcomes():
    clock = Clock()
    b = breaker(clock, min_calls=2)

    async def boom() -> int:
        raise StoreUnavailable("down")

    async def fine() -> int:
        return 7

    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await b.call(boom)
    with pytest.raises(CircuitOpen) as info:
        await b.call(fine)
    assert info.value.status == 503 and info.value.headers() == {"Retry-After": "5"}
    assert b.rejected == 1
    clock.now += 5
    assert await b.call(fine) == 7
    assert await b.call(fine) == 7
    assert b.state == CLOSED


def test_transitions_are_logged_and_exported(caplog):
    clock = Clock()
    b = breaker(clock)
    registry = CollectorRegistry()
    registry.register(BreakerCollector([b]))
    with caplog.at_level(logging.INFO, logger="auren.breaker"):
        b.force_open("test")
        clock.now += 5
        assert b.state == HALF_OPEN
    assert [r.__dict__["state"] for r in caplog.records] == [OPEN, HALF_OPEN]
    text = generate_latest(registry).decode()
    assert 'auren_breaker_state{breaker="bus"} 1.0' in text
    assert 'auren_breaker_transitions_total{breaker="bus",from="closed",to="open"} 1.0' in text


# --- slow calls -------------------------------------------------------------------------------


def test_slow_successes_open_it_like_failures():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    b.success(elapsed_s=0.2)
    b.success(elapsed_s=1.5)
    b.success(elapsed_s=2.0)
    assert b.state == CLOSED  # 3 calls < min_calls
    b.success(elapsed_s=1.0)  # at the threshold is slow
    assert b.state == OPEN, "3 of 4 calls slow"
    snap = b.snapshot()
    assert (snap["windowCalls"], snap["windowFailures"], snap["windowSlowCalls"]) == (4, 0, 3)
    assert snap["slowCalls"] == 3 and snap["slowCallThreshold_s"] == 1.0
    assert "slow" in b.transitions[-1].reason


def test_fast_calls_never_open_it_and_no_threshold_means_never_slow():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    for _ in range(50):
        b.success(elapsed_s=0.99)
    assert b.state == CLOSED and b.snapshot()["windowSlowCalls"] == 0
    unbounded = breaker(clock)
    for _ in range(50):
        unbounded.success(elapsed_s=60.0)
    assert unbounded.state == CLOSED and unbounded.slow_calls == 0


def test_slow_and_failed_calls_add_up():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    for _ in range(4):
        b.success(elapsed_s=0.01)
    b.failure(StoreUnavailable())
    b.failure(StoreUnavailable())
    b.slow(1.2)
    assert b.state == CLOSED  # 3 of 7
    b.success(elapsed_s=3.0)
    assert b.state == OPEN  # 4 of 8


def test_weighted_calls_a_hung_batch_outweighs_many_small_fast_ones():
    """A group commit makes one round trip for many webhooks: a hung batch reports the items
    it carried, so it counts like the many small batches of a healthy dependency."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    for _ in range(40):
        b.success(elapsed_s=0.005)
    b.slow(1.0, calls=39)
    assert b.state == CLOSED  # 39 of 79
    b.slow(1.0, calls=2)
    assert b.state == OPEN
    assert b.slow_calls == 41


def test_a_slow_probe_reopens_a_fast_one_counts_toward_closing():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    b.force_open("test")
    clock.now += 5
    assert b.allow()
    b.success(elapsed_s=1.5)
    assert b.state == OPEN, "a slow probe is a failed probe"
    assert "probe slow" in b.transitions[-1].reason
    clock.now += 5
    assert b.allow() and b.allow()
    b.slow(1.0)  # reported while still in flight
    assert b.state == OPEN
    clock.now += 5
    assert b.allow() and b.allow()
    b.success(elapsed_s=0.1)
    b.success(elapsed_s=0.2, calls=50)  # a probe is one probe, whatever its weight
    assert b.state == CLOSED


async def test_client_errors_never_count_even_when_slow():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)

    async def bad_request() -> None:
        clock.now += 3  # slow, but the request was wrong, not the dependency
        raise InvalidPayload("bad item")

    for _ in range(10):
        with pytest.raises(InvalidPayload):
            await b.call(bad_request)
    assert b.state == CLOSED and b.snapshot()["windowCalls"] == 0


async def test_call_times_itself_with_the_breakers_clock():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0, min_calls=2)

    async def slow() -> str:
        clock.now += 1.5
        return "late"

    async def fast() -> str:
        clock.now += 0.1
        return "soon"

    assert await b.call(fast) == "soon"
    assert await b.call(slow) == "late"
    assert b.state == OPEN and b.slow_calls == 1
    with pytest.raises(CircuitOpen):
        await b.call(fast)


def test_slow_calls_are_exported():
    clock = Clock()
    b = breaker(clock, slow_call_s=0.25)
    b.slow(0.3, calls=7)
    registry = CollectorRegistry()
    registry.register(BreakerCollector([b]))
    text = generate_latest(registry).decode()
    assert 'auren_breaker_slow_calls_total{breaker="bus"} 7.0' in text
    assert 'auren_breaker_slow_call_threshold_seconds{breaker="bus"} 0.25' in text
    assert 'auren_breaker_stalls_total{breaker="bus"} 0.0' in text
    stalled = CircuitBreaker("hung", slow_call_s=0.25, clock=clock)
    registry.register(BreakerCollector([stalled]))
    stalled.begin()
    clock.now += 0.25
    assert stalled.state == OPEN
    text = generate_latest(registry).decode()
    assert 'auren_breaker_stalls_total{breaker="hung"} 1.0' in text
    assert 'auren_breaker_calls_in_flight{breaker="hung"} 1.0' in text


def test_thresholds_come_from_the_settings():
    from auren.settings import Settings

    settings = Settings(kafka_slow_call_s=0.8, redis_slow_call_s=0, postgres_slow_call_s=4)
    assert CircuitBreaker.from_settings("kafka", settings).slow_call_s == 0.8
    assert CircuitBreaker.from_settings("redis", settings).slow_call_s is None  # 0: off
    assert CircuitBreaker.from_settings("postgres", settings).slow_call_s == 4
    defaults = Settings()
    assert CircuitBreaker.from_settings("kafka", defaults).slow_call_s == 1.0
    assert CircuitBreaker.from_settings("redis", defaults).slow_call_s == 0.25


# --- the stall rule: calls in flight, nothing answering -----------------------------------------


def test_a_stall_opens_it_at_once_whatever_the_window_says():
    """A hang under closed-loop load: 1,500 fast calls in the window, then every connection
    holds a hung call and nothing completes. The rate never gets there; the stall rule does,
    as soon as the oldest call and the last success are slow_call_s old."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    for _ in range(1500):
        b.success(elapsed_s=0.005)
        clock.now += 0.005
    hung = [b.begin() for _ in range(32)]
    clock.now += 0.5
    assert b.allow() and b.state == CLOSED
    clock.now += 0.49
    assert b.state == CLOSED, "the oldest call is not yet slow"
    clock.now += 0.02
    assert b.state == OPEN
    assert not b.allow()
    reason = b.transitions[-1].reason
    assert reason.startswith("stalled:") and "32 call(s) in flight" in reason, reason
    snap = b.snapshot()
    assert snap["windowFailures"] == snap["windowSlowCalls"] == 0, "the rate said nothing"
    assert snap["stalls"] == 1 and snap["inFlight"] == 32 and snap["oldestInFlight_s"] >= 1.0
    for token in hung:  # the hung calls end (timed out) while it is open
        b.end(token)
        b.failure(TimeoutError())
    assert b.snapshot()["inFlight"] == 0
    # Half-open probing and closing are unchanged.
    clock.now += 5
    assert b.allow() and b.allow()
    b.success(elapsed_s=0.01)
    b.success(elapsed_s=0.01)
    assert b.state == CLOSED


def test_a_slow_but_answering_dependency_is_left_to_the_rate():
    """Every third call takes 1.5 s (slow) and calls overlap, so the oldest call in flight is
    always older than the threshold; but calls keep completing, so it has not stalled, and a
    third slow is below the failure rate: closed throughout."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    in_flight: list[tuple[float, list[float], float]] = []  # (ends at, token, elapsed)
    for step in range(400):  # 20 s, a call every 50 ms
        clock.now += 0.05
        for item in [c for c in in_flight if c[0] <= clock.now]:
            in_flight.remove(item)
            b.end(item[1])
            b.success(elapsed_s=item[2])
        assert b.allow()
        elapsed = 1.5 if step % 3 == 0 else 0.03
        in_flight.append((clock.now + elapsed, b.begin(), elapsed))
        assert b.state == CLOSED, b.transitions
    snap = b.snapshot()
    assert snap["oldestInFlight_s"] >= 1.0 and snap["windowSlowCalls"] > 0
    assert snap["stalls"] == 0 and not b.transitions


def test_no_stall_without_a_call_in_flight_or_without_a_threshold():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    clock.now += 100  # idle: nothing answered for long, but nothing was asked either
    assert b.state == CLOSED
    token = b.begin()
    clock.now += 0.9
    assert b.state == CLOSED, "a call 0.9 s old is not slow"
    clock.now += 0.1
    assert b.state == OPEN and b.transitions[-1].reason.startswith("stalled")
    b.end(token)
    unbounded = breaker(clock)  # no slow-call threshold: no stall rule either
    unbounded.begin()
    clock.now += 600
    assert unbounded.state == CLOSED


def test_a_call_reported_slow_while_it_runs_carries_its_age():
    """The bus reports a publish still waiting, its queueing before begin() included: that age
    counts for the stall rule even when the call itself began more recently."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    for _ in range(100):
        b.success(elapsed_s=0.01)
    clock.now += 1.0
    token = b.begin()
    clock.now += 0.4
    b.slow(1.4, calls=1, running=True)  # waited 1 s behind another batch, then 0.4 s
    assert b.state == OPEN and b.transitions[-1].reason.startswith("stalled")
    b.end(token)


def test_client_errors_never_count_and_are_answers():
    """A dependency answering "your request is wrong" is not hung: a call in flight for long
    while client errors keep coming back does not stall it, and they never count."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    hung = b.begin()
    for _ in range(20):
        clock.now += 0.5
        token = b.begin()
        b.end(token)
        b.failure(InvalidPayload("bad item"))
        assert b.state == CLOSED
    snap = b.snapshot()
    assert snap["windowCalls"] == 0 and snap["stalls"] == 0
    clock.now += 1.0  # ... but once nothing answers at all, it has stalled
    assert b.state == OPEN
    b.end(hung)


async def test_client_errors_in_call_never_count_even_when_slow_and_overlapping():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)

    async def bad_request() -> None:
        clock.now += 3
        raise InvalidPayload("bad item")

    for _ in range(10):
        with pytest.raises(InvalidPayload):
            await b.call(bad_request)
        assert b.state == CLOSED
    assert b.snapshot()["windowCalls"] == 0 and b.snapshot()["inFlight"] == 0


def test_half_open_probing_is_unchanged_by_the_stall_rule():
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    b.force_open("test")
    clock.now += 5
    assert b.allow()
    probe = b.begin()
    clock.now += 3  # a probe hanging: the slow report decides (as before), not the stall rule
    assert b.state == HALF_OPEN
    b.end(probe)
    b.slow(3.0)
    assert b.state == OPEN and b.transitions[-1].reason.startswith("probe slow")


async def test_the_watchdog_opens_it_while_every_caller_waits():
    """Nobody reads the state (every caller is stuck in a hung call): the breaker's own timer
    applies the rule, and whoever waits on ``opened()`` is woken."""
    seen: list[str] = []
    b = CircuitBreaker("redis", slow_call_s=0.05, min_calls=4,
                       on_transition=lambda _, t: seen.append(t.reason))
    for _ in range(200):
        token = b.begin()
        b.end(token)
        b.success(elapsed_s=0.001)
    opened = b.opened()
    loop = asyncio.get_running_loop()
    started = loop.time()
    hung = [b.begin() for _ in range(5)]
    await asyncio.wait_for(opened, 2.0)
    assert loop.time() - started < 0.5
    assert seen and seen[0].startswith("stalled"), seen
    for token in hung:
        b.end(token)


async def test_call_in_progress_bookkeeping_stays_small():
    """O(1) per call: calls are counted in slots of start time, not listed one by one."""
    clock = Clock()
    b = breaker(clock, slow_call_s=1.0)
    stuck = b.begin()
    for _ in range(20_000):  # 20,000 calls over 2 s behind one stuck call
        token = b.begin()
        clock.now += 0.0001
        b.end(token)
        b.success(elapsed_s=0.0001)
    assert len(b._starts) <= 2 / (1.0 / 20) + 2
    b.end(stuck)
    assert len(b._starts) == 0 and b.snapshot()["inFlight"] == 0
