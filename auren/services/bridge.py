"""Enhanced Biometric Bridge v2 (port 8889): the ASGI app, thin over ``auren.ingest``.

``create_app(settings)`` wires adapters chosen once from settings; the lifespan opens the
store, starts the group committer and, on shutdown, stops taking webhooks, drains what was
admitted (bounded by ``SHUTDOWN_TIMEOUT_S``) and closes the store.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from auren import __version__
from auren.adapters.base import EventQuery, EventStore
from auren.adapters.memory import MemoryCache
from auren.adapters.sqlite import SQLiteStore
from auren.errors import (
    AurenError,
    InvalidPayload,
    MalformedPayload,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from auren.events import METRICS, iso, parse_time
from auren.ingest.admission import Admission
from auren.ingest.committer import GroupCommitter
from auren.ingest.pipeline import IngestPipeline
from auren.observability import BridgeMetrics
from auren.providers import PROVIDER_CLASSES, build_providers
from auren.providers.base import WebhookRequest
from auren.services.auth import ReadAuth
from auren.services.problem import install_problem_handlers, problem_responses
from auren.settings import Settings

log = logging.getLogger("auren.bridge")

HEALTH = "application/health+json"
_OTHER_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(slots=True)
class BridgeState:
    settings: Settings
    store: EventStore
    pipeline: IngestPipeline
    admission: Admission
    committer: GroupCommitter
    metrics: BridgeMetrics
    auth: ReadAuth
    started: float


def build_store(settings: Settings) -> EventStore:
    # The full-stack PostgreSQL/Kafka adapters plug in here; embedded is the default.
    return SQLiteStore(settings.sqlite_path, timeout_s=settings.store_timeout_s)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, capped while it streams: a 1 GiB upload costs us ``limit`` bytes, not 1 GiB."""
    if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        raise UnsupportedMediaType("compressed bodies are not accepted")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedPayload("invalid Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    if body is None:
        return Response(status_code=status)
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)


def _encode_cursor(start: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([iso(start), event_id])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        start, event_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return parse_time(start), str(event_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise MalformedPayload("invalid cursor") from None


def _time_param(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise MalformedPayload(f"{name} must be an RFC 3339 timestamp with an offset") from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = BridgeMetrics()
    store = build_store(settings)
    admission = Admission(settings.max_concurrent_webhooks, settings.max_queued_webhooks,
                          settings.admission_wait_s)
    committer = GroupCommitter(store, max_batch=settings.batch_max_deliveries,
                               on_batch=metrics.observe_batch)
    pipeline = IngestPipeline(build_providers(settings), MemoryCache(settings.dedup_cache_size),
                              admission, committer, metrics)
    state = BridgeState(settings, store, pipeline, admission, committer, metrics,
                        ReadAuth.from_settings(settings), time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        committer.start()
        log.info("bridge started", extra={"mode": "embedded" if settings.embedded else "full"})
        try:
            yield
        finally:
            await committer.close(settings.shutdown_timeout_s)
            await store.close()
            log.info("bridge stopped")

    app = FastAPI(
        title="AUREN Enhanced Biometric Bridge",
        version=__version__,
        description="Verified, deduplicated, durable ingestion of wearable webhooks.",
        lifespan=lifespan,
    )
    app.state.bridge = state
    install_problem_handlers(app)

    webhook_responses = {
        200: {"description": "Re-delivery: already stored, nothing new"},
        202: {"description": "Accepted and durable"},
        204: {"description": "Accepted (Fitbit expects an empty 204)"},
        **problem_responses(400, 401, 404, 405, 413, 415, 422, 503),
    }
    request_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
    }}}

    async def handle_webhook(provider: str, request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            if request.method == "POST":
                body = await read_body(request, settings.max_webhook_bytes)
            else:
                body = b""
            webhook = WebhookRequest(
                method=request.method,
                headers=request.headers,  # Starlette's Headers: case-insensitive lookups
                query=request.query_params,
                body=body,
                client_ip=request.client.host if request.client else None,
            )
            outcome = await pipeline.handle(provider, webhook)
            status = outcome.status
            if request.method == "HEAD":
                return Response(status_code=outcome.status)
            return _json(outcome.body, outcome.status)
        except AurenError as exc:
            status = exc.status
            raise
        finally:
            label = provider if provider in PROVIDER_CLASSES else "unknown"
            metrics.requests.labels(label, str(status)).inc()
            metrics.latency.labels(label).observe(time.perf_counter() - started)

    for path in ("/webhooks/{provider}", "/api/v1/webhooks/{provider}"):
        app.add_api_route(path, handle_webhook, methods=["POST"], status_code=202,
                          responses=webhook_responses, openapi_extra=request_body,
                          summary="Receive a provider webhook", tags=["webhooks"],
                          name=f"webhook{'_v1' if path.startswith('/api') else ''}")
        # Handshakes (Oura challenge, Fitbit verify, Withings HEAD) and 405 for the rest.
        app.add_api_route(path, handle_webhook, methods=_OTHER_METHODS, include_in_schema=False,
                          name=f"webhook_other{'_v1' if path.startswith('/api') else ''}")

    @app.get("/api/v1/users/{user_id}/events", tags=["read"],
             responses=problem_responses(400, 401, 403, 422))
    async def list_events(
        request: Request,
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        metric: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        until: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        """A user's canonical events ordered by ``start``, paginated with an opaque cursor."""
        state.auth.authorize(request.headers.get("authorization"),
                             request.client.host if request.client else None, user_id)
        if metric is not None and metric not in METRICS:
            raise InvalidPayload(f"unknown metric {metric!r}")
        query = EventQuery(user_id=user_id, metric=metric, since=_time_param("since", since),
                           until=_time_param("until", until), limit=limit,
                           after=_decode_cursor(cursor) if cursor else None)
        events = await store.query_events(query)
        next_cursor = (_encode_cursor(events[-1].start, events[-1].event_id)
                       if len(events) == limit else None)
        return _json({"events": [e.as_dict() for e in events], "next": next_cursor})

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """``application/health+json``: pass, warn or fail, with a check per dependency."""
        checks: dict[str, list[dict[str, Any]]] = {}
        status = "pass"
        now = iso(datetime.now(UTC))
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
        utilization = admission.utilization
        admission_status = "warn" if utilization >= 0.9 or admission.waiting else "pass"
        if admission_status == "warn" and status == "pass":
            status = "warn"
        checks["admission:utilization"] = [{
            "componentType": "component", "observedValue": round(utilization * 100, 1),
            "observedUnit": "%", "status": admission_status, "time": now,
            "inFlight": admission.in_flight, "waiting": admission.waiting,
            "limit": admission.limit, "rejected": admission.rejected}]
        checks["uptime"] = [{"componentType": "system", "observedUnit": "s",
                             "observedValue": round(time.time() - state.started, 1),
                             "status": "pass", "time": now}]
        body = {"status": status, "version": __version__, "serviceId": "auren-bridge",
                "description": "AUREN Enhanced Biometric Bridge v2",
                "mode": "embedded" if settings.embedded else "full", "checks": checks}
        return _json(body, 503 if status == "fail" else 200, HEALTH)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        metrics.in_flight.set(admission.in_flight)
        metrics.queue_depth.set(admission.waiting + committer.queue_depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
