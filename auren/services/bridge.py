"""Enhanced Biometric Bridge v2 (port 8889): the ASGI app, thin over ``auren.ingest``.

``create_app(settings)`` wires adapters chosen once from settings; the lifespan opens the
store, starts the group committer (and, embedded, the fetcher in this process unless
``FETCHER_IN_BRIDGE`` is false) and, on shutdown, stops taking webhooks, drains what was
admitted (bounded by ``SHUTDOWN_TIMEOUT_S``) and closes the store. The people, connections and
job routes are ``auren.services.accounts``'.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from auren import __version__
from auren.adapters.base import EventQuery
from auren.erasure.ledger import ScreenedLog
from auren.errors import (
    AurenError,
    InvalidPayload,
    MalformedPayload,
    NotFound,
)
from auren.events import METRICS, check_instant, is_identifier, iso, parse_time
from auren.ingest.admission import Admission
from auren.ingest.archive import PayloadSealer
from auren.ingest.committer import GroupCommitter
from auren.ingest.pipeline import IngestPipeline
from auren.observability import REQUEST_ID, BridgeMetrics
from auren.privacy import base as audit
from auren.providers import PROVIDER_CLASSES, ProviderClass, build_providers
from auren.providers.base import WebhookRequest
from auren.services import accounts, erasures, privacy
from auren.services.auditing import Auditor, audited, authorize
from auren.services.auth import ReadAuth
from auren.services.dataplane import DataPlane, build_dataplane, conversation_store
from auren.services.erasures import assemble_erasure, erased_as, new_ledger
from auren.services.export import ExportSources
from auren.services.fetcher import FetcherParts, assemble
from auren.services.kernel.body import check_declared, receive_capped
from auren.services.kernel.health import PASS, WARN, health_response, now_text, worst
from auren.services.kernel.problem import install_problem_handlers, problem_for, problem_responses
from auren.services.kernel.requests import RequestTracing
from auren.services.kernel.responses import json_response, metrics_response
from auren.services.retention import LOCK_FILE as RETENTION_LOCK
from auren.services.retention import Retention, runs_in_bridge
from auren.services.runtime import tune_runtime_for_serving
from auren.settings import Settings

log = logging.getLogger("auren.bridge")

WEBHOOK_PREFIXES = ("/webhooks/", "/api/v1/webhooks/")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class WebhookEndpoint:
    """The webhook route as a raw ASGI app: read with a cap, run the pipeline, answer.

    It gives the request its id and writes its access line itself (``RequestTracing``'s
    ``adopt`` and ``log``) rather than through the tracing wrapper, a coroutine and a ``send``
    wrapper per request. With the access lines gathered per loop turn, that took 8 % off a
    webhook's CPU (``bench/webhook_cpu.py``, eight alternating runs).
    """

    def __init__(self, pipeline: IngestPipeline, metrics: BridgeMetrics, max_bytes: int,
                 tracing: RequestTracing) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._tracing = tracing

    async def __call__(self, provider: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        tracing = self._tracing
        request_id = tracing.adopt(scope)
        token = REQUEST_ID.set(request_id)
        id_header = tracing.id_header(request_id)
        method: str = scope["method"]
        status = 500
        answered = 0  # the status of the answer started, for the access line
        try:
            # A plain dict of lower-cased names (ASGI already lower-cases them): providers only
            # look headers up, and Starlette's Headers scans a list on every lookup.
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = await self._read_body(headers, receive) if method == "POST" else b""
            client = scope.get("client")
            query_string = scope.get("query_string", b"")
            request = WebhookRequest(method=method, headers=headers,
                                     query=QueryParams(query_string) if query_string else {},
                                     body=body, client_ip=client[0] if client else None)
            outcome = await self._pipeline.handle(provider, request)
            status = outcome.status
            payload = b"" if outcome.body is None or method == "HEAD" else orjson.dumps(
                outcome.body)
            answered = status
            await send({"type": "http.response.start", "status": status,
                        "headers": [*(_JSON_HEADERS if payload else ()),
                                    (b"content-length", str(len(payload)).encode()),
                                    id_header]})
            await send({"type": "http.response.body", "body": payload})
        except ClientDisconnect:
            status = 499  # nginx's convention: the client went away; nothing to answer
        except AurenError as exc:
            status = answered = exc.status
            await self._problem(exc, scope, receive, send, id_header)
        except Exception as exc:
            log.exception("webhook handling crashed", extra={"provider": provider})
            answered = 500
            await self._problem(AurenError(str(exc)), scope, receive, send, id_header)
        finally:
            label = provider if provider in PROVIDER_CLASSES else "unknown"
            self._metrics.observe_request(label, status, time.perf_counter() - started)
            tracing.log(scope, answered, started)
            REQUEST_ID.reset(token)

    @staticmethod
    async def _problem(exc: AurenError, scope: Scope, receive: Receive, send: Send,
                       id_header: tuple[bytes, bytes]) -> None:
        response = problem_for(exc, scope["path"])
        response.raw_headers.append(id_header)
        await response(scope, receive, send)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The raw body, capped while it streams: a huge upload costs ``limit`` bytes at most."""
        check_declared(headers.get("content-encoding"), headers.get("content-length"),
                       self._max_bytes)
        return await receive_capped(receive, self._max_bytes)


def webhook_provider(path: str) -> str | None:
    """The provider segment of a webhook path, or None for every other path."""
    for prefix in WEBHOOK_PREFIXES:
        if path.startswith(prefix):
            name = path[len(prefix):]
            return name if name and "/" not in name else None
    return None


class BridgeApp:
    """The bridge's ASGI entry: webhooks go straight to their endpoint, the rest to FastAPI.

    The webhook is the hot path, and FastAPI's middleware stack and router cost about as much
    CPU per request as verifying, parsing and storing a delivery. ``GET /health`` goes
    straight to its handler too: a load balancer's check must not queue behind ingestion work
    any longer than it has to. Everything else (read API, metrics, docs, lifespan, and the
    health route's documentation and other methods) is an ordinary FastAPI app.
    """

    def __init__(self, api: FastAPI, webhooks: WebhookEndpoint, tracing: RequestTracing,
                 health: Callable[[], Awaitable[Response]] | None = None) -> None:
        self.api = api
        self._webhooks = webhooks
        self._tracing = tracing
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            provider = webhook_provider(scope["path"])
            if provider is not None:
                await self._webhooks(provider, scope, receive, send)  # traces itself
                return
        await self._tracing(self._route, scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self._health is not None
                and scope["path"] == "/health" and scope["method"] == "GET"):
            response = await self._health()
            await response(scope, receive, send)
            return
        await self.api(scope, receive, send)


_WEBHOOK_DESCRIPTION = (
    "Verified on the raw bytes with the provider's own scheme, deduplicated, made durable, "
    "then answered. Full-data pushes of many metrics (Health Auto Export, Terra, Garmin) store "
    "what is valid and list what they skipped, and why, in the answer's `skipped`; the native "
    "route refuses the delivery (422). 404 when the provider is not configured.")
_ACCEPTED = {"description": "Accepted and durable: `accepted`, `duplicates`, and when there "
                            "are any `ignored` (items without a metric), `skipped` "
                            "([{metric, reason, count, detail}]) and `withheld` (items of "
                            "people who withdrew consent: not stored)",
             "content": {"application/json": {"schema": {"type": "object"}}}}
_REDELIVERY = {"description": "Re-delivery (already stored, nothing new), or a handshake",
               "content": {"application/json": {"schema": {"type": "object"}}}}


_DIGITS = {"type": "string", "pattern": "^[0-9]{1,12}$"}
# Withings' notification form (unsigned): the user and category are required, the window and
# day optional; every instant must lie in the plausible range (422 otherwise).
_WITHINGS_FORM = {"type": "object", "required": ["userid", "appli"],
                  "properties": {"userid": _DIGITS, "appli": _DIGITS, "startdate": _DIGITS,
                                 "enddate": _DIGITS, "date": {"type": "string"},
                                 "action": {"type": "string"}}}


def _header(name: str, required: bool) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}


def _webhook_post(name: str, cls: ProviderClass) -> dict[str, Any]:
    """POST on one provider's URL: its media type, its signature headers, its answers."""
    media = "application/x-www-form-urlencoded" if name == "withings" else "application/json"
    body = _WITHINGS_FORM if name == "withings" else (
        {"type": "array"} if name == "fitbit" else {"type": "object"})
    parameters = [_header(header, True) for header in cls.signature_headers]
    if name == "apple":
        # Health Auto Export sends its key in either header; an unbound key names the user.
        parameters += [_header("api-key", False),
                       {"name": "user_id", "in": "query", "required": False,
                        "schema": {"type": "string"}}]
    elif name == "polar":
        # Polar's PING (sent when the webhook is created) may come unsigned.
        parameters.append(_header("polar-webhook-signature", False))
    success: dict[str, Any] = ({"204": {"description": "Accepted (Fitbit expects an empty 204)"}}
                               if name == "fitbit" else
                               {"200": _REDELIVERY} if name in ("withings", "polar") else
                               {"200": _REDELIVERY, "202": _ACCEPTED})
    if name == "polar":
        success["202"] = _ACCEPTED
    return {
        "summary": f"Receive a {name} webhook", "description": _WEBHOOK_DESCRIPTION,
        "parameters": parameters,
        "requestBody": {"required": True, "content": {media: {"schema": body}}},
        "responses": {**success, **{str(k): v for k, v in problem_responses(
            400, 401, 403, 404, 405, 413, 415, 422, 429, 503).items()}},
    }


def _webhook_handshake(name: str, cls: ProviderClass, method: str) -> dict[str, Any]:
    """GET/HEAD on one provider's URL: the subscription handshake it documents."""
    responses: dict[str, Any]
    if name == "fitbit":
        responses = {"204": {"description": "The verification code matches"},
                     "404": {"description": "Not this code (Fitbit sends a wrong one on "
                                            "purpose), or the provider is not configured"}}
    elif name == "oura":
        responses = {"200": {"description": "The challenge, echoed", "content": {
            "application/json": {"schema": {"type": "object", "required": ["challenge"],
                                            "properties": {"challenge": {"type": "string"}}}}}},
                     **{str(k): v for k, v in problem_responses(400, 401, 404).items()}}
    else:
        responses = {"200": {"description": "The subscription probe is answered"},
                     **{str(k): v for k, v in problem_responses(404).items()}}
    if method == "head":
        # A HEAD answer has no body: the statuses are the GET's, without content.
        responses = {status: {"description": r["description"]} for status, r in responses.items()}
    return {
        "summary": f"{name} subscription handshake",
        "description": "Answered before any signature check, as the provider's protocol asks.",
        "parameters": [{"name": param, "in": "query", "required": True,
                        "schema": {"type": "string"}} for param in cls.handshake_query],
        "responses": {**responses, "405": problem_responses(405)[405]},
    }


def document_webhooks(app: FastAPI, configured: Iterable[str]) -> None:
    """Describe the raw webhook routes in OpenAPI, which only sees FastAPI's own routes: one
    path per configured provider, since each answers its own methods, headers and media type.
    (An unconfigured provider's URL is not served: 404, or 405 for a method it never takes.)"""
    names = sorted(set(configured))
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for index, prefix in enumerate(WEBHOOK_PREFIXES):
                for name in names:
                    cls = PROVIDER_CLASSES[name]
                    operations: dict[str, Any] = {}
                    for method in cls.methods:
                        verb = method.lower()
                        operation = (_webhook_post(name, cls) if method == "POST"
                                     else _webhook_handshake(name, cls, verb))
                        operations[verb] = {"tags": ["webhooks"], **operation,
                                            "operationId": f"webhook_{name}_{verb}_{index}"}
                    schema["paths"][prefix + name] = operations
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class _ArchiveCollector(Collector):
    """Raw payloads not archived because even sealed they were too large."""

    def __init__(self, sealer: PayloadSealer) -> None:
        self._sealer = sealer

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("auren_raw_archive_too_large",
                                  "Verified deliveries whose raw payload was not archived: "
                                  "too large even sealed", value=self._sealer.too_large)


@dataclass(slots=True)
class BridgeState:
    settings: Settings
    plane: DataPlane
    pipeline: IngestPipeline
    admission: Admission
    committer: GroupCommitter
    metrics: BridgeMetrics
    auth: ReadAuth
    started: float
    parts: FetcherParts


def _encode_cursor(start: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([iso(start), event_id])).decode().rstrip("=")


def _decode_cursor(cursor: str, now: datetime) -> tuple[datetime, str]:
    """The position a cursor encodes; anything this bridge did not write is a 400."""
    try:
        start, event_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = check_instant(parse_time(start), now, "cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise MalformedPayload("invalid cursor") from None
    if not isinstance(event_id, str) or not is_identifier(event_id):
        raise MalformedPayload("invalid cursor")
    return moment, event_id


def _time_param(name: str, value: str | None, now: datetime) -> datetime | None:
    """``since``/``until``: malformed is 400, a well-formed instant outside the plausible
    range of every other instant AUREN accepts (``auren.events.check_instant``) is 422."""
    if value is None:
        return None
    try:
        moment = parse_time(value)
    except ValueError:
        raise MalformedPayload(f"{name} must be an RFC 3339 timestamp with an offset") from None
    try:
        return check_instant(moment, now, name)
    except ValueError as exc:
        raise InvalidPayload(str(exc)) from None


def create_app(settings: Settings | None = None) -> BridgeApp:
    settings = settings or Settings()
    metrics = BridgeMetrics()
    # Store, durable step (the store, or Kafka + spool) and cache, chosen once from settings.
    plane = build_dataplane(settings, service="bridge")
    for collector in plane.collectors():
        metrics.registry.register(collector)
    store = plane.store
    # The erasure ledger: from the moment a person's erasure began, nothing of them is stored
    # again by the webhooks (answered 2xx, counted) or by the fetcher in this process.
    assert plane.cipher is not None  # noqa: S101 - the bridge's plane holds the key
    ledger = new_ledger(plane.cipher)
    plane.durable = ScreenedLog(plane.durable, ledger)
    admission = Admission(settings.max_concurrent_webhooks, settings.max_queued_webhooks,
                          settings.admission_wait_s)
    committer = GroupCommitter(plane.durable, max_batch=settings.batch_max_deliveries,
                               on_batch=metrics.observe_batch)
    providers = build_providers(settings)
    # ARCHIVE_RAW_PAYLOADS: sealed with the token key, made durable with the delivery.
    sealer = (PayloadSealer(plane.cipher)
              if settings.archive_raw_payloads and plane.cipher is not None else None)
    # Retention runs here unless the sink writes the store (auren.services.retention).
    retention = (Retention(settings, plane.archive,
                           lock_path=settings.auren_data_dir / RETENTION_LOCK)
                 if runs_in_bridge(settings) and plane.archive is not None else None)
    if retention is not None:
        metrics.registry.register(retention)
    if sealer is not None:
        metrics.registry.register(_ArchiveCollector(sealer))
    # The connections' logic and the fetcher; the fetcher runs here only embedded (the full
    # stack runs `auren fetcher`), and its metrics are the bridge's then.
    parts = assemble(settings, plane, metrics.registry)
    pipeline = IngestPipeline(providers, plane.cache, admission, committer,
                              metrics, gate=plane.rate_gate if plane.rate_limited else None,
                              screen=parts.gate.screen, sealer=sealer,
                              erasure_screen=ledger.screen_delivery)
    erasure = assemble_erasure(settings, plane, parts.service, ledger)
    parts.service.erased = ledger.user_erased
    state = BridgeState(settings, plane, pipeline, admission, committer, metrics,
                        ReadAuth.from_settings(settings), time.time(), parts)
    in_process = settings.embedded and settings.fetcher_in_bridge

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_runtime_for_serving()
        await plane.open()
        plane.refresh_health()
        try:
            await erasure.open()
        except BaseException:
            await plane.close(settings.shutdown_timeout_s)
            raise
        await parts.gate.refresh()  # before the first webhook: withdrawals already made
        committer.start()
        stop = asyncio.Event()
        fetching = (asyncio.create_task(parts.fetcher.run(stop), name="fetcher")
                    if in_process else None)
        expiring = (asyncio.create_task(retention.run(stop), name="retention")
                    if retention is not None else None)
        consents = asyncio.create_task(parts.gate.run(stop), name="consents")
        # Erasures: resumes what a killed process left, keeps the ledger current.
        erasing = asyncio.create_task(erasure.eraser.serve(stop), name="erasures")
        log.info("bridge started", extra={"mode": plane.mode,
                                          "detail": "fetcher in process" if in_process
                                          else "no fetcher in process"})
        try:
            yield
        finally:
            stop.set()
            await consents
            if fetching is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching
            if expiring is not None:
                # A step in progress is one short transaction: it finishes, then the loop ends.
                with contextlib.suppress(asyncio.CancelledError):
                    await expiring
            # A step in hand is cut short: its erasure is resumed by the next process.
            erasing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await erasing
            await committer.close(settings.shutdown_timeout_s)
            await erasure.close()
            await parts.close()
            await plane.close(settings.shutdown_timeout_s)
            log.info("bridge stopped")

    app = FastAPI(
        title="AUREN Enhanced Biometric Bridge",
        version=__version__,
        description="Verified, deduplicated, durable ingestion of wearable webhooks.",
        lifespan=lifespan,
    )
    app.state.bridge = state
    install_problem_handlers(app)
    # Every route below declares its audit action; this route class writes the records.
    assert plane.audit is not None and plane.connections is not None  # noqa: S101 - bridge
    assert plane.consents is not None  # noqa: S101 - the bridge's plane has them
    app.router.route_class = Auditor(
        plane.audit, erased_as=erased_as(plane.cipher, ledger)).route_class()

    document_webhooks(app, providers)
    accounts.install(app, parts.service, state.auth)
    sources = ExportSources(store, plane.connections, plane.consents,
                            lambda: conversation_store(settings,
                                                       application_name="auren-bridge-export"))
    privacy.install(app, state.auth, sources, parts.gate, plane.audit)
    erasures.install(app, erasure, state.auth)

    @app.get("/api/v1/users/{user_id}/events", tags=["read"],
             responses=problem_responses(400, 401, 403, 404, 422),
             openapi_extra=audited(audit.READ))
    async def list_events(
        request: Request,
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        metric: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        until: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        """A user's canonical events ordered by ``start``, paginated with an opaque cursor
        (404 for a person erased, or being erased)."""
        authorize(state.auth, request, user_id)
        if not is_identifier(user_id):
            raise InvalidPayload("user_id must be 1 to 256 printable characters without leading "
                                 "or trailing spaces")
        if metric is not None and metric not in METRICS:
            raise InvalidPayload(f"unknown metric {metric!r}")
        now = datetime.now(UTC)
        query = EventQuery(user_id=user_id, metric=metric,
                           since=_time_param("since", since, now),
                           until=_time_param("until", until, now), limit=limit,
                           after=_decode_cursor(cursor, now) if cursor else None)
        if ledger.user_erased(user_id):
            # Being erased, or erased: never served again, even before the rows are gone.
            raise NotFound(f"no user {user_id[:64]!r}: erased")
        events = await store.query_events(query)
        next_cursor = (_encode_cursor(events[-1].start, events[-1].event_id)
                       if len(events) == limit else None)
        return json_response({"events": [e.as_dict() for e in events], "next": next_cursor})

    @app.get("/health", tags=["operations"], openapi_extra=audited(audit.NOT_AUDITED))
    async def health() -> Response:
        """``application/health+json``: pass, warn or fail, with a check per dependency."""
        now = now_text()
        # Store, and in full mode Kafka, spool, Redis and the circuit breakers.
        status, checks = await plane.health(now)
        utilization = admission.utilization
        admission_status = WARN if utilization >= 0.9 or admission.waiting else PASS
        status = worst(status, admission_status)
        checks["admission:utilization"] = [{
            "componentType": "component", "observedValue": round(utilization * 100, 1),
            "observedUnit": "%", "status": admission_status, "time": now,
            "inFlight": admission.in_flight, "waiting": admission.waiting,
            "limit": admission.limit, "rejected": admission.rejected}]
        return health_response(status, checks, service_id="auren-bridge",
                               description="AUREN Enhanced Biometric Bridge v2",
                               started=state.started, now=now, mode=plane.mode)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             openapi_extra=audited(audit.NOT_AUDITED))
    async def prometheus_metrics() -> Response:
        metrics.in_flight.set(admission.in_flight)
        metrics.queue_depth.set(admission.waiting + committer.queue_depth)
        return metrics_response(metrics.registry)

    tracing = RequestTracing.from_settings(settings, "bridge")
    return BridgeApp(app, WebhookEndpoint(pipeline, metrics, settings.max_webhook_bytes,
                                          tracing), tracing, health)
