"""Original Bridge v1 (port 8888): the per-request design, kept for legacy clients.

The same providers, verification, parsing and store as the Enhanced Bridge (nothing of the
pipeline is copied: the raw webhook endpoint, the ``IngestPipeline`` and the store adapters are
reused), but without v2's two levers: every request writes its own transaction directly (no
group commit) and there is no admission queue (no 503 shedding: under overload requests simply
wait for the store, which is what v1 did). Keeping it lets the validation toolkit measure what
the v2 design buys, side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from auren import __version__
from auren.adapters.base import DurableLog, WriteResult
from auren.erasure.ledger import LedgerFeed
from auren.errors import StoreUnavailable
from auren.events import Delivery
from auren.ingest.admission import Admission
from auren.ingest.pipeline import IngestPipeline
from auren.observability import BridgeMetrics
from auren.providers import build_providers
from auren.services.bridge import BridgeApp, WebhookEndpoint, document_webhooks
from auren.services.dataplane import build_dataplane
from auren.services.erasures import erasure_store, ledger_cipher, new_ledger
from auren.services.kernel.health import health_response, now_text
from auren.services.kernel.problem import install_problem_handlers
from auren.services.kernel.requests import RequestTracing
from auren.services.kernel.responses import metrics_response
from auren.settings import Settings

log = logging.getLogger("auren.legacy")

# v1 had no admission control. The pipeline wants an Admission, so it gets one that never
# sheds: more slots than uvicorn will ever hold connections for, and no queue behind them.
_UNBOUNDED = 100_000


class DirectWriter:
    """v1's write path, a ``Committer``: each delivery is its own store transaction, written on
    arrival. No batching task runs and nothing waits for other deliveries."""

    def __init__(self, store: DurableLog) -> None:
        self._store = store
        self._open = False
        self._writing = 0

    def start(self) -> None:
        self._open = True

    def enqueue(self, delivery: Delivery, on_settled: Callable[[], None] | None = None
                ) -> asyncio.Future[WriteResult]:
        if not self._open:
            raise StoreUnavailable("shutting down", retry_after_s=5)
        return asyncio.ensure_future(self._write(delivery, on_settled))

    @property
    def queue_depth(self) -> int:
        return self._writing

    async def _write(self, delivery: Delivery, on_settled: Callable[[], None] | None
                     ) -> WriteResult:
        self._writing += 1
        try:
            (result,) = await self._store.write_batch([delivery])
        finally:
            self._writing -= 1
            if on_settled is not None:
                on_settled()
        return result

    async def close(self, timeout_s: float) -> None:
        self._open = False


def create_app(settings: Settings | None = None) -> BridgeApp:
    settings = settings or Settings()
    metrics = BridgeMetrics()
    # The store is its own durable step: v1 had no bus, no Redis and no group commit.
    plane = build_dataplane(settings, service="legacy")
    for collector in plane.collectors():
        metrics.registry.register(collector)
    writer = DirectWriter(plane.durable)
    admission = Admission(_UNBOUNDED, 0, settings.admission_wait_s)
    providers = build_providers(settings)
    # Erased people are screened out here too (the erasure ledger, re-read every
    # ERASURE_POLL_S): a webhook for one is answered 2xx and not stored.
    erasures = erasure_store(settings, "auren-legacy-erasure")
    feed = LedgerFeed(erasures, new_ledger(ledger_cipher(settings)))
    pipeline = IngestPipeline(providers, plane.cache, admission, writer, metrics,
                              erasure_screen=feed.ledger.screen_delivery)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plane.open()
        plane.refresh_health()
        try:
            await erasures.open()
            await feed.refresh()
        except BaseException:
            await erasures.close()
            await plane.close(settings.shutdown_timeout_s)
            raise
        writer.start()
        stop = asyncio.Event()
        following = asyncio.create_task(feed.follow(stop, settings.erasure_poll_s))
        log.info("legacy bridge started", extra={"mode": plane.mode})
        try:
            yield
        finally:
            stop.set()
            await following
            # uvicorn has drained in-flight requests; each one committed its own write.
            await writer.close(settings.shutdown_timeout_s)
            await erasures.close()
            await plane.close(settings.shutdown_timeout_s)
            log.info("legacy bridge stopped")

    app = FastAPI(title="AUREN Original Bridge (v1)", version=__version__, lifespan=lifespan,
                  description="The per-request v1 webhook path, kept for legacy clients.")
    install_problem_handlers(app)
    document_webhooks(app, providers)  # the same raw webhook routes as v2

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """``application/health+json``: the store's round trip and the uptime."""
        now = now_text()
        status, checks = await plane.health(now)
        return health_response(status, checks, service_id="auren-legacy-bridge",
                               description="AUREN Original Bridge v1", started=started,
                               now=now, mode=plane.mode)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return metrics_response(metrics.registry)

    tracing = RequestTracing.from_settings(settings, "legacy")
    return BridgeApp(app, WebhookEndpoint(pipeline, metrics, settings.max_webhook_bytes,
                                          tracing), tracing)
