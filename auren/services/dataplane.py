"""The data plane a service runs on, chosen once at start-up from settings.

=====================  ===========================  =========================================
setting                 unset                        set
=====================  ===========================  =========================================
``POSTGRES_URL``        SQLite file (store, reads)   PostgreSQL (store, reads)
``KAFKA_BOOTSTRAP_...`` the store is the durable     Kafka (+ breaker + spool) is; ``auren
                        step of a webhook            sink`` moves it into PostgreSQL
``REDIS_URL``           in-process dedup LRU         Redis dedup, rate limits, summaries
=====================  ===========================  =========================================

Kafka without PostgreSQL is refused: the sink writes to PostgreSQL and reads come from there.
Everything above (:class:`DataPlane`'s users: the bridge, the legacy bridge, NEUROS) is the
same code in every combination.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from auren.adapters.base import Cache, DurableLog, EventStore
from auren.adapters.breaker import OPEN, BreakerCollector, CircuitBreaker
from auren.adapters.memory import MemoryCache
from auren.adapters.sqlite import SQLiteStore
from auren.errors import AurenError, RateLimited
from auren.settings import Settings

PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}


def worst(*statuses: str) -> str:
    return max(statuses, key=_RANK.__getitem__)


def build_store(settings: Settings, *, application_name: str = "auren") -> EventStore:
    """The event store reads (and, without Kafka, writes) go to."""
    if settings.postgres_url is not None:
        from auren.adapters.postgres import PostgresStore  # asyncpg only where used

        return PostgresStore.from_settings(
            settings, application_name=application_name,
            breaker=CircuitBreaker.from_settings("postgres", settings))
    return SQLiteStore(settings.sqlite_path, timeout_s=settings.store_timeout_s)


@dataclass
class DataPlane:
    settings: Settings
    store: EventStore
    durable: DurableLog
    cache: Cache
    bus_log: Any = None  # BusLog when Kafka is configured
    redis: Any = None  # RedisCache when Redis is configured
    breakers: list[CircuitBreaker] = field(default_factory=list)

    async def open(self) -> None:
        await self.store.open()
        try:
            if self.redis is not None:
                await self.redis.open()
            if self.bus_log is not None:
                await self.bus_log.open()
        except BaseException:
            if self.redis is not None:
                await self.redis.close()
            await self.store.close()
            raise

    async def close(self, timeout_s: float) -> None:
        """After the committer drained: the bus (flush), then the cache and the store."""
        try:
            if self.bus_log is not None:
                await self.bus_log.close(timeout_s)
        finally:
            if self.redis is not None:
                await self.redis.close()
            await self.store.close()

    # --- rate limits -----------------------------------------------------------------------

    async def rate_gate(self, provider: str, client_ip: str | None) -> None:
        """Per-provider and per-source limits across every bridge sharing the Redis.

        Raises:
            RateLimited: over a limit in the current second (429 + Retry-After: 1).
        """
        redis = self.redis
        if redis is None:
            return
        s = self.settings
        if s.webhook_rate_per_provider and not await redis.within_rate(
                f"provider:{provider}", s.webhook_rate_per_provider):
            raise RateLimited(f"more than {s.webhook_rate_per_provider} webhooks/s for "
                              f"{provider}", retry_after_s=1)
        if s.webhook_rate_per_source and client_ip and not await redis.within_rate(
                f"source:{client_ip}", s.webhook_rate_per_source):
            raise RateLimited(f"more than {s.webhook_rate_per_source} webhooks/s from this "
                              "source", retry_after_s=1)

    @property
    def rate_limited(self) -> bool:
        s = self.settings
        return self.redis is not None and bool(s.webhook_rate_per_provider
                                               or s.webhook_rate_per_source)

    # --- health ---------------------------------------------------------------------------

    async def health(self, now: str) -> tuple[str, dict[str, list[dict[str, Any]]]]:
        """Checks for ``/health`` and the status they add up to.

        A dependency whose loss stops acknowledgements fails; one the bridge works around
        warns: PostgreSQL with Kafka in front of it (the bus and spool take the writes; reads
        fail), Kafka while the spool has room, Redis always.
        """
        checks: dict[str, list[dict[str, Any]]] = {}
        status = PASS
        store_severity = WARN if self.bus_log is not None else FAIL
        status = worst(status, await self._check(checks, "store:responseTime", "datastore",
                                                 self.store.ping, store_severity, now))
        if self.bus_log is not None:
            spool = self.bus_log.spool
            spool_ok = spool.failed is None
            status = worst(status, await self._check(
                checks, "kafka:responseTime", "datastore",
                lambda: self.bus_log.bus.ping(1.0), WARN if spool_ok else FAIL, now))
            facts = self.bus_log.facts()
            spool_status = FAIL if not spool_ok else (WARN if facts["pendingRecords"] else PASS)
            checks["spool:records"] = [{"componentType": "component", "status": spool_status,
                                        "observedValue": facts["pendingRecords"],
                                        "observedUnit": "records", "time": now, **facts}]
            status = worst(status, spool_status)
        if self.redis is not None:
            status = worst(status, await self._check(checks, "redis:responseTime", "datastore",
                                                     self.redis.ping, WARN, now))
        for breaker in self.breakers:
            snapshot = breaker.snapshot()
            state = snapshot["state"]
            breaker_status = PASS if state == "closed" else WARN
            checks[f"breaker:{breaker.name}"] = [{"componentType": "component",
                                                  "observedValue": state,
                                                  "status": breaker_status, "time": now,
                                                  **snapshot}]
            status = worst(status, breaker_status)
        return status, checks

    @staticmethod
    async def _check(checks: dict[str, list[dict[str, Any]]], key: str, kind: str,
                     ping: Any, severity: str, now: str) -> str:
        try:
            facts = await ping()
        except AurenError as exc:
            checks[key] = [{"componentType": kind, "status": severity, "output": exc.detail,
                            "time": now}]
            return str(severity)
        checks[key] = [{"componentId": facts.get("engine", key.split(":")[0]),
                        "componentType": kind,
                        "observedValue": round(facts["responseTime_ms"], 3),
                        "observedUnit": "ms", "status": PASS, "time": now}]
        return PASS

    def collectors(self) -> list[Collector]:
        return [BreakerCollector(self.breakers), _DataPlaneCollector(self)]


class _DataPlaneCollector(Collector):
    """Spool, producer and cache figures for ``/metrics`` (reliability K10), read at scrape."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        bus_log, redis = self._plane.bus_log, self._plane.redis
        if bus_log is not None:
            facts = bus_log.facts()
            yield GaugeMetricFamily("auren_spool_records", "Deliveries waiting in the spool",
                                    value=facts["pendingRecords"])
            yield GaugeMetricFamily("auren_spool_bytes", "Bytes waiting in the spool",
                                    value=facts["pendingBytes"])
            yield CounterMetricFamily("auren_spool_written", "Deliveries written to the spool",
                                      value=facts["spooled"])
            yield CounterMetricFamily("auren_spool_replayed",
                                      "Spooled deliveries published to Kafka",
                                      value=facts["replayed"])
            yield GaugeMetricFamily("auren_bus_queue_depth",
                                    "Records in the producer not yet reported on",
                                    value=bus_log.bus.queue_depth)
            failures = CounterMetricFamily("auren_bus_delivery_failures",
                                           "Records Kafka did not acknowledge, by error",
                                           labels=["error"])
            for error, count in bus_log.bus.failures.items():
                failures.add_metric([error], count)
            yield failures
        if redis is not None:
            yield CounterMetricFamily("auren_redis_errors", "Failed Redis round trips",
                                      value=redis.errors)


def build_dataplane(settings: Settings, *, application_name: str = "auren-bridge"
                    ) -> DataPlane:
    """Adapters for ``settings``; nothing connects before :meth:`DataPlane.open`.

    Raises:
        ValueError: an unsupported combination (Kafka without PostgreSQL).
    """
    if settings.kafka_bootstrap_servers and settings.postgres_url is None:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS needs POSTGRES_URL: the sink writes the "
                         "bus into PostgreSQL and every read comes from there")
    store = build_store(settings, application_name=application_name)
    breakers: list[CircuitBreaker] = []
    store_breaker = getattr(store, "breaker", None)
    if isinstance(store_breaker, CircuitBreaker):
        breakers.append(store_breaker)
    cache: Cache = MemoryCache(settings.dedup_cache_size)
    redis = None
    if settings.redis_url is not None:
        from auren.adapters.redis_cache import RedisCache

        redis = RedisCache.from_settings(
            settings, breaker=CircuitBreaker.from_settings("redis", settings))
        breakers.append(redis.breaker)
        cache = redis
    durable: DurableLog = store
    bus_log = None
    if settings.kafka_bootstrap_servers:
        from auren.adapters.kafka import KafkaBus
        from auren.ingest.durable import BusLog

        bus_breaker = CircuitBreaker.from_settings("kafka", settings)
        breakers.append(bus_breaker)
        bus_log = BusLog(KafkaBus.from_settings(settings), settings.auren_data_dir / "spool",
                         bus_breaker, timeout_s=settings.bus_timeout_s,
                         max_spool_bytes=settings.spool_max_bytes)
        durable = bus_log
    return DataPlane(settings, store, durable, cache, bus_log, redis, breakers)


__all__ = ["FAIL", "OPEN", "PASS", "WARN", "DataPlane", "build_dataplane", "build_store",
           "worst"]
