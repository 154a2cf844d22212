"""``/health``'s round trips, made in the background (``ProbeCache``) on a real store.

The probe here is the data plane's own: an embedded SQLite store's ``ping``, the round trip
``/health`` reports as ``store:responseTime``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from auren.services.dataplane import build_dataplane
from auren.services.kernel.health import FAIL, PASS, Checks, ProbeCache, now_text, round_trip
from auren.settings import Settings


async def test_answers_from_the_latest_refresh_and_refreshes_in_the_background(tmp_path: Path):
    plane = build_dataplane(Settings(auren_data_dir=tmp_path, health_refresh_s=0.2))
    await plane.open()
    assert plane.probes is None  # a tool that opens the plane does not refresh
    plane.refresh_health()
    try:
        assert plane.probes is not None
        status, first = await plane.health(now_text())
        assert status == PASS
        observed = first["store:responseTime"][0]["time"]
        # Read again at once: the same observation, not a new round trip.
        _, again = await plane.health(now_text())
        assert again["store:responseTime"][0]["time"] == observed
        # The answer is a copy: what a caller adds does not stick to the next answer.
        again["extra"] = []
        assert "extra" not in (await plane.health(now_text()))[1]
        deadline = time.monotonic() + 5
        while (await plane.health(now_text()))[1]["store:responseTime"][0]["time"] == observed:
            assert time.monotonic() < deadline, "never refreshed"
            await asyncio.sleep(0.05)
    finally:
        await plane.close(5)
    assert plane.probes is None


async def test_a_refresh_that_hangs_makes_the_answer_fail_once_stale(tmp_path: Path):
    plane = build_dataplane(Settings(auren_data_dir=tmp_path))
    await plane.store.open()
    hang = asyncio.Event()
    rounds = 0

    async def probe(now: str) -> tuple[str, Checks]:
        nonlocal rounds
        rounds += 1
        if rounds > 1:
            await hang.wait()  # a dependency that stopped answering, past any timeout
        checks: Checks = {}
        return await round_trip(checks, "store:responseTime", plane.store.ping, FAIL, now), \
            checks

    cache = ProbeCache(probe, interval_s=0.05, stale_after_s=0.5)
    cache.start()
    try:
        status, checks = await cache.read(now_text())
        assert status == PASS and "health:refresh" not in checks
        await asyncio.sleep(0.8)
        started = time.perf_counter()
        status, checks = await cache.read(now_text())
        assert time.perf_counter() - started < 0.1  # answered, not waited for the refresh
        assert status == FAIL
        assert checks["health:refresh"][0]["status"] == FAIL
        assert "last completed" in checks["health:refresh"][0]["output"]
        assert checks["store:responseTime"][0]["status"] == PASS  # the last one seen
        hang.set()
        deadline = time.monotonic() + 5
        while "health:refresh" in (await cache.read(now_text()))[1]:
            assert time.monotonic() < deadline, "did not recover"
            await asyncio.sleep(0.05)
    finally:
        hang.set()
        await cache.close()
        await plane.store.close()


async def test_without_refresh_each_answer_makes_its_round_trips(tmp_path: Path):
    plane = build_dataplane(Settings(auren_data_dir=tmp_path, health_refresh_s=0))
    await plane.open()
    plane.refresh_health()
    try:
        assert plane.probes is None
        _, first = await plane.health(now_text())
        await asyncio.sleep(0.01)
        _, second = await plane.health(now_text())
        assert first["store:responseTime"][0]["time"] != second["store:responseTime"][0]["time"]
    finally:
        await plane.close(5)
