from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from auren.errors import InvalidPayload, StoreUnavailable
from auren.ingest.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCollector,
    CircuitBreaker,
    CircuitOpen,
)


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


def test_thresholds_come_from_the_settings():
    from auren.settings import Settings

    settings = Settings(kafka_slow_call_s=0.8, redis_slow_call_s=0, postgres_slow_call_s=4)
    assert CircuitBreaker.from_settings("kafka", settings).slow_call_s == 0.8
    assert CircuitBreaker.from_settings("redis", settings).slow_call_s is None  # 0: off
    assert CircuitBreaker.from_settings("postgres", settings).slow_call_s == 4
    defaults = Settings()
    assert CircuitBreaker.from_settings("kafka", defaults).slow_call_s == 1.0
    assert CircuitBreaker.from_settings("redis", defaults).slow_call_s == 0.25
