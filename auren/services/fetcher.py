"""``auren fetcher``: the fetcher as a process, and its parts as the bridge uses them.

:func:`assemble` builds, from a service's data plane, the provider HTTP client (limits shared
through Redis when there is one), the provider APIs, the :class:`~auren.connections.fetcher.
Fetcher` and the :class:`~auren.connections.service.ConnectionsService` of the bridge's API.

Embedded, the job queue is the SQLite file's ``fetch_jobs`` table, which the bridge fills in
the webhook's own transaction; the bridge runs the fetcher in its process by default
(``FETCHER_IN_BRIDGE``), and ``auren fetcher`` can run beside it (claims never overlap). In the
full stack ``auren fetcher`` is also a consumer group (``KAFKA_FETCHER_GROUP``) on the
notifications topic: each record's jobs are added to PostgreSQL's queue (the sink adds them
too; whichever is first, the other adds nothing), and the offsets are stored only after that.
Jobs are then claimed from PostgreSQL, so retries wait there, not in Kafka, and several fetcher
processes share the work. With ``FETCHER_METRICS_PORT`` set it serves ``/metrics`` and
``/health``. SIGTERM: no new claims, the jobs in hand get ``SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import orjson
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from auren import __version__
from auren.adapters.base import EventStore
from auren.adapters.sqlite import SQLiteStore
from auren.adapters.wire import decode
from auren.connections.apis import build_apis
from auren.connections.base import JobQueue
from auren.connections.fetcher import Fetcher
from auren.connections.http import CallPolicy, ProviderHttp
from auren.connections.limits import RateLimiter, scaled
from auren.connections.metrics import FetcherMetrics, QueueCollector
from auren.connections.service import ConnectionsService
from auren.erasure.ledger import LedgerFeed, ScreenedLog
from auren.errors import StoreUnavailable
from auren.events import FetchJob
from auren.privacy.gate import ConsentGate
from auren.services.dataplane import DataPlane, build_dataplane, postgres_store
from auren.services.erasures import erasure_store, new_ledger
from auren.services.kernel.health import health_response, now_text
from auren.services.kernel.problem import install_problem_handlers
from auren.services.kernel.responses import metrics_response
from auren.services.sink_http import serve_embedded
from auren.settings import Settings

log = logging.getLogger("auren.fetcher")
T = TypeVar("T")


@dataclass
class FetcherParts:
    fetcher: Fetcher
    service: ConnectionsService
    http: ProviderHttp
    metrics: FetcherMetrics
    # Consent: recorded on connect, checked before every fetch and (the bridge) every webhook.
    gate: ConsentGate

    async def close(self) -> None:
        await self.http.close()


def assemble(settings: Settings, plane: DataPlane, registry: CollectorRegistry) -> FetcherParts:
    """The fetcher and the connection API's logic over ``plane`` (opened by the caller)."""
    if plane.connections is None or plane.jobs is None or plane.cipher is None \
            or plane.consents is None:
        raise ValueError("the data plane has no connections: build it for the bridge or the "
                         "fetcher")
    metrics = FetcherMetrics(registry)
    collector = QueueCollector()
    registry.register(collector)
    policy = CallPolicy(httpx.Timeout(settings.fetch_timeout_s,
                                      connect=settings.fetch_connect_timeout_s),
                        settings.fetch_max_inline_wait_s)
    limiter = RateLimiter(plane.redis, limits=scaled(settings.fetch_rate_limit_scale))
    http = ProviderHttp(policy, limiter, metrics)
    apis = build_apis(settings)
    gate = ConsentGate(plane.consents, refresh_s=settings.consent_refresh_s, registry=registry)
    fetcher = Fetcher(settings, plane.connections, plane.jobs, plane.durable, plane.store, http,
                      apis, metrics=metrics, collector=collector, may_fetch=gate.may_fetch,
                      consent=gate.given)
    service = ConnectionsService(settings, plane.connections, plane.jobs, plane.store,
                                 plane.cipher, http, apis, wake=fetcher.wake, consent=gate.given)
    return FetcherParts(fetcher, service, http, metrics, gate)


def _job(row: Any) -> FetchJob:
    return FetchJob(job_id=row[0], provider=row[1], user_id=row[2], provider_user_id=row[3],
                    kind=row[4], object_id=row[5], params=orjson.loads(row[6]),
                    received_at=datetime.fromisoformat(row[7]))


class NotificationConsumer:
    """The full stack's feed of new jobs: the notifications topic into the job queue."""

    def __init__(self, settings: Settings, jobs: JobQueue, wake: Callable[[], None],
                 feed: LedgerFeed | None = None) -> None:
        from confluent_kafka import Consumer  # only the full stack's fetcher needs it

        from auren.services.sink import consumer_config

        config = consumer_config(settings, client_id="auren-fetcher")
        config["group.id"] = settings.kafka_fetcher_group
        config["logger"] = log
        self._factory = Consumer
        self._config = config
        self._topic = settings.kafka_notifications_topic
        self._jobs = jobs
        self._wake = wake
        # Jobs of people erased by the time they are added are dropped (the ledger re-read).
        self._feed = feed
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="fetcher-consumer")
        self._consumer: Any = None
        self.added = 0

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: fn(*args, **kwargs))

    async def open(self) -> None:
        self._consumer = await self._call(self._factory, self._config)
        await self._call(self._consumer.subscribe, [self._topic])

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._call(consumer.close)
        self._thread.shutdown(wait=True)

    async def run(self, stop: asyncio.Event) -> None:
        from confluent_kafka import TopicPartition

        while not stop.is_set():
            messages = await self._call(self._consumer.consume, 500, 0.2)
            jobs: list[FetchJob] = []
            offsets: dict[tuple[str, int], int] = {}
            for message in messages:
                if message.error() is not None:
                    log.warning("kafka consume error", extra={"error": message.error().name()})
                    continue
                offsets[(message.topic(), message.partition())] = message.offset() + 1
                try:
                    jobs += [_job(row) for row in decode(message.value() or b"").jobs]
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("undecodable notification record skipped",
                              extra={"detail": f"{message.topic()}[{message.partition()}]"
                                               f"@{message.offset()}: {exc}"})
            delay = 0.2
            while jobs and not stop.is_set():
                try:
                    if self._feed is not None:
                        await self._feed.refresh()
                        ledger = self._feed.ledger
                        jobs = [j for j in jobs
                                if not ledger.erased(j.user_id, j.provider, j.provider_user_id)]
                    self.added += await self._jobs.add(jobs)
                    break
                except StoreUnavailable as exc:
                    log.warning("adding jobs failed; retrying", extra={"error": exc.detail})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, 5.0)
            else:
                if jobs:
                    return  # stopped before they were added: their offsets stay
            if offsets:
                await self._call(self._consumer.store_offsets, offsets=[
                    TopicPartition(t, p, o) for (t, p), o in offsets.items()])
            if jobs:
                self._wake()


def create_app(plane: DataPlane, registry: CollectorRegistry) -> FastAPI:
    """``/metrics`` and ``/health`` of a fetcher process."""
    started = time.time()
    app = FastAPI(title="AUREN fetcher", version=__version__, docs_url=None, redoc_url=None,
                  description="Progress and health of `auren fetcher`.")
    install_problem_handlers(app)

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        now = now_text()
        status, checks = await plane.health(now)
        return health_response(status, checks, service_id="auren-fetcher",
                               description="AUREN fetcher", started=started, now=now,
                               mode=plane.mode)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return metrics_response(registry)

    return app


async def run_fetcher(settings: Settings, *, idle_exit_s: float | None = None,
                      stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or, with ``idle_exit_s``, until no job was due for that
    long); returns how many job runs finished."""
    stop = stop or asyncio.Event()
    plane = build_dataplane(settings, service="fetcher")
    registry = CollectorRegistry(auto_describe=True)
    for collector in plane.collectors():
        registry.register(collector)
    # Nothing of an erased person is written, whichever process fetches (the erasure ledger).
    assert plane.cipher is not None  # noqa: S101 - the fetcher's plane holds the key
    erasures = erasure_store(settings, "auren-fetcher-erasure")
    feed = LedgerFeed(erasures, new_ledger(plane.cipher))
    plane.durable = ScreenedLog(plane.durable, feed.ledger)
    parts = assemble(settings, plane, registry)
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    consumer: NotificationConsumer | None = None
    await plane.open()
    plane.refresh_health()
    following: asyncio.Task[None] | None = None
    try:
        await erasures.open()
        following = asyncio.create_task(feed.follow(stop, settings.erasure_poll_s))
        assert plane.jobs is not None  # noqa: S101 - built for the fetcher
        if settings.kafka_bootstrap_servers:
            consumer = NotificationConsumer(settings, plane.jobs, parts.fetcher.wake, feed)
            await consumer.open()
        async with serve_embedded(lambda: create_app(plane, registry),
                                  settings.fetcher_metrics_host,
                                  settings.fetcher_metrics_port) as port:
            log.info("fetcher started", extra={"mode": plane.mode, "port": port})
            feeding = asyncio.create_task(consumer.run(stop)) if consumer else None
            try:
                await parts.fetcher.run(stop, idle_exit_s=idle_exit_s)
            finally:
                stop.set()
                if feeding is not None:
                    await feeding
        return parts.fetcher.finished
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if consumer is not None:
            await consumer.close()
        if following is not None:
            stop.set()
            await following
        await erasures.close()
        await parts.close()
        await plane.close(settings.shutdown_timeout_s)
        log.info("fetcher stopped", extra={"count": parts.fetcher.finished})


@contextlib.asynccontextmanager
async def job_admin(settings: Settings) -> AsyncIterator[JobQueue]:
    """The job queue alone, for ``auren jobs`` (the event store opened first: its
    migrations make the table)."""
    store: EventStore
    if settings.postgres_url is not None:
        from auren.adapters.postgres import PostgresPool
        from auren.connections.postgres import PostgresJobs

        store = postgres_store(settings, application_name="auren-jobs")
        jobs: JobQueue = PostgresJobs(PostgresPool.from_settings(settings,
                                                                 application_name="auren-jobs"))
    else:
        from auren.connections.sqlite import SQLiteJobs

        store = SQLiteStore(settings.sqlite_path, timeout_s=settings.store_timeout_s)
        jobs = SQLiteJobs(settings.sqlite_path, settings.store_timeout_s)
    await store.open()
    try:
        await jobs.open()
        try:
            yield jobs
        finally:
            await jobs.close()
    finally:
        await store.close()
