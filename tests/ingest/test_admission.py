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
        async with admission.slot():
            peak = max(peak, admission.in_flight)
            await release.wait()
        return "done"

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.in_flight == 2
    assert admission.waiting == 1
    with pytest.raises(Overloaded) as shed:
        async with admission.slot():
            pass
    assert shed.value.headers() == {"Retry-After": "1"}
    release.set()
    assert await asyncio.gather(*holders, waiter) == ["done"] * 3
    assert peak == 2
    assert admission.in_flight == admission.waiting == 0
    assert admission.rejected == 1


async def test_waiting_is_bounded_in_time():
    admission = Admission(limit=1, queue_limit=10, wait_s=0.05)
    async with admission.slot():
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Overloaded):
            async with admission.slot():
                pass
        assert loop.time() - started < 1
    assert admission.waiting == 0
    async with admission.slot():  # the slot is usable again
        assert admission.in_flight == 1
