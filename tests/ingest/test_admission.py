from __future__ import annotations

import asyncio

import pytest

from auren.errors import Overloaded
from auren.ingest.admission import Admission


async def test_limits_in_flight_and_queues_then_sheds():
    admission = Admission(limit=2, queue_limit=1, wait_s=5)
    release = asyncio.Event()
    peak = 0

    async def hold() -> str:
        nonlocal peak
        await admission.enter()
        try:
            peak = max(peak, admission.in_flight)
            await release.wait()
        finally:
            admission.leave()
        return "done"

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.in_flight == 2
    assert admission.waiting == 1
    with pytest.raises(Overloaded) as shed:
        await admission.enter()
    assert shed.value.headers() == {"Retry-After": "1"}
    release.set()
    assert await asyncio.gather(*holders, waiter) == ["done"] * 3
    assert peak == 2
    assert admission.in_flight == admission.waiting == 0
    assert admission.rejected == 1


async def test_waiting_is_bounded_in_time():
    admission = Admission(limit=1, queue_limit=10, wait_s=0.05)
    await admission.enter()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overloaded):
        await admission.enter()
    assert loop.time() - started < 1
    admission.leave()
    assert admission.waiting == 0
    await admission.enter()  # the slot is usable again
    assert admission.in_flight == 1


async def test_slots_pass_to_waiters_in_arrival_order_and_newcomers_wait_behind():
    admission = Admission(limit=1, queue_limit=10, wait_s=5)
    assert admission.try_enter()
    order: list[int] = []

    async def wait(n: int) -> None:
        await admission.enter()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert admission.waiting == 3
    admission.leave()  # handed to waiter 0, never back to the pool
    assert admission.in_flight == 1
    assert not admission.try_enter(), "a newcomer overtook the webhooks waiting"
    for served in range(1, 3):
        await asyncio.sleep(0)
        assert order == list(range(served))
        admission.leave()  # the webhook served last is done: the next in line goes
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert admission.in_flight == 1
    admission.leave()
    assert admission.in_flight == admission.waiting == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_leaks_no_slot():
    admission = Admission(limit=1, queue_limit=10, wait_s=5)
    assert admission.try_enter()
    cancelled = asyncio.create_task(admission.enter())
    behind = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert admission.waiting == 1
    admission.leave()
    await behind
    assert admission.in_flight == 1
    # Cancelled just after the slot was handed over: the slot goes back, not lost.
    late = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    admission.leave()  # hands the slot to `late`...
    late.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await late
    assert admission.in_flight == 0 and admission.waiting == 0
    assert admission.try_enter()
