from __future__ import annotations

import pytest

from auren.errors import RateLimited
from auren.neuros.ratelimit import RateLimiter


def test_token_bucket_per_user_with_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # one token every 10 s
    for _ in range(6):
        limiter.take("a")
    with pytest.raises(RateLimited) as info:
        limiter.take("a")
    assert info.value.headers() == {"Retry-After": "10"}
    limiter.take("b")  # buckets are per user
    now[0] = 10.0
    limiter.take("a")
    limiter.forget("a")
    for _ in range(6):
        limiter.take("a")


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(1, max_users=3, clock=lambda: 0.0)
    for user in "abcd":
        limiter.take(user)
    limiter.take("a")  # "a" was evicted (least recently seen), so it has a fresh bucket


def test_try_take_spends_what_there_is_and_never_refuses() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])  # one token every 30 s
    assert limiter.try_take("a") and limiter.try_take("a")
    assert not limiter.try_take("a")  # empty: nothing raised, nothing spent
    with pytest.raises(RateLimited) as info:
        limiter.take("a")
    assert info.value.headers() == {"Retry-After": "30"}
    now[0] = 30.0
    assert limiter.try_take("a")
