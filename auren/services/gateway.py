"""Gateway (port 9000): the proxy layer and the operations dashboard.

``/api/neuros/*`` goes to NEUROS, ``/api/bridge/*`` to the Enhanced Bridge and
``/api/legacy/*`` to the Original Bridge, with the prefix removed. Bodies stream both ways (the
request body with a size cap enforced while it streams), every upstream call has finite
connect/read timeouts, and an upstream that cannot be reached or does not answer in time becomes
a 502 or 504 ``application/problem+json`` naming the upstream, never a hang. ``/health``
aggregates the upstreams' own health documents; ``/`` is a small dashboard of the same.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)
from starlette.background import BackgroundTask
from starlette.responses import HTMLResponse, Response, StreamingResponse

from auren import __version__
from auren.errors import PayloadTooLarge
from auren.events import iso
from auren.services.kernel.health import health_response, now_text
from auren.services.kernel.problem import install_problem_handlers, problem_response
from auren.services.kernel.responses import metrics_response
from auren.settings import Settings

log = logging.getLogger("auren.gateway")

# Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's: never forwarded.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailer", "transfer-encoding", "upgrade", "host",
                         "content-length"})
_HEALTH_TIMEOUT_S = 3.0


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


async def _capped(request: Request, limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        yield chunk


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{prior}, {client}" if prior else client
    headers["x-forwarded-prefix"] = request.scope.get("root_path", "")
    return headers


async def probe(client: httpx.AsyncClient, upstream: Upstream,
                timeout_s: float = _HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """One upstream's ``/health``, summarised for the aggregate document and the dashboard."""
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # httpx logs every request at INFO: that is an access log, which every service keeps off.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    targets = upstreams(settings)
    metrics = GatewayMetrics()
    started = time.time()
    # Pooled keep-alive connections to each upstream; the read timeout bounds each wait for
    # bytes, so a stalled upstream ends in 504 and a slow but streaming one is not cut off.
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.gateway_timeout_s,
                              connect=settings.gateway_connect_timeout_s),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        follow_redirects=False, trust_env=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway started", extra={"detail": ", ".join(
            f"{u.name}={u.url}" for u in targets.values())})
        try:
            yield
        finally:
            await client.aclose()
            log.info("gateway stopped")

    app = FastAPI(title="AUREN Gateway", version=__version__, lifespan=lifespan,
                  description="Proxy to NEUROS and the bridges, and the operations dashboard.")
    install_problem_handlers(app)

    async def proxy(request: Request, name: str, path: str) -> Response:
        upstream = targets[name]
        # The query string is passed on byte for byte (signatures may cover it).
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = f"{upstream.url}/{path}" + (f"?{query}" if query else "")
        body = (_capped(request, settings.gateway_max_body_bytes)
                if request.method not in ("GET", "HEAD", "DELETE", "OPTIONS") else None)
        outgoing = client.build_request(request.method, url, headers=_forward_headers(request),
                                        content=body)
        began = time.perf_counter()
        try:
            upstream_response = await client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            metrics.requests.labels(name, "504").inc()
            return problem_response(504, "Gateway Timeout",
                                    f"{upstream.title} did not answer in time "
                                    f"({type(exc).__name__})",
                                    slug="upstream-timeout", instance=request.url.path,
                                    upstream=name)
        except httpx.HTTPError as exc:
            metrics.requests.labels(name, "502").inc()
            return problem_response(502, "Bad Gateway",
                                    f"{upstream.title} is unreachable ({type(exc).__name__})",
                                    slug="upstream-unreachable", instance=request.url.path,
                                    upstream=name)
        finally:
            metrics.latency.labels(name).observe(time.perf_counter() - began)
        status = upstream_response.status_code
        metrics.requests.labels(name, str(status)).inc()
        headers = {k: v for k, v in upstream_response.headers.items()
                   if k.lower() not in _HOP_BY_HOP}

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream_response.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                # Headers are already sent: all that is left is to end the response early.
                log.warning("upstream stream broke", extra={"detail": name})

        return StreamingResponse(stream(), status_code=status, headers=headers,
                                 background=BackgroundTask(upstream_response.aclose))

    for name in targets:
        async def route(request: Request, path: str, _name: str = name) -> Response:
            return await proxy(request, _name, path)

        app.add_api_route(f"/api/{name}/{{path:path}}", route,
                          methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                          name=f"proxy_{name}", include_in_schema=True, tags=["proxy"],
                          summary=f"Proxy to {targets[name].title}")

    async def aggregate() -> tuple[str, dict[str, list[dict[str, Any]]]]:
        timeout_s = min(_HEALTH_TIMEOUT_S, settings.gateway_timeout_s)
        results = await asyncio.gather(*(probe(client, u, timeout_s) for u in targets.values()))
        checks = {f"{r['componentId']}:responseTime": [r] for r in results}
        statuses = [r["status"] for r in results]
        # The gateway is useful while any upstream answers: degraded (warn) until all are gone.
        overall = ("pass" if all(s == "pass" for s in statuses)
                   else "fail" if all(s == "fail" for s in statuses) else "warn")
        return overall, checks

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """``application/health+json`` of the gateway and each upstream it proxies to."""
        overall, checks = await aggregate()
        return health_response(overall, checks, service_id="auren-gateway",
                               description="AUREN Gateway", started=started, now=now_text())

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return metrics_response(metrics.registry)

    @app.get("/", tags=["operations"], response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        """The operations dashboard: each service's health, refreshed every 10 s."""
        overall, checks = await aggregate()
        return HTMLResponse(render_dashboard(overall, [v[0] for v in checks.values()], targets))

    return app


_COLORS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}


def render_dashboard(overall: str, checks: list[dict[str, Any]],
                     targets: dict[str, Upstream]) -> str:
    """A self-contained page (no script, no external asset); every value is escaped."""
    rows = []
    for check in checks:
        status = check["status"]
        target = targets[check["componentId"]]
        uptime = check.get("uptime_s")
        rows.append(
            "<tr><td>{}</td><td><code>{}</code></td>"
            '<td style="color:{};font-weight:bold">{}</td><td>{} ms</td><td>{}</td>'
            "<td>{}</td></tr>".format(
                html.escape(target.title), html.escape(target.url),
                _COLORS.get(status, "#000"), html.escape(status.upper()),
                html.escape(str(check.get("observedValue", ""))),
                html.escape(f"{uptime:.0f} s" if isinstance(uptime, int | float) else "-"),
                html.escape(str(check.get("output", "")))))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>AUREN operations</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.4em .8em;text-align:left}}</style></head>
<body><h1>AUREN operations</h1>
<p>Overall: <strong style="color:{_COLORS.get(overall, '#000')}">{html.escape(overall.upper())}
</strong> &middot; {html.escape(iso(datetime.now(UTC)))}</p>
<table><thead><tr><th>service</th><th>upstream</th><th>status</th><th>response time</th>
<th>uptime</th><th>detail</th></tr></thead><tbody>
{''.join(rows)}
</tbody></table>
<p>Proxy routes: <code>/api/neuros/*</code>, <code>/api/bridge/*</code>,
<code>/api/legacy/*</code>. Machine-readable: <a href="/health">/health</a>,
<a href="/metrics">/metrics</a>.</p></body></html>
"""
