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
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from auren import __version__
from auren.adapters.base import EventStore, WriteResult
from auren.adapters.memory import MemoryCache
from auren.errors import AurenError, StoreUnavailable
from auren.events import iso
from auren.ingest.admission import Admission
from auren.ingest.committer import GroupCommitter
from auren.ingest.pipeline import IngestPipeline
from auren.observability import BridgeMetrics
from auren.providers import build_providers
from auren.providers.base import Delivery
from auren.services.bridge import (
    HEALTH,
    BridgeApp,
    WebhookEndpoint,
    _document_webhooks,
    build_store,
)
from auren.services.problem import install_problem_handlers
from auren.settings import Settings

log = logging.getLogger("auren.legacy")

# v1 had no admission control. The pipeline wants an Admission, so it gets one that never
# sheds: more slots than uvicorn will ever hold connections for, and no queue behind them.
_UNBOUNDED = 100_000


class DirectWriter(GroupCommitter):
    """v1's write path: each delivery is its own store transaction, written on arrival.

    It is a ``GroupCommitter`` only by interface (the pipeline's dependency); no batching
    task runs and nothing waits for other deliveries.
    """

    def __init__(self, store: EventStore) -> None:
        super().__init__(store, max_batch=1)
        self._open = False

    def start(self) -> None:
        self._open = True

    def enqueue(self, delivery: Delivery, on_settled: Callable[[], None] | None = None
                ) -> asyncio.Future[WriteResult]:
        if not self._open:
            raise StoreUnavailable("shutting down", retry_after_s=5)
        return asyncio.ensure_future(self._write(delivery, on_settled))

    async def _write(self, delivery: Delivery, on_settled: Callable[[], None] | None
                     ) -> WriteResult:
        try:
            (result,) = await self._store.write_batch([delivery])
        finally:
            if on_settled is not None:
                on_settled()
        return result

    async def close(self, timeout_s: float) -> None:
        self._open = False


def create_app(settings: Settings | None = None) -> BridgeApp:
    settings = settings or Settings()
    metrics = BridgeMetrics()
    store = build_store(settings)
    writer = DirectWriter(store)
    admission = Admission(_UNBOUNDED, 0, settings.admission_wait_s)
    pipeline = IngestPipeline(build_providers(settings), MemoryCache(settings.dedup_cache_size),
                              admission, writer, metrics)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        writer.start()
        log.info("legacy bridge started",
                 extra={"mode": "embedded" if settings.embedded else "full"})
        try:
            yield
        finally:
            # uvicorn has drained in-flight requests; each one committed its own write.
            await writer.close(settings.shutdown_timeout_s)
            await store.close()
            log.info("legacy bridge stopped")

    app = FastAPI(title="AUREN Original Bridge (v1)", version=__version__, lifespan=lifespan,
                  description="The per-request v1 webhook path, kept for legacy clients.")
    install_problem_handlers(app)
    _document_webhooks(app)  # the same raw webhook routes as v2

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """``application/health+json``: the store's round trip and the uptime."""
        now = iso(datetime.now(UTC))
        checks: dict[str, list[dict[str, Any]]] = {}
        status = "pass"
        try:
            facts = await store.ping()
            checks["store:responseTime"] = [{
                "componentId": facts.get("engine", "store"), "componentType": "datastore",
                "observedValue": round(facts["responseTime_ms"], 3), "observedUnit": "ms",
                "status": "pass", "time": now}]
        except AurenError as exc:
            status = "fail"
            checks["store:responseTime"] = [{"componentType": "datastore", "status": "fail",
                                             "output": exc.detail, "time": now}]
        checks["uptime"] = [{"componentType": "system", "observedUnit": "s",
                             "observedValue": round(time.time() - started, 1),
                             "status": "pass", "time": now}]
        body = {"status": status, "version": __version__, "serviceId": "auren-legacy-bridge",
                "description": "AUREN Original Bridge v1",
                "mode": "embedded" if settings.embedded else "full", "checks": checks}
        return Response(orjson.dumps(body), status_code=503 if status == "fail" else 200,
                        media_type=HEALTH)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return BridgeApp(app, WebhookEndpoint(pipeline, metrics, settings.max_webhook_bytes))
