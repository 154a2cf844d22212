"""Redis: the fast paths of the full stack. Losing it loses speed, never correctness.

* **Deduplication**: ``seen`` asks whether a delivery key was made durable before, ``remember``
  records it (``SET key 1 EX ttl NX``) after the bus or the store acknowledged it, never before:
  a key claimed before a failed write would answer the provider's retry "duplicate" and lose the
  data. Exact deduplication is the store's unique keys (the sink's ``ON CONFLICT``); Redis only
  spares the bus a copy.
* **Rate limits**: fixed one-second windows per provider and per source (``INCR`` + ``EXPIRE``).
  Failing open: with Redis down nobody is limited (the admission queue still bounds the load).
* **Summaries**: small JSON values with a TTL via :meth:`get_json` / :meth:`set_json`, and
  hashes of fields (NEUROS's daily series, one hash per user, see ``auren.neuros.summaries``)
  via :meth:`get_fields` / :meth:`post_fields` / :meth:`forget`: lookups of concurrent callers
  share one pipelined round trip, writes are one Lua call per batch that sets the fields and
  the hash's TTL together (a hash never exists without one).

Every key starts with the configured prefix and carries a TTL (privacy P8: nothing lives
forever in the cache). Every call is bounded by ``timeout_s`` and goes through a circuit
breaker; any failure degrades to "not seen" / "not limited" / "no summary", is counted, and
shows as ``warn`` in ``/health``. A webhook's own wait (``seen``, ``within_rate``) is bounded
by ``timeout_s`` as a whole, queueing behind a batch in flight included; round trips slower
than ``REDIS_SLOW_CALL_S`` count as failures in the breaker, weighted by their keys, so a hung
Redis (SIGSTOP: connections open, no answer) opens it within seconds.

Calls made concurrently are batched: while one round trip is in flight, the keys asked for
meanwhile wait and go together in the next (the same group-commit idea as the store), so a
busy bridge makes a few Redis round trips per batch of webhooks, not two per webhook. Batched
writes are small Lua scripts over many keys: that needs one Redis (or a primary with
replicas), not Redis Cluster, whose keys of one batch would span slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auren.adapters.breaker import CircuitBreaker
from auren.errors import StoreUnavailable

# Every key of a batch in one command, each with its TTL (ARGV[1] seconds).
_SET_ALL_NX_EX = """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, '1', 'EX', ARGV[1], 'NX')
end
return #KEYS
"""
# A window's counter lives 1 s; its key a little longer (ARGV[1] s), never forever.
_INCR_ALL_EX = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCR', key)
    if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return counts
"""

# One fixed window's counter (KEYS[1]), living a little longer than the window (ARGV[1] s).
_INCR_EX = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""

# Per hash (KEYS[i]): ARGV[n] = how many field/value pairs follow, then the pairs. A hash that
# would grow past ARGV[2] fields starts afresh (bounds what one user can make Redis hold); the
# TTL (ARGV[1] s) is set in the same call as the fields.
_HSET_ALL_EX = """
local ttl, cap, i = ARGV[1], tonumber(ARGV[2]), 3
for _, key in ipairs(KEYS) do
    local n = tonumber(ARGV[i])
    i = i + 1
    if redis.call('HLEN', key) + n > cap then redis.call('DEL', key) end
    for _ = 1, n do
        redis.call('HSET', key, ARGV[i], ARGV[i + 1])
        i = i + 2
    end
    redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""

K = TypeVar("K")
V = TypeVar("V")
log = logging.getLogger("auren.cache")


class _Batcher(Generic[K, V]):
    """Concurrent ``submit`` calls share one ``flush``; at most one flush in flight."""

    def __init__(self, flush: Callable[[list[K]], Awaitable[list[V]]], max_batch: int = 512
                 ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[K, asyncio.Future[V] | None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def submit(self, item: K, within_s: float | None = None) -> V:
        """``item``'s result. ``within_s`` bounds the whole wait, queueing behind a round trip
        in flight included: past it, StoreUnavailable (the item still goes, unanswered)."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._enqueue(item, future)
        if within_s is None:
            return await future
        done, _ = await asyncio.wait((future,), timeout=within_s)
        if not done:
            future.cancel()  # the flush skips a done future
            raise StoreUnavailable(f"Redis: no answer within {within_s:g} s")
        return future.result()

    def post(self, item: K, *, limit: int = 100_000) -> None:
        """Queue ``item`` without waiting for its round trip (dropped past ``limit`` queued:
        a cache that cannot keep up loses entries, never holds up a webhook)."""
        if len(self._pending) < limit:
            self._enqueue(item, None)

    def _enqueue(self, item: K, future: asyncio.Future[V] | None) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redis-batcher")
        self._pending.append((item, future))
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._busy = True
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:  # every waiter learns of it, then the loop goes on
                    for _, future in batch:
                        if future is not None and not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self._busy = False
                for (_, future), result in zip(batch, results, strict=True):
                    if future is not None and not future.done():
                        future.set_result(result)

    async def drain(self, within_s: float = 5.0) -> None:
        """Wait (at most ``within_s``) until nothing queued is left unsent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline:
            if not (self._pending or self._busy):
                return
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def tls_options(url: str, ca_file: Path | None) -> dict[str, Any]:
    """redis-py's TLS arguments for ``url``: none for ``redis://``; for ``rediss://`` the
    server's certificate is verified (against ``ca_file``, else the system's CAs) and so is
    its name."""
    if not url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    return options


class RedisCache:
    """``Cache`` (and rate limiter, summary cache) on Redis, with a small local LRU in front."""

    def __init__(self, url: str, *, prefix: str = "auren:", dedup_ttl_s: int = 259_200,
                 timeout_s: float = 0.5, breaker: CircuitBreaker | None = None,
                 local_capacity: int = 100_000, ca_file: Path | None = None) -> None:
        self._url = url
        self._tls = tls_options(url, ca_file)
        self.prefix = prefix
        self._ttl = dedup_ttl_s
        self._timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker("redis")
        self._local: OrderedDict[str, None] = OrderedDict()
        self._capacity = local_capacity
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._seen = _Batcher(self._mget)
        self._remember = _Batcher(self._set_many)
        self._incr = _Batcher(self._incr_many)
        self._hget = _Batcher(self._hmget_many)
        self._hset: _Batcher[tuple[str, tuple[tuple[str, bytes], ...], int], None] = \
            _Batcher(self._hset_many, max_batch=64)
        self.max_fields = 64  # per hash, see _HSET_ALL_EX
        self.errors = 0  # failed round trips since start
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, breaker: CircuitBreaker | None = None
                      ) -> RedisCache:
        if settings.redis_url is None:
            raise ValueError("REDIS_URL is not set")
        return cls(settings.redis_url.get_secret_value(), prefix=settings.redis_key_prefix,
                   dedup_ttl_s=settings.redis_dedup_ttl_s, timeout_s=settings.redis_timeout_s,
                   breaker=breaker, local_capacity=settings.dedup_cache_size,
                   ca_file=settings.redis_ssl_ca_file)

    async def open(self) -> None:
        """Connect lazily; a Redis that is down at start-up is a warning, not a failure."""
        t = self._timeout_s
        self._client = aioredis.Redis.from_url(
            self._url, socket_timeout=t, socket_connect_timeout=t, retry_on_timeout=False,
            max_connections=32, health_check_interval=30, **self._tls)
        try:
            await self.ping()
        except StoreUnavailable as exc:
            log.warning("redis unavailable at start; continuing without it",
                        extra={"error": exc.detail})

    async def close(self) -> None:
        for batcher in (self._seen, self._remember, self._incr, self._hget, self._hset):
            await batcher.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[[aioredis.Redis], Awaitable[V]], *, calls: int = 1) -> V:
        """One bounded round trip through the breaker; StoreUnavailable on any failure. A
        batched round trip counts as ``calls`` calls (its keys) in the breaker's rate, and
        one slower than ``REDIS_SLOW_CALL_S`` as slow: a hung Redis opens the breaker within
        seconds instead of costing every webhook its ``timeout_s``."""
        client = self._client
        if client is None:
            raise StoreUnavailable("redis is not open")

        async def bounded() -> V:
            try:
                return await asyncio.wait_for(fn(client), self._timeout_s)
            # RuntimeError: uvloop's, when redis-py writes to a connection the peer reset
            # between connect and the first command (a proxy that accepts for a dead Redis
            # resets at once); redis-py passes it on. Measured: 1 in 4 Redis kills under load
            # answered a webhook 500 before. Redis is only ever a fast path: a miss.
            except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
                self.errors += 1
                self.last_error = type(exc).__name__
                raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc

        return await self.breaker.call(bounded, calls=calls)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _local_add(self, key: str) -> None:
        if self._capacity <= 0:
            return
        self._local[key] = None
        self._local.move_to_end(key)
        if len(self._local) > self._capacity:
            self._local.popitem(last=False)

    # --- dedup (the Cache protocol) ------------------------------------------------------

    async def seen(self, key: str) -> bool:
        if key in self._local:
            self._local.move_to_end(key)
            return True
        try:
            hit = await self._seen.submit(key, self._timeout_s)
        except StoreUnavailable:
            return False  # unknown is "not seen": the store's unique keys still deduplicate
        if hit:
            self._local_add(key)
        return hit

    async def remember(self, keys: Sequence[str]) -> None:
        """Record keys as durable. Returns at once: the webhook's answer does not wait for
        Redis (the keys are already durable; this only spares a later copy), and a failure
        loses nothing but that."""
        for key in keys:
            self._local_add(key)
            self._remember.post(key)

    async def flush(self) -> None:
        """Wait until the keys remembered so far were sent (tests, shutdown)."""
        await self._remember.drain()

    async def _mget(self, keys: list[str]) -> list[bool]:
        names = [self._key("dedup:" + k) for k in keys]
        values = await self._call(lambda c: c.mget(names), calls=len(keys))
        return [v is not None for v in values]

    async def _set_many(self, keys: list[str]) -> list[None]:
        # One EVALSHA for the whole batch: a pipeline of N SET commands cost the bridge 7% of
        # its CPU under load (redis-py builds each command in Python); the script is one.
        names = [self._key("dedup:" + k) for k in keys]
        await self._call(lambda c: self._script(c, _SET_ALL_NX_EX)(keys=names, args=[self._ttl]),
                         calls=len(keys))
        return [None] * len(keys)

    def _script(self, client: aioredis.Redis, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            # redis-py runs it with EVALSHA and loads it again after a Redis restart.
            script = self._scripts[source] = client.register_script(source)
        return script

    # --- rate limits ----------------------------------------------------------------------

    async def within_rate(self, bucket: str, limit: int) -> bool:
        """Count one event in ``bucket``'s current one-second window; False once more than
        ``limit`` were counted in it (by every process sharing this Redis). Fails open."""
        window = int(time.time())
        try:
            count = await self._incr.submit(f"rate:{bucket}:{window}", self._timeout_s)
        except StoreUnavailable:
            return True
        return count <= limit

    async def window_count(self, bucket: str, window_s: int) -> int | None:
        """Count one call in ``bucket``'s current fixed window of ``window_s`` seconds (shared
        by every process on this Redis); the count so far, or None when Redis cannot say."""
        window = int(time.time() // window_s)
        name = self._key(f"window:{bucket}:{window_s}:{window}")
        try:
            count = await self._call(
                lambda c: self._script(c, _INCR_EX)(keys=[name], args=[window_s + 5]))
        except StoreUnavailable:
            return None
        return int(count)

    async def _incr_many(self, keys: list[str]) -> list[int]:
        names = [self._key(k) for k in keys]
        counts = await self._call(lambda c: self._script(c, _INCR_ALL_EX)(keys=names, args=[5]),
                                  calls=len(keys))
        return [int(v) for v in counts]

    # --- summaries ------------------------------------------------------------------------

    async def get_json(self, key: str) -> Any:
        """The cached value, or None when absent, expired or Redis is unavailable."""
        try:
            raw = await self._call(lambda c: c.get(self._key(key)))
        except StoreUnavailable:
            return None
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def set_json(self, key: str, value: Any, ttl_s: int) -> bool:
        """Cache ``value`` for ``ttl_s`` seconds (required: every key expires)."""
        if ttl_s <= 0:
            raise ValueError("every cached value needs a positive TTL")
        payload = orjson.dumps(value)
        try:
            await self._call(lambda c: c.set(self._key(key), payload, ex=ttl_s))
        except StoreUnavailable:
            return False
        return True

    async def forget(self, key: str) -> bool:
        """Delete ``key``; False when Redis could not be asked (it still expires)."""
        try:
            await self._call(lambda c: c.delete(self._key(key)))
        except StoreUnavailable:
            return False
        return True

    async def erase_matching(self, needles: Sequence[str], *, batch: int = 1000) -> int:
        """Delete every key of this prefix naming one of ``needles`` as a whole ``:``-separated
        part (a user id, a provider's user id): ``summary:<user>`` and the per-person rate
        windows. A key naming ``ab`` is not one of ``a``'s. Returns the keys deleted.

        Raises:
            StoreUnavailable: Redis could not be asked (nothing may be assumed deleted).
        """
        deleted = 0
        for needle in needles:
            pattern = self._key("*" + _glob_escape(needle) + "*")
            cursor = 0
            while True:

                async def scan(c: aioredis.Redis, at: int = cursor,
                               match: str = pattern) -> tuple[int, list[bytes]]:
                    found = await c.scan(at, match=match, count=batch)
                    return int(found[0]), list(found[1])

                cursor, found = await self._call(scan)
                names = [k for k in found if _names(k, self.prefix, needle)]
                if names:

                    async def unlink(c: aioredis.Redis, keys: list[bytes] = names) -> int:
                        return int(await c.unlink(*keys))

                    deleted += await self._call(unlink)
                if not cursor:
                    break
        return deleted

    # --- hashes of fields (NEUROS's shared series) ------------------------------------------

    async def get_fields(self, key: str, fields: Sequence[str]) -> list[bytes | None] | None:
        """The values of ``fields`` of hash ``key`` (None for each one absent), or None when
        Redis is unavailable. Waits at most ``timeout_s`` beyond a round trip in flight."""
        if not fields:
            return []
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                return await self._hget.submit((key, tuple(fields)))
        except (StoreUnavailable, TimeoutError):
            return None

    def post_fields(self, key: str, values: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        """Set fields of hash ``key`` and give the hash ``ttl_s`` seconds (required: every key
        expires). Returns at once; the write goes with the next batch and a failure loses
        only the entry."""
        if ttl_s <= 0:
            raise ValueError("every cached value needs a positive TTL")
        if values:
            self._hset.post((key, tuple(values), ttl_s), limit=10_000)

    async def flush_fields(self) -> None:
        """Wait (boundedly) until the fields posted so far were sent (erasure, tests)."""
        await self._hset.drain(within_s=max(2.0, self._timeout_s * 4))

    async def _hmget_many(self, items: list[tuple[str, tuple[str, ...]]]
                          ) -> list[list[bytes | None]]:
        async def run(client: aioredis.Redis) -> list[list[bytes | None]]:
            async with client.pipeline(transaction=False) as pipe:
                for key, fields in items:
                    pipe.hmget(self._key(key), list(fields))
                return cast("list[list[bytes | None]]", await pipe.execute())

        return await self._call(run)

    async def _hset_many(self, items: list[tuple[str, tuple[tuple[str, bytes], ...], int]]
                         ) -> list[None]:
        # One script call per TTL in the batch (in practice one: the TTL is a setting).
        for ttl in sorted({ttl for _, _, ttl in items}):
            names: list[str] = []
            args: list[Any] = [ttl, self.max_fields]
            for key, values, item_ttl in items:
                if item_ttl == ttl:
                    names.append(self._key(key))
                    args.append(len(values))
                    for field, value in values:
                        args += [field, value]
            await self._call(self._hset_call(names, args))
        return [None] * len(items)

    def _hset_call(self, names: list[str], args: list[Any]
                   ) -> Callable[[aioredis.Redis], Awaitable[Any]]:
        return lambda c: self._script(c, _HSET_ALL_EX)(keys=names, args=args)

    # --- health ---------------------------------------------------------------------------

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        # redis-py types ping() for its sync and async clients at once.
        await self._call(lambda c: cast("Awaitable[bool]", c.ping()))
        return {"engine": "redis", "responseTime_ms": (time.perf_counter() - started) * 1000,
                "breaker": self.breaker.state}


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _names(key: bytes | str, prefix: str, needle: str) -> bool:
    """Whether ``key`` (after ``prefix``) has ``needle`` as a whole ``:``-separated part."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    rest = text[len(prefix):] if text.startswith(prefix) else text
    at = rest.find(needle)
    while at >= 0:
        end = at + len(needle)
        if (at == 0 or rest[at - 1] == ":") and (end == len(rest) or rest[end] == ":"):
            return True
        at = rest.find(needle, at + 1)
    return False
