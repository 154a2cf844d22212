"""RedisCache against a real Redis: the fast paths, TTLs everywhere, and graceful failure."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from auren.adapters.breaker import CircuitBreaker
from auren.adapters.redis_cache import RedisCache
from auren.errors import StoreUnavailable

pytestmark = pytest.mark.slow


@pytest.fixture
async def cache(full_stack):
    c = RedisCache(full_stack.urls["REDIS_URL"], prefix=f"t:{uuid.uuid4().hex[:8]}:",
                   dedup_ttl_s=60, local_capacity=0)
    await c.open()
    yield c
    await c.close()


def _client(full_stack) -> redis.Redis:
    return redis.Redis.from_url(full_stack.urls["REDIS_URL"], socket_timeout=5,
                                socket_connect_timeout=5)


async def test_a_remembered_key_is_seen_by_every_process(cache, full_stack):
    assert await cache.seen("auren:msg_1") is False
    await cache.remember(["auren:msg_1"])
    await cache.flush()
    assert await cache.seen("auren:msg_1") is True
    other = RedisCache(full_stack.urls["REDIS_URL"], prefix=cache.prefix, local_capacity=0)
    await other.open()
    try:
        assert await other.seen("auren:msg_1") is True
        assert await other.seen("auren:msg_2") is False
    finally:
        await other.close()


async def test_every_key_has_a_ttl_and_the_prefix(cache, full_stack):
    await cache.remember([f"p:{i}" for i in range(5)])
    await cache.flush()
    assert await cache.within_rate("provider:auren", 100)
    assert await cache.set_json("summary:u1", {"hrv": 55.5}, ttl_s=30)
    assert await cache.get_json("summary:u1") == {"hrv": 55.5}
    with pytest.raises(ValueError):
        await cache.set_json("summary:u2", {}, ttl_s=0)
    client = _client(full_stack)
    try:
        keys = list(client.scan_iter(match=cache.prefix + "*", count=1000))
        assert len(keys) == 7
        for key in keys:
            assert 0 < client.ttl(key) <= 60, key
        # P8: nothing AUREN wrote anywhere in Redis lives forever.
        assert [k for k in client.scan_iter(count=1000) if client.ttl(k) == -1] == []
    finally:
        client.close()


async def test_concurrent_lookups_share_round_trips(cache, full_stack):
    client = _client(full_stack)
    try:
        before = client.info("stats")["total_commands_processed"]
        hits = await asyncio.gather(*(cache.seen(f"k{i}") for i in range(200)))
        after = client.info("stats")["total_commands_processed"]
    finally:
        client.close()
    assert hits == [False] * 200
    assert after - before < 20, f"{after - before} commands for 200 lookups"


async def test_rate_windows_count_across_callers(cache):
    results = await asyncio.gather(*(cache.within_rate("source:10.0.0.1", 50)
                                     for _ in range(80)))
    # All 80 may straddle two one-second windows; at most 50 pass in each.
    assert 50 <= results.count(True) <= 80
    assert results.count(True) <= 100


async def test_redis_down_degrades_to_misses_and_opens_the_breaker():
    breaker = CircuitBreaker("redis", min_calls=3, open_s=60)
    dead = RedisCache("redis://127.0.0.1:1/0", timeout_s=0.2, breaker=breaker,
                      local_capacity=100)
    await dead.open()  # a warning, not a failure
    try:
        started = time.monotonic()
        assert await dead.seen("x") is False
        await dead.remember(["x"])
        assert await dead.seen("x") is True, "the local LRU still answers"
        assert await dead.within_rate("provider:auren", 1) is True  # fails open
        assert await dead.get_json("s") is None
        assert await dead.set_json("s", 1, ttl_s=5) is False
        assert breaker.state == "open"
        with pytest.raises(StoreUnavailable):
            await dead.ping()
        assert time.monotonic() - started < 5
        assert dead.errors >= 3
    finally:
        await dead.close()
