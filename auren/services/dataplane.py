"""The composition root: every service's dependencies, built once at start-up from settings.

=====================  ===========================  =========================================
setting                 unset                        set
=====================  ===========================  =========================================
``POSTGRES_URL``        SQLite file (store, reads,   PostgreSQL (store, reads, NEUROS's
                        NEUROS's conversations)      conversations, shared by every process)
``KAFKA_BOOTSTRAP_...`` the store is the durable     Kafka (+ breaker + spool) is; ``auren
                        step of a webhook            sink`` moves it into PostgreSQL
``REDIS_URL``           in-process dedup LRU         Redis dedup, rate limits, NEUROS's shared
                                                     daily series
``NEUROS_LLM``          builtin phrasing             an LLM client with finite timeouts
=====================  ===========================  =========================================

Kafka without PostgreSQL is refused: the sink writes to PostgreSQL and reads come from there.
:func:`build_dataplane` gives each service (the bridge, the legacy bridge, NEUROS, the
fetcher) exactly what it uses, and :func:`postgres_store` the sink and ``auren db``; one
circuit breaker guards each dependency. The bridge and the fetcher also get the connections
(people, their encrypted tokens) and the job queue, in the same SQLite file or PostgreSQL
database as the events; NEUROS reads the connections' status without the encryption key.
Nothing connects before :meth:`DataPlane.open`. Everything above is the same code in every
combination.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from auren.adapters.base import Cache, DurableLog, EventStore, RawArchive
from auren.adapters.breaker import BreakerCollector, CircuitBreaker
from auren.adapters.memory import MemoryCache
from auren.adapters.sqlite import SQLiteStore
from auren.errors import RateLimited
from auren.neuros.memory import ConversationStore
from auren.services.kernel.health import (
    FAIL,
    PASS,
    WARN,
    Checks,
    ProbeCache,
    breaker_check,
    round_trip,
    worst,
)
from auren.settings import Settings

if TYPE_CHECKING:  # clients are imported only by the services that use them, where configured
    import httpx

    from auren.adapters.postgres import PostgresStore
    from auren.adapters.redis_cache import RedisCache
    from auren.connections.base import ConnectionStore, JobQueue
    from auren.connections.crypto import TokenCipher
    from auren.ingest.durable import BusLog
    from auren.neuros.llm import LLMProvider
    from auren.privacy.base import AuditLog, ConsentStore

Service = Literal["bridge", "legacy", "neuros", "fetcher", "privacy"]


@dataclass
class DataPlane:
    """What one service process depends on outside itself, and its lifecycle and health."""

    settings: Settings
    store: EventStore
    # Where a webhook becomes durable: the store, or the bus with its spool (``bus_log``).
    durable: DurableLog
    cache: Cache
    bus_log: BusLog | None = None
    redis: RedisCache | None = None
    conversations: ConversationStore | None = None
    # NEUROS's LLM, when one is configured, and the HTTP client it calls it through.
    llm: LLMProvider | None = None
    http: httpx.AsyncClient | None = None
    breakers: list[CircuitBreaker] = field(default_factory=list)
    # People and their connections (NEUROS: read without the key), the fetch job queue, and
    # the key the tokens are encrypted with.
    connections: ConnectionStore | None = None
    jobs: JobQueue | None = None
    cipher: TokenCipher | None = None
    # The raw payload archive and retention: kept by the store (its tables, its transaction).
    archive: RawArchive | None = None
    # The people's consents and the audit log (the bridge, the fetcher, ``auren export`` and
    # ``auren audit``), beside the connections.
    consents: ConsentStore | None = None
    audit: AuditLog | None = None
    # The round trips /health reports, refreshed in the background while open.
    probes: ProbeCache | None = None

    @property
    def mode(self) -> str:
        return "embedded" if self.settings.embedded else "full"

    async def open(self) -> None:
        """Connect, in order; whatever opened is closed again if a later step fails. A Redis
        that is down is not a failure (lookups miss, ``/health`` warns)."""
        await self.store.open()
        try:
            if self.connections is not None:
                await self.connections.open()
            if self.jobs is not None:  # after the store: its migrations make the job table
                await self.jobs.open()
            for privacy in (self.consents, self.audit):
                if privacy is not None:
                    await privacy.open()
            if self.conversations is not None:
                await self.conversations.open()
            if self.redis is not None:
                await self.redis.open()
            if self.bus_log is not None:
                await self.bus_log.open()
        except BaseException:
            await self._close_stores()
            raise

    def refresh_health(self) -> None:
        """Make the round trips ``/health`` reports in the background from now on (every
        ``HEALTH_REFRESH_S``; 0: each ``/health`` makes its own). For a service that serves
        ``/health``, once open; a tool that opens the plane for one job does not call it."""
        refresh_s = self.settings.health_refresh_s
        if refresh_s > 0 and self.probes is None:
            # Stale once a refresh outlasts every ping's own timeout: something is stuck.
            self.probes = ProbeCache(self._round_trips, interval_s=refresh_s,
                                     stale_after_s=refresh_s + 3 * self.settings.store_timeout_s)
            self.probes.start()

    async def close(self, timeout_s: float) -> None:
        """After the service drained: the bus (flush), then the clients and the stores."""
        if self.probes is not None:
            await self.probes.close()
            self.probes = None
        try:
            if self.bus_log is not None:
                await self.bus_log.close(timeout_s)
        finally:
            if self.http is not None:
                await self.http.aclose()
            await self._close_stores()

    async def _close_stores(self) -> None:
        try:
            if self.redis is not None:
                await self.redis.close()
            if self.conversations is not None:
                await self.conversations.close()
            if self.jobs is not None:
                await self.jobs.close()
            for privacy in (self.audit, self.consents):
                if privacy is not None:
                    await privacy.close()
            if self.connections is not None:
                await self.connections.close()
        finally:
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

    async def health(self, now: str) -> tuple[str, Checks]:
        """Checks for ``/health`` and the status they add up to.

        A dependency whose loss stops the service fails; one it works around warns: PostgreSQL
        with Kafka in front of it (the bus and spool take the writes; reads fail), Kafka while
        the spool has room, Redis always.

        The round trips come from the background refresh (:class:`ProbeCache`) while the plane
        is open; the spool and the breakers are read now (they are in memory).
        """
        probes = self.probes
        status, checks = await (probes.read(now) if probes is not None
                                else self._round_trips(now))
        bus_log = self.bus_log
        if bus_log is not None:
            facts = bus_log.facts()
            spool_ok = bus_log.spool.failed is None
            spool_status = FAIL if not spool_ok else (WARN if facts["pendingRecords"] else PASS)
            checks["spool:records"] = [{"componentType": "component", "status": spool_status,
                                        "observedValue": facts["pendingRecords"],
                                        "observedUnit": "records", "time": now, **facts}]
            status = worst(status, spool_status)
        for breaker in self.breakers:
            status = worst(status, breaker_check(checks, breaker, now))
        return status, checks

    async def _round_trips(self, now: str) -> tuple[str, Checks]:
        """One round trip to each dependency, one after the other."""
        checks: Checks = {}
        store_severity = WARN if self.bus_log is not None else FAIL
        status = await round_trip(checks, "store:responseTime", self.store.ping,
                                  store_severity, now)
        if self.conversations is not None:
            status = worst(status, await round_trip(
                checks, "conversations:responseTime", self.conversations.ping, FAIL, now))
        if self.connections is not None:
            # Webhooks do not need it; connecting accounts and fetching do.
            status = worst(status, await round_trip(
                checks, "connections:responseTime", self.connections.ping, WARN, now))
        if self.audit is not None:
            # Reads are refused (503) while their audit records cannot be written.
            status = worst(status, await round_trip(
                checks, "audit:responseTime", self.audit.ping, WARN, now))
        bus_log = self.bus_log
        if bus_log is not None:
            spool_ok = bus_log.spool.failed is None
            status = worst(status, await round_trip(
                checks, "kafka:responseTime", lambda: bus_log.bus.ping(1.0),
                WARN if spool_ok else FAIL, now))
        if self.redis is not None:
            status = worst(status, await round_trip(checks, "redis:responseTime",
                                                    self.redis.ping, WARN, now))
        return status, checks

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


# --- builders -----------------------------------------------------------------------------


def postgres_store(settings: Settings, *, application_name: str,
                   breaker: CircuitBreaker | None = None) -> PostgresStore:
    """The full stack's event store (the sink's and ``auren db``'s too), behind its breaker."""
    from auren.adapters.postgres import PostgresStore  # asyncpg only where used

    return PostgresStore.from_settings(
        settings, application_name=application_name,
        breaker=breaker or CircuitBreaker.from_settings("postgres", settings))


def build_dataplane(settings: Settings, *, service: Service = "bridge") -> DataPlane:
    """The dependencies of ``service`` for ``settings``; nothing connects before
    :meth:`DataPlane.open`.

    * bridge: the store, the durable step (the store, or Kafka with its spool) and the dedup
      cache (Redis, or in process), with Redis's rate limits;
    * legacy: the store as its own durable step and an in-process cache (v1 had no bus);
    * neuros: the store it reads, the conversations, Redis for the shared daily series, the
      connections' status (no key) and the LLM client when one is configured;
    * fetcher: as the bridge (its durable step writes the fetched events), with the
      connections and the job queue.

    Raises:
        ValueError: an unsupported combination for the bridge or the fetcher (Kafka without
            PostgreSQL), or no AUREN_ENCRYPTION_KEY outside embedded mode.
    """
    writes = service in ("bridge", "fetcher")
    if writes and settings.kafka_bootstrap_servers and settings.postgres_url is None:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS needs POSTGRES_URL: the sink writes the "
                         "bus into PostgreSQL and every read comes from there")
    name = f"auren-{service}"
    breakers: list[CircuitBreaker] = []
    store: EventStore
    archive: RawArchive
    conversations: ConversationStore | None = None
    if settings.postgres_url is not None:
        pg_breaker = CircuitBreaker.from_settings("postgres", settings)
        breakers.append(pg_breaker)
        store = archive = postgres_store(settings, application_name=name, breaker=pg_breaker)
    else:
        store = archive = SQLiteStore(settings.sqlite_path, timeout_s=settings.store_timeout_s,
                                      wal_limit_bytes=settings.sqlite_wal_limit_bytes)
    if service == "neuros":
        conversations = conversation_store(settings, application_name=name,
                                           breaker=breakers[0] if breakers else None)
    plane = DataPlane(settings, store, store, MemoryCache(settings.dedup_cache_size),
                      conversations=conversations, breakers=breakers)
    plane.archive = archive
    if service == "legacy":
        return plane
    _add_connections(plane, service)
    _add_privacy(plane, service)
    if service == "privacy":
        return plane
    if settings.redis_url is not None:
        from auren.adapters.redis_cache import RedisCache  # redis only where used

        plane.redis = RedisCache.from_settings(
            settings, breaker=CircuitBreaker.from_settings("redis", settings))
        breakers.append(plane.redis.breaker)
        if service == "bridge":
            plane.cache = plane.redis
    if writes and settings.kafka_bootstrap_servers:
        from auren.adapters.kafka import KafkaBus  # confluent-kafka only where used
        from auren.ingest.durable import BusLog

        bus_breaker = CircuitBreaker.from_settings("kafka", settings)
        breakers.append(bus_breaker)
        plane.bus_log = BusLog(KafkaBus.from_settings(settings, client_id=name),
                               settings.auren_data_dir / "spool", bus_breaker,
                               timeout_s=settings.bus_timeout_s,
                               max_spool_bytes=settings.spool_max_bytes)
        plane.durable = plane.bus_log
    if service == "neuros" and settings.neuros_llm != "builtin":
        import httpx  # the bridges need no HTTP client: a tenth of their start-up

        from auren.neuros.llm import build_provider

        timeout = settings.neuros_llm_timeout_s
        plane.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
                                       limits=httpx.Limits(max_connections=50),
                                       follow_redirects=False)
        plane.llm = build_provider(settings, plane.http)
    return plane


def conversation_store(settings: Settings, *, application_name: str,
                       breaker: CircuitBreaker | None = None) -> ConversationStore:
    """NEUROS's memory where the settings keep it: the SQLite file (embedded) or PostgreSQL.
    NEUROS holds it open; the bridge's export opens one for the length of an export."""
    if settings.postgres_url is not None:
        from auren.adapters.postgres import PostgresPool
        from auren.neuros.memory.postgres import PostgresConversations

        return PostgresConversations(PostgresPool.from_settings(
            settings, application_name=application_name, breaker=breaker))
    from auren.neuros.memory.sqlite import SQLiteConversations

    return SQLiteConversations(settings.sqlite_path, timeout_s=settings.store_timeout_s,
                               wal_limit_bytes=settings.sqlite_wal_limit_bytes)


def _add_privacy(plane: DataPlane, service: Service) -> None:
    """The consents (bridge, fetcher, ``auren export``/``audit``) and the audit log (all but
    the fetcher, which serves nobody's data: the bridge, NEUROS and the command line)."""
    settings = plane.settings
    if settings.postgres_url is not None:
        from auren.adapters.postgres import PostgresPool
        from auren.privacy.postgres import PostgresAudit, PostgresConsents

        url = settings.postgres_url.get_secret_value()

        def pool(kind: str) -> PostgresPool:
            return PostgresPool(url, timeout_s=settings.store_timeout_s, pool_size=2,
                                application_name=f"auren-{service}-{kind}")

        if service != "neuros":
            plane.consents = PostgresConsents(pool("consents"))
        if service != "fetcher":
            plane.audit = PostgresAudit(pool("audit"))
        return
    from auren.privacy.sqlite import SQLiteAudit, SQLiteConsents

    if service != "neuros":
        plane.consents = SQLiteConsents(settings.sqlite_path,
                                        timeout_s=settings.store_timeout_s)
    if service != "fetcher":
        plane.audit = SQLiteAudit(settings.sqlite_path, timeout_s=settings.store_timeout_s)


def _add_connections(plane: DataPlane, service: Service) -> None:
    """The connections (and, for the bridge and the fetcher, the job queue and the key)."""
    from auren.connections.crypto import TokenCipher

    settings = plane.settings
    # NEUROS reads the connections' status and the export their records: neither needs tokens.
    cipher = (TokenCipher.from_settings(settings) if service not in ("neuros", "privacy")
              else None)
    plane.cipher = cipher
    name = f"auren-{service}-connections"
    if settings.postgres_url is not None:
        from auren.adapters.postgres import PostgresPool
        from auren.connections.postgres import PostgresConnections, PostgresJobs

        url = settings.postgres_url.get_secret_value()

        def pool() -> PostgresPool:
            # No breaker: a token refresh holds its call while the provider answers, which a
            # breaker's stall rule would take for a stalled database.
            return PostgresPool(url, timeout_s=settings.store_timeout_s,
                                pool_size=min(4, settings.postgres_pool_size),
                                application_name=name)

        plane.connections = PostgresConnections(pool(), cipher)
        if service in ("bridge", "fetcher"):
            plane.jobs = PostgresJobs(pool())
        return
    from auren.connections.sqlite import SQLiteConnections, SQLiteJobs

    lease = 2 * settings.fetch_timeout_s + 10  # longer than any refresh call can take
    plane.connections = SQLiteConnections(settings.sqlite_path, cipher,
                                          timeout_s=settings.store_timeout_s,
                                          refresh_lease_s=lease)
    if service in ("bridge", "fetcher"):
        plane.jobs = SQLiteJobs(settings.sqlite_path, settings.store_timeout_s)


__all__ = ["DataPlane", "Service", "build_dataplane", "conversation_store", "postgres_store"]
