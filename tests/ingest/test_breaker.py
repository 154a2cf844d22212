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
