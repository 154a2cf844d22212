"""NEUROS's daily series shared through Redis: the codec, the second level against a real Redis,
and two real NEUROS processes on one PostgreSQL and one Redis."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from auren.adapters.postgres import PostgresStore
from auren.adapters.redis_cache import RedisCache
from auren.events import Delivery, make_event
from auren.infra.base import run_async
from auren.neuros import summaries
from auren.neuros.summaries import Entry, SharedSeries
from tests.helpers import free_port, run_server
from tests.stack import FullStack

# --- the codec (pure) -------------------------------------------------------------------------

_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(min_value=-(2**63), max_value=2**63 - 1))
_entries = st.builds(
    Entry,
    day=st.dates(),
    count=st.integers(min_value=0, max_value=2**63 - 1),
    written_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    series=st.dictionaries(st.dates(), _values, max_size=130),
    providers=st.frozensets(st.text(max_size=20), max_size=5),
)


@given(_entries)
def test_an_entry_survives_the_round_trip_exactly(entry: Entry) -> None:
    raw = summaries.encode(entry)
    assert raw is not None
    back = summaries.decode(raw)
    assert back == entry
    assert back is not None
    # Same order, same types, same bits (-0.0 stays -0.0, an int stays an int): the engine
    # computes from the decoded series exactly what it would from the store's.
    assert list(back.series) == list(entry.series)
    assert [(type(v), repr(v)) for v in back.series.values()] == \
        [(type(v), repr(v)) for v in entry.series.values()]


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_anything_else_decodes_to_a_miss_never_an_error(raw: bytes) -> None:
    decoded = summaries.decode(raw)
    assert decoded is None or isinstance(decoded, Entry)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_values_json_cannot_carry_are_not_cached(value: float) -> None:
    entry = Entry(date(2026, 1, 2), 3, 1.0, {date(2026, 1, 1): value}, frozenset())
    assert summaries.encode(entry) is None


def test_foreign_or_damaged_values_are_misses() -> None:
    good = summaries.encode(Entry(date(2026, 1, 2), 3, 1.0, {date(2026, 1, 1): 50.5},
                                  frozenset({"oura"})))
    assert good is not None
    for raw in (b"", b"null", b"[]", b'{"v": 2}', good.replace(b'"n":3', b'"n":"3"'),
                good.replace(b"50.5", b'"50.5"'), good.replace(b"2026-01-01", b"yesterday"),
                good.replace(b'"oura"', b"7"), good[:-3]):
        assert summaries.decode(raw) is None, raw


# --- the second level against a real Redis ---------------------------------------------------

pytest_slow = pytest.mark.slow


@pytest.fixture
async def redis_cache(full_stack: FullStack) -> Any:
    cache = RedisCache(full_stack.urls["REDIS_URL"], prefix=f"t:{uuid.uuid4().hex[:8]}:",
                       local_capacity=0)
    await cache.open()
    yield cache
    await cache.close()


def _client(url: str) -> Any:  # redis-py types its sync and async answers at once
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@pytest_slow
async def test_entries_are_valid_only_for_their_count_day_and_ttl(
        redis_cache: RedisCache, full_stack: FullStack) -> None:
    now = [1_000_000.0]
    shared = SharedSeries(redis_cache, ttl_s=60, clock=lambda: now[0])
    today = date(2026, 3, 1)
    hrv = ({today - timedelta(days=1): 51.25, today: 48.0}, frozenset({"oura", "whoop"}))
    rhr = ({today: 55.0}, frozenset({"oura"}))
    shared.put("u:1", "Europe/Paris", today, {"hrv_rmssd": hrv, "resting_heart_rate": rhr}, 7)
    await redis_cache.flush_fields()

    both = ["hrv_rmssd", "resting_heart_rate", "steps"]
    assert await shared.get("u:1", "Europe/Paris", today, both, 7) == \
        {"hrv_rmssd": hrv, "resting_heart_rate": rhr}
    assert await shared.get("u:1", "Europe/Paris", today, both, 8) == {}  # new events
    assert await shared.get("u:1", "UTC", today, both, 7) == {}  # another zone's days
    assert await shared.get("u:1", "Europe/Paris", today + timedelta(days=1), both, 7) == {}
    assert await shared.get("u:2", "Europe/Paris", today, both, 7) == {}  # another user
    now[0] += 61
    assert await shared.get("u:1", "Europe/Paris", today, both, 7) == {}  # past its TTL
    now[0] -= 61

    client = _client(full_stack.urls["REDIS_URL"])
    try:
        key = redis_cache.prefix + "neuros:series:u:1"
        assert 0 < client.ttl(key) <= 60
        client.hset(key, "Europe/Paris|hrv_rmssd", b"\x80 not json")
        assert await shared.get("u:1", "Europe/Paris", today, both, 7) == \
            {"resting_heart_rate": rhr}
        assert await shared.forget("u:1") is True
        assert client.exists(key) == 0
        assert await shared.get("u:1", "Europe/Paris", today, both, 7) == {}
    finally:
        client.close()


@pytest_slow
async def test_lookups_of_concurrent_turns_share_round_trips_and_hashes_stay_bounded(
        redis_cache: RedisCache, full_stack: FullStack) -> None:
    import asyncio

    shared = SharedSeries(redis_cache, ttl_s=30)
    today = date(2026, 3, 1)
    client = _client(full_stack.urls["REDIS_URL"])
    try:
        before = client.info("stats")["total_commands_processed"]
        found = await asyncio.gather(*(shared.get(f"u{i}", "UTC", today,
                                                  ["hrv_rmssd", "steps", "sleep_duration"], 1)
                                       for i in range(100)))
        after = client.info("stats")["total_commands_processed"]
        assert found == [{}] * 100
        # 100 turns' lookups of three metrics each: a few pipelined batches, not 300 commands
        # nor 100 round trips (a pipeline's HMGETs count one command each).
        assert after - before <= 100 + 10

        # One user asking from ever more time zones cannot grow their hash without bound.
        for zone in range(redis_cache.max_fields + 10):
            shared.put("u0", f"UTC+{zone}", today, {"steps": ({today: 1.0}, frozenset())}, 1)
        await redis_cache.flush_fields()
        key = redis_cache.prefix + "neuros:series:u0"
        assert 0 < client.hlen(key) <= redis_cache.max_fields
        assert 0 < client.ttl(key) <= 30
    finally:
        client.close()


# --- two NEUROS processes, one PostgreSQL, one Redis -----------------------------------------

USER = "redis-share-u"


async def _write_hrv(url: str, values: dict[int, float], tag: str) -> None:
    """HRV nights (days ago -> ms) straight into PostgreSQL through the real store."""
    store = PostgresStore(url, pool_size=1)
    await store.open()
    try:
        deliveries = []
        for days_ago, value in values.items():
            day = datetime.now(UTC).date() - timedelta(days=days_ago)
            record = f"{USER}-{tag}-{days_ago}"
            event = make_event(provider="oura", user_id=USER, provider_user_id=USER,
                               metric="hrv_rmssd", value=value, unit="ms",
                               start=datetime.combine(day, dtime(5), UTC),
                               source_record_id=record, received_at=datetime.now(UTC))
            deliveries.append(Delivery("oura", record, [event]))
        await store.write_batch(deliveries)
    finally:
        await store.close()


def _ask(base_url: str, conversation_id: str | None = None) -> dict[str, Any]:
    body = {"message": "What's my HRV like?", "user_id": USER}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = httpx.post(base_url + "/chat", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["intent"] == "hrv"
    return answer


def _latest(answer: dict[str, Any]) -> float:
    return float(next(e["value"] for e in answer["evidence"]
                      if e["statistic"] == "nightly value"))


def _lookups(base_url: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for line in httpx.get(base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("auren_neuros_cache_lookups_total{"):
            labels, _, value = line.rpartition(" ")
            level = labels.split('level="')[1].split('"')[0]
            result = labels.split('result="')[1].split('"')[0]
            found[(level, result)] = float(value)
    return found


def _wait_for_entry(client: Any, key: str, field: str, count: int) -> None:
    """The first answer's write goes with the next batch: wait (briefly) until it landed."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        raw = client.hget(key, field)
        entry = summaries.decode(raw) if isinstance(raw, bytes) else None
        if entry is not None and entry.count == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no entry for count {count} in {key}")


@pytest.fixture
def shared_env(full_stack: FullStack) -> dict[str, str]:
    env = full_stack.isolated()
    return {"POSTGRES_URL": env["POSTGRES_URL"], "REDIS_URL": env["REDIS_URL"],
            "REDIS_KEY_PREFIX": env["REDIS_KEY_PREFIX"], "REDIS_SUMMARY_TTL_S": "600",
            "NEUROS_RATE_PER_MINUTE": "10000",
            # With PostgreSQL, NEUROS reads the erasure ledger, whose pseudonyms need the key.
            "AUREN_ENCRYPTION_KEY": env["AUREN_ENCRYPTION_KEY"]}


def _conversation(base_url: str, conversation_id: str) -> httpx.Response:
    return httpx.get(f"{base_url}/api/v1/users/{USER}/conversations/{conversation_id}",
                     timeout=10)


@pytest_slow
def test_two_processes_share_series_and_conversations_and_one_erasure_clears_both(
        shared_env: dict[str, str], tmp_path: Path) -> None:
    """Two NEUROS replicas on one PostgreSQL and one Redis, as behind a load balancer: a
    person's daily series and conversations are shared, new events invalidate the series, and
    one erasure request, sent to either, removes the conversations and series for both."""
    url = shared_env["POSTGRES_URL"]
    with run_server("neuros", tmp_path, shared_env) as first, \
            run_server("neuros", tmp_path, shared_env) as second:
        run_async(lambda: _write_hrv(url, {d: 50.0 + d % 3 for d in range(1, 21)}, "a"), 60)
        client = _client(shared_env["REDIS_URL"])
        key = shared_env["REDIS_KEY_PREFIX"] + summaries.user_key(USER)
        field = summaries.field_name("UTC", "hrv_rmssd")
        try:
            answer = _ask(first.base_url)
            assert _lookups(first.base_url)[("redis", "miss")] >= 1
            _wait_for_entry(client, key, field, 20)
            keys = list(client.scan_iter(match=shared_env["REDIS_KEY_PREFIX"] + "*"))
            assert keys == [key.encode()]
            assert 0 < client.ttl(key) <= 600

            # The other process continues the conversation and answers from Redis, with the
            # same evidence.
            assert _lookups(second.base_url).get(("redis", "hit"), 0) == 0
            cid = answer["conversation_id"]
            again = _ask(second.base_url, cid)
            assert again["conversation_id"] == cid
            assert again["evidence"] == answer["evidence"]
            assert again["reply"] == answer["reply"]
            assert _lookups(second.base_url)[("redis", "hit")] >= 1

            # A new measurement: both processes recompute, neither serves the old numbers.
            run_async(lambda: _write_hrv(url, {0: 71.0}, "b"), 60)
            fresh = _ask(second.base_url)
            assert _latest(answer) != 71.0 and _latest(fresh) == 71.0
            _wait_for_entry(client, key, field, 21)
            hits = _lookups(first.base_url).get(("redis", "hit"), 0)
            assert _ask(first.base_url)["evidence"] == fresh["evidence"]
            # ...the first from the entry the second just wrote.
            assert _lookups(first.base_url)[("redis", "hit")] == hits + 1

            # Both processes read the conversation from PostgreSQL, both turns of it.
            seen = [_conversation(server.base_url, cid).json()["messages"]
                    for server in (first, second)]
            assert seen[0] == seen[1] and len(seen[0]) == 4

            # One erasure, sent to one process, drops the conversations (in PostgreSQL, so for
            # both processes) and the shared series.
            erased = httpx.delete(f"{first.base_url}/api/v1/users/{USER}/conversations",
                                  timeout=10)
            assert erased.status_code == 200, erased.text
            assert erased.json()["deleted"] == {"conversations": 3, "messages": 8}
            for server in (first, second):
                assert _conversation(server.base_url, cid).status_code == 404
                listed = httpx.get(f"{server.base_url}/api/v1/users/{USER}/conversations",
                                   timeout=10).json()["conversations"]
                assert listed == []
            assert client.exists(key) == 0
            assert list(client.scan_iter(match=shared_env["REDIS_KEY_PREFIX"] + "*")) == []
        finally:
            client.close()
        for server in (first, second):
            health = httpx.get(server.base_url + "/health", timeout=10).json()
            assert health["status"] == "pass", health
            assert health["checks"]["redis:responseTime"][0]["status"] == "pass"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A Redis of this test's own, so that stopping it disturbs nobody."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _breaker_state(base_url: str) -> float:
    for line in httpx.get(base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('auren_breaker_state{breaker="redis"}'):
            return float(line.rpartition(" ")[2])
    raise AssertionError("no redis breaker in /metrics")


@pytest_slow
def test_with_redis_gone_answers_come_from_the_store_and_health_warns(
        shared_env: dict[str, str], own_redis: tuple[subprocess.Popen[bytes], int],
        tmp_path: Path) -> None:
    process, port = own_redis
    env = {**shared_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "REDIS_TIMEOUT_S": "0.2",
           "BREAKER_MIN_CALLS": "2", "BREAKER_FAILURE_RATE": "0.05", "BREAKER_OPEN_S": "120"}
    url = env["POSTGRES_URL"]
    run_async(lambda: _write_hrv(url, {d: 50.0 + d % 3 for d in range(1, 21)}, "a"), 60)
    with run_server("neuros", tmp_path, env) as neuros:
        answer = _ask(neuros.base_url)
        assert httpx.get(neuros.base_url + "/health", timeout=10).json()["status"] == "pass"

        process.kill()  # Redis dies under a running NEUROS
        process.wait(10)
        # Failing round trips: the answer is computed from the store, and is the new one.
        run_async(lambda: _write_hrv(url, {0: 71.0}, "b"), 60)
        started = time.monotonic()
        fresh = _ask(neuros.base_url)
        assert _latest(answer) != 71.0 and _latest(fresh) == 71.0
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        while _breaker_state(neuros.base_url) != 2.0:  # open (the write fails after the answer)
            assert time.monotonic() < deadline, "the redis breaker did not open"
            time.sleep(0.05)
        # With the breaker open: no round trip at all, the store answers.
        run_async(lambda: _write_hrv(url, {0: 72.0}, "c"), 60)
        assert _latest(_ask(neuros.base_url)) == 72.0

        # /health's round trips are made in the background (HEALTH_REFRESH_S, 1 s): the next
        # refresh finds Redis gone.
        deadline = time.monotonic() + 10
        while True:
            health = httpx.get(neuros.base_url + "/health", timeout=10)
            assert health.status_code == 200
            body = health.json()
            if body["checks"]["redis:responseTime"][0]["status"] == "warn":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["status"] == "warn", body
        assert body["checks"]["breaker:redis"][0]["status"] == "warn"
        assert body["checks"]["store:responseTime"][0]["status"] == "pass"
        assert _lookups(neuros.base_url)[("redis", "miss")] >= 3


@pytest_slow
def test_a_closed_port_is_a_warning_from_the_start(shared_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    env = {**shared_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "REDIS_TIMEOUT_S": "0.2"}
    run_async(lambda: _write_hrv(env["POSTGRES_URL"], dict.fromkeys(range(1, 10), 60.0), "a"), 60)
    with run_server("neuros", tmp_path, env) as neuros:
        assert _latest(_ask(neuros.base_url)) == 60.0
        body = httpx.get(neuros.base_url + "/health", timeout=10).json()
        assert body["status"] == "warn"
        assert body["checks"]["redis:responseTime"][0]["status"] == "warn"
