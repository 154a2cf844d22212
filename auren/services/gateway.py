"""Gateway (port 9000): the proxy layer and the operations console.

``/api/neuros/*`` goes to NEUROS, ``/api/bridge/*`` to the Enhanced Bridge and
``/api/legacy/*`` to the Original Bridge, with the prefix removed. The proxy is a raw ASGI
lane in front of the FastAPI app (which serves ``/health``, ``/metrics``, the operations
console of :mod:`auren.services.console` and the OpenAPI documents), so that what reaches an
upstream is decided by the request's path alone and passed on byte for byte:

- **The prefix alone chooses the upstream**, matched on the raw path; nothing in the query or
  the headers can name another one. The rest of the raw path and the query go on unchanged
  (percent-escapes included: signatures may cover them).
- **Headers are bytes**: passed as received, so a header value outside ASCII is the upstream's
  to judge, never an encoding error here. Hop-by-hop headers, and those the ``Connection``
  header names, are dropped both ways; ``date`` and ``server`` of the upstream are dropped too,
  so that a response carries the gateway's one of each.
- **X-Forwarded-For** is the chain received from a trusted proxy with the peer appended, or
  the peer alone (see :mod:`auren.services.forwarding`); other forwarding headers pass only from
  a trusted proxy. ``X-Forwarded-Prefix`` names the prefix that was removed.
- **Request bodies are read whole first** (capped at ``GATEWAY_MAX_BODY_BYTES`` while they
  stream: 413), and only then is an upstream connection taken: a slow client holds a
  connection to the gateway, bounded by the server's timeouts, never one to an upstream. The
  bodies held at once are bounded by ``GATEWAY_BUFFER_BYTES`` (503 beyond).
- **One connection pool per upstream**, each with its own limits and timeouts (connect, write,
  read, pool), so trouble behind one prefix never slows another. A response of known length up
  to ``RESPONSE_BUFFER_BYTES`` is read whole and the upstream connection released before the
  client is sent anything (a slow reader holds no upstream connection either); longer ones and
  streams (server-sent events) are streamed.
- Failures are ``application/problem+json`` naming the upstream: 502 unreachable (or connect
  timeout), 503 + ``Retry-After`` when its pool has no connection free in time, 504 when it
  does not answer in time. A client that goes away is logged at INFO, never as an error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import Message, Receive, Scope, Send

from auren import __version__
from auren.errors import AurenError, MalformedPayload, Overloaded, PayloadTooLarge
from auren.events import iso
from auren.services.connections import PEER_EXTENSION
from auren.services.console.app import Console
from auren.services.console.app import install as install_console
from auren.services.forwarding import (
    FORWARDING_HEADERS,
    Address,
    TrustedProxies,
    end_to_end,
    forwarded_chain,
)
from auren.services.kernel.health import health_response, now_text
from auren.services.kernel.problem import (
    PROBLEM,
    PROBLEM_SCHEMA,
    install_problem_handlers,
    problem_for,
    problem_response,
)
from auren.services.kernel.requests import RequestTracing
from auren.services.kernel.responses import metrics_response
from auren.settings import Settings

log = logging.getLogger("auren.gateway")

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A response of known length up to this is read whole before the client gets a byte.
RESPONSE_BUFFER_BYTES = 256 * 1024
_HEALTH_TIMEOUT_S = 3.0
# Never passed on to an upstream: the gateway sets its own (or httpx does: host, length), and
# the body is already read (expect).
_REQUEST_DROP = frozenset({b"host", b"content-length", b"expect"})
_REQUEST_DROP_UNTRUSTED = _REQUEST_DROP | FORWARDING_HEADERS
_RESPONSE_DROP = frozenset({b"date", b"server", b"content-length"})
_NOSNIFF = (b"x-content-type-options", b"nosniff")


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str  # the path segment: /api/{name}/...
    title: str
    url: str


def upstreams(settings: Settings) -> dict[str, Upstream]:
    return {u.name: u for u in (
        Upstream("neuros", "NEUROS", settings.auren_neuros_url.rstrip("/")),
        Upstream("bridge", "Enhanced Bridge v2", settings.auren_bridge_url.rstrip("/")),
        Upstream("legacy", "Original Bridge v1", settings.auren_legacy_url.rstrip("/")),
    )}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("auren_gateway_requests", "Proxied requests by upstream and status",
                                ["upstream", "status"], registry=self.registry)
        self.latency = Histogram("auren_gateway_latency_seconds",
                                 "Time to the upstream's response headers", ["upstream"],
                                 registry=self.registry)


class BodyBudget:
    """The bytes of request bodies the gateway holds at once, over all requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


def _pool(settings: Settings, upstream: Upstream) -> httpx.AsyncClient:
    """One upstream's own client: its pool, its timeouts. Pooled connections are dropped
    after half the keep-alive time the services use, before an upstream closes them first."""
    return httpx.AsyncClient(
        base_url=upstream.url,
        timeout=httpx.Timeout(connect=settings.gateway_connect_timeout_s,
                              read=settings.gateway_timeout_s,
                              write=settings.gateway_write_timeout_s,
                              pool=settings.gateway_pool_timeout_s),
        limits=httpx.Limits(max_connections=settings.gateway_pool_connections,
                            max_keepalive_connections=settings.gateway_pool_connections,
                            keepalive_expiry=settings.http_keepalive_timeout_s / 2),
        follow_redirects=False, trust_env=False)


def _ascii_url(raw: bytes) -> str:
    """A raw path and query as URL text: bytes outside printable ASCII percent-escaped (the
    server only lets ASCII paths through; a query may carry anything)."""
    if raw.isascii() and all(b > 0x20 and b != 0x7F for b in raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x20 < b < 0x7F else f"%{b:02X}" for b in raw)


def _peer(scope: Scope) -> Address | None:
    """The TCP peer the connection guard recorded (the client when served otherwise)."""
    entry = scope.get("extensions", {}).get(PEER_EXTENSION)
    if isinstance(entry, dict):
        address = entry.get("address")
        return address if isinstance(address, tuple) else None
    client = scope.get("client")
    return (str(client[0]), int(client[1])) if client else None


class Proxy:
    """The proxy lane: one upstream's pool per prefix."""

    def __init__(self, settings: Settings, targets: dict[str, Upstream],
                 metrics: GatewayMetrics) -> None:
        self._settings = settings
        self.targets = targets
        self.clients = {name: _pool(settings, upstream) for name, upstream in targets.items()}
        self._prefixes = {name.encode(): name for name in targets}
        self._metrics = metrics
        self._trusted = TrustedProxies(settings.trusted_proxies)
        self._budget = BodyBudget(settings.gateway_buffer_bytes)
        self._max_body = settings.gateway_max_body_bytes

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))

    def route(self, scope: Scope) -> tuple[str, bytes] | None:
        """The upstream and the rest of the raw path for ``/api/{upstream}/...``, else None."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
        if not raw.startswith(b"/api/"):
            return None
        segment, slash, rest = raw[5:].partition(b"/")
        name = self._prefixes.get(segment)
        return (name, b"/" + rest) if name is not None and slash else None

    async def __call__(self, name: str, path: bytes, scope: Scope, receive: Receive,
                       send: Send) -> None:
        instance: str = scope["path"]
        method: str = scope["method"]
        if method not in METHODS:
            await problem_response(405, "Method Not Allowed", f"allowed: {', '.join(METHODS)}",
                                   slug="method-not-allowed", instance=instance,
                                   headers={"Allow": ", ".join(METHODS)})(scope, receive, send)
            return
        held = 0
        try:
            body, held = await self._read_body(scope, receive)
            await self._forward(name, path, body, scope, receive, send)
        except ClientDisconnect:
            self._metrics.requests.labels(name, "499").inc()
            log.info("client went away", extra={"detail": name, "path": instance})
        except AurenError as exc:
            self._metrics.requests.labels(name, str(exc.status)).inc()
            await problem_for(exc, instance)(scope, receive, send)
        finally:
            self._budget.give(held)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, int]:
        """The whole request body (None when there is none) and the budget bytes it holds."""
        declared: bytes | None = None
        chunked = False
        for header, value in scope["headers"]:
            if header == b"content-length":
                declared = value
            elif header == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked:
            if not declared.isdigit():
                raise MalformedPayload("invalid Content-Length")
            if int(declared) > self._max_body:
                raise PayloadTooLarge(f"body exceeds {self._max_body} bytes")
        chunks: list[bytes] = []
        held = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect
                chunk: bytes = message.get("body", b"")
                if chunk:
                    if held + len(chunk) > self._max_body:
                        raise PayloadTooLarge(f"body exceeds {self._max_body} bytes")
                    if not self._budget.take(len(chunk)):
                        raise Overloaded("the gateway holds too many request bodies",
                                         retry_after_s=1)
                    held += len(chunk)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            self._budget.give(held)
            raise
        if declared is None and not chunked and not chunks:
            return None, 0
        return b"".join(chunks), held

    def _headers(self, name: str, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        peer = _peer(scope)
        trusted = peer is not None and peer[0] in self._trusted
        outgoing = end_to_end(headers, _REQUEST_DROP if trusted else _REQUEST_DROP_UNTRUSTED)
        outgoing = [(k, v) for k, v in outgoing if k not in (b"x-forwarded-for",
                                                             b"x-forwarded-prefix")]
        outgoing.append((b"x-forwarded-for",
                         forwarded_chain(peer, scope.get("client"), headers, self._trusted)))
        if not any(k == b"x-forwarded-proto" for k, _ in outgoing):
            outgoing.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        outgoing.append((b"x-forwarded-prefix", f"/api/{name}".encode()))
        return outgoing

    async def _forward(self, name: str, path: bytes, body: bytes | None, scope: Scope,
                       receive: Receive, send: Send) -> None:
        client = self.clients[name]
        query: bytes = scope.get("query_string", b"")
        method: str = scope["method"]
        try:
            url = client.base_url.copy_with(
                raw_path=_ascii_url(path + (b"?" + query if query else b"")).encode("ascii"))
            request = httpx.Request(method, url, headers=self._headers(name, scope),
                                    content=body,
                                    extensions={"timeout": client.timeout.as_dict()})
        except httpx.InvalidURL:
            raise MalformedPayload("the request's path cannot be forwarded") from None
        began = time.perf_counter()
        upstream: httpx.Response | None = None
        try:
            upstream = await client.send(request, stream=True)
            length = upstream.headers.get("content-length", "")
            whole = (method == "HEAD" or upstream.status_code in (204, 304)
                     or (length.isdigit() and int(length) <= RESPONSE_BUFFER_BYTES))
            payload = b"".join([chunk async for chunk in upstream.aiter_raw()]) if whole else None
        except httpx.LocalProtocolError:
            # h11 refuses to write what the request carried (a header byte it does not allow).
            raise MalformedPayload("the request's headers cannot be forwarded") from None
        except httpx.HTTPError as exc:
            if upstream is not None:
                await upstream.aclose()
            raise self._failure(name, exc) from None
        finally:
            self._metrics.latency.labels(name).observe(time.perf_counter() - began)
        status = upstream.status_code
        self._metrics.requests.labels(name, str(status)).inc()
        drop = _RESPONSE_DROP - {b"content-length"} if method == "HEAD" else _RESPONSE_DROP
        headers = end_to_end(upstream.headers.raw, drop)
        if payload is not None:
            await upstream.aclose()  # back to the pool before the client reads a byte
            if method != "HEAD" and status not in (204, 304):
                headers.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            # The status line is sent: all that is left is to end the response early (the
            # server closes the connection, so the client sees it is incomplete).
            log.warning("upstream stream broke", extra={"detail": name,
                                                        "error": type(exc).__name__})
        finally:
            await upstream.aclose()

    def _failure(self, name: str, exc: httpx.HTTPError) -> AurenError:
        title = self.targets[name].title
        kind = type(exc).__name__
        if isinstance(exc, httpx.PoolTimeout):
            return _UpstreamBusy(f"{title} has no free connection ({kind})", retry_after_s=1,
                                 upstream=name)
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return _UpstreamTimeout(f"{title} did not answer in time ({kind})", upstream=name)
        return _UpstreamUnreachable(f"{title} is unreachable ({kind})", upstream=name)


class _UpstreamUnreachable(AurenError):
    status = 502
    title = "Bad Gateway"
    slug = "upstream-unreachable"
    retriable = True


class _UpstreamTimeout(AurenError):
    status = 504
    title = "Gateway Timeout"
    slug = "upstream-timeout"
    retriable = True


class _UpstreamBusy(Overloaded):
    title = "Upstream Busy"
    slug = "upstream-busy"


class GatewayApp:
    """The gateway's ASGI entry: ``/api/{upstream}/...`` to the proxy lane, the rest (health,
    metrics, console, docs, lifespan) to FastAPI, whose own responses get ``nosniff``."""

    def __init__(self, api: FastAPI, proxy: Proxy, tracing: RequestTracing) -> None:
        self.api = api
        self.proxy = proxy
        self._tracing = tracing

    @property
    def router(self) -> Router:
        """FastAPI's router, so that ``app.router.lifespan_context(app)`` works."""
        return self.api.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request id is in the request's headers from here on, so the proxy forwards it.
        await self._tracing(self._route, scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        target = self.proxy.route(scope)
        if target is not None:
            await self.proxy(*target, scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            await send(message)

        await self.api(scope, receive, send_nosniff)


async def probe(client: httpx.AsyncClient, upstream: Upstream,
                timeout_s: float = _HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """One upstream's ``/health``, summarised for the aggregate document."""
    started = time.perf_counter()
    check: dict[str, Any] = {"componentId": upstream.name, "componentType": "component",
                             "time": iso(datetime.now(UTC)), "observedUnit": "ms",
                             "url": upstream.url}
    try:
        response = await client.get(upstream.url + "/health", timeout=timeout_s)
        body = response.json()
        status = str(body.get("status", "fail")) if isinstance(body, dict) else "fail"
        if status not in ("pass", "warn", "fail"):
            status = "fail"
        check["status"] = status
        uptime = (body.get("checks") or {}).get("uptime") if isinstance(body, dict) else None
        if isinstance(uptime, list) and uptime and isinstance(uptime[0], dict):
            check["uptime_s"] = uptime[0].get("observedValue")
    except (httpx.HTTPError, ValueError) as exc:
        check["status"] = "fail"
        check["output"] = f"unreachable: {type(exc).__name__}"
    check["observedValue"] = round((time.perf_counter() - started) * 1000, 1)
    return check


def _document_proxy(app: FastAPI, targets: dict[str, Upstream]) -> None:
    """Describe the raw proxy routes in OpenAPI, which only sees FastAPI's own routes."""
    problem = {PROBLEM: {"schema": PROBLEM_SCHEMA}}
    build = app.openapi

    def operation(name: str, method: str) -> dict[str, Any]:
        title = targets[name].title
        return {
            "tags": ["proxy"], "summary": f"Proxy to {title}",
            "operationId": f"proxy_{name}_{method}",
            "description": f"Passed to {title} with the prefix removed; its answer comes back "
                           "unchanged, apart from hop-by-hop headers.",
            "parameters": [{"name": "path", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {
                "default": {"description": f"{title}'s own answer"},
                "405": {"description": "Method not proxied", "content": problem,
                        "headers": {"Allow": {"required": True,
                                              "schema": {"type": "string"}}}},
                "413": {"description": "Body over GATEWAY_MAX_BODY_BYTES", "content": problem},
                "502": {"description": "Upstream unreachable", "content": problem},
                "503": {"description": "Upstream pool or body buffer full",
                        "content": problem,
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                "504": {"description": "Upstream did not answer in time", "content": problem},
            },
        }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for name in targets:
                schema["paths"][f"/api/{name}/{{path}}"] = {
                    method.lower(): operation(name, method.lower()) for method in METHODS}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or Settings()
    # httpx logs every request at INFO: that is an access log, which every service keeps off.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    targets = upstreams(settings)
    metrics = GatewayMetrics()
    proxy = Proxy(settings, targets, metrics)
    started = time.time()
    console: list[Console] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway started", extra={"detail": ", ".join(
            f"{u.name}={u.url}" for u in targets.values())})
        for part in console:
            await part.start()
        try:
            yield
        finally:
            for part in console:
                await part.close()
            await proxy.aclose()
            log.info("gateway stopped")

    app = FastAPI(title="AUREN Gateway", version=__version__, lifespan=lifespan,
                  description="Proxy to NEUROS and the bridges, and the operations console.")
    install_problem_handlers(app)
    _document_proxy(app, targets)

    async def aggregate() -> tuple[str, dict[str, list[dict[str, Any]]]]:
        timeout_s = min(_HEALTH_TIMEOUT_S, settings.gateway_timeout_s)
        results = await asyncio.gather(*(probe(proxy.clients[u.name], u, timeout_s)
                                         for u in targets.values()))
        checks = {f"{r['componentId']}:responseTime": [r] for r in results}
        statuses = [r["status"] for r in results]
        # The gateway is useful while any upstream answers: degraded (warn) until all are gone.
        overall = ("pass" if all(s == "pass" for s in statuses)
                   else "fail" if all(s == "fail" for s in statuses) else "warn")
        return overall, checks

    @app.get("/health", tags=["operations"], response_class=Response)
    async def health() -> Response:
        """``application/health+json`` of the gateway and each upstream it proxies to."""
        overall, checks = await aggregate()
        return health_response(overall, checks, service_id="auren-gateway",
                               description="AUREN Gateway", started=started, now=now_text())

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return metrics_response(metrics.registry)

    # The operations console (auren.services.console): the page at `/`, its JSON and events.
    # A validation it starts runs with this process's environment (the deployment's settings).
    console.append(install_console(app, settings, list(targets.values()), proxy.clients,
                                   dict(os.environ)))
    return GatewayApp(app, proxy, RequestTracing.from_settings(settings, "gateway"))
