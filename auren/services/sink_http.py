"""The sink's HTTP side: ``/metrics`` and ``/health`` while ``auren sink`` runs.

The services answer on their own ports; the sink is a consumer with no port of its own, so
Prometheus (consumer lag, batches, skipped records, the PostgreSQL breaker) and a container's
health check could not see it. With ``SINK_METRICS_PORT`` set, a small ASGI app is served on the
sink's own event loop: the sink keeps its own SIGTERM handling (finish the batch in hand), and
the server stops after the consumer has closed its batch. Unset, nothing listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from auren import __version__
from auren.adapters.breaker import BreakerCollector, CircuitBreaker
from auren.services.kernel.health import (
    PASS,
    Checks,
    breaker_check,
    health_response,
    now_text,
    worst,
)
from auren.services.kernel.problem import install_problem_handlers
from auren.services.kernel.responses import metrics_response
from auren.settings import Settings

if TYPE_CHECKING:
    from auren.services.sink import Sink

_STOP_TIMEOUT_S = 5.0


class SinkCollector(Collector):
    """The sink's progress for ``/metrics``, read from its stats at scrape time."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._sink.stats
        for name, help_text, value in (
                ("auren_sink_batches", "Batches committed to PostgreSQL", stats.batches),
                ("auren_sink_records", "Kafka records (deliveries) committed", stats.records),
                ("auren_sink_events", "Canonical events in the committed records", stats.events),
                ("auren_sink_jobs", "Fetch jobs in the committed records", stats.jobs),
                ("auren_sink_skipped", "Poison records skipped (undecodable or refused)",
                 stats.skipped),
                ("auren_sink_retries", "Failed PostgreSQL attempts of a batch", stats.retries)):
            yield CounterMetricFamily(name, help_text, value=value)
        lag = GaugeMetricFamily("auren_sink_consumer_lag",
                                "Records behind the high watermark on the sink's partitions "
                                "(librdkafka statistics, every 5 s)")
        if stats.lag is not None:  # unknown until the first statistics: declared, no sample
            lag.add_metric([], stats.lag)
        yield lag
        yield GaugeMetricFamily("auren_sink_last_batch_age_seconds",
                                "Seconds since the last committed batch (grows while idle)",
                                value=time.monotonic() - stats.last_batch_at)


def create_app(sink: Sink, breaker: CircuitBreaker | None) -> FastAPI:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SinkCollector(sink))
    registry.register(sink.retention)
    breakers = [breaker] if breaker is not None else []
    registry.register(BreakerCollector(breakers))
    started = time.time()
    app = FastAPI(title="AUREN sink", version=__version__, docs_url=None, redoc_url=None,
                  description="Progress and health of `auren sink`, Kafka into PostgreSQL.")
    install_problem_handlers(app)

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """``application/health+json``: warn while PostgreSQL's breaker is not closed (the
        batch in hand is being retried), pass otherwise."""
        now = now_text()
        checks: Checks = {}
        status = worst(PASS, *(breaker_check(checks, item, now) for item in breakers))
        checks["kafka:consumerLag"] = [{"componentType": "datastore", "status": PASS,
                                        "observedValue": sink.stats.lag,
                                        "observedUnit": "records", "time": now}]
        return health_response(status, checks, service_id="auren-sink",
                               description="AUREN sink (Kafka into PostgreSQL)",
                               started=started, now=now)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return metrics_response(registry)

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on a loop it does not own: the sink handles SIGTERM/SIGINT itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(sink: Sink, settings: Settings,
                  breaker: CircuitBreaker | None) -> AsyncIterator[int | None]:
    """Serve the sink's HTTP side for the body of the ``async with``; yields the bound port
    (None when ``SINK_METRICS_PORT`` is unset).

    Raises:
        OSError: the port cannot be bound (before the sink consumes anything).
    """
    async with serve_embedded(lambda: create_app(sink, breaker), settings.sink_metrics_host,
                              settings.sink_metrics_port) as port:
        yield port


@contextlib.asynccontextmanager
async def serve_embedded(app: Callable[[], FastAPI], host: str,
                         port: int | None) -> AsyncIterator[int | None]:
    """Serve ``app()`` on the running loop for the body of the ``async with`` (a consumer
    process's ``/metrics`` and ``/health``); yields the bound port, None when ``port`` is.

    Raises:
        OSError: the port cannot be bound.
    """
    if port is None:
        yield None
        return
    # Bound here, not by uvicorn: a port in use is an OSError the caller sees, not an exit.
    sock = socket.create_server((host, port), reuse_port=False)
    config = uvicorn.Config(app(), lifespan="off", log_config=None,
                            access_log=False, timeout_graceful_shutdown=int(_STOP_TIMEOUT_S))
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # uvicorn sets a flag, not an event, once it serves; it starts in milliseconds.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT_S)
        if not task.done():
            task.cancel()
        sock.close()
