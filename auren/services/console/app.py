"""The console's routes on the gateway's FastAPI app (``install``) and its lifecycle.

Public: the page (``/``), its assets (``/console/static/*``, shipped in the package: no CDN),
the service worker (``/sw.js``) and the login. Everything else needs a session: the JSON
(``/console/api/*``), the server-sent events (``/console/api/stream``: the ``now`` document
and the newest traffic point every round; ``/console/api/validate/stream``: a validation's
lines and phases) and the validation reports. Starting a validation and chatting need the
operator role and the CSRF token. The page's policy allows scripts, styles, images,
connections and the worker from this origin only, no inline script or style, and no framing;
a report opens under a sandbox that runs no script at all.
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from auren.errors import (
    AurenError,
    InvalidPayload,
    MalformedPayload,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from auren.events import is_identifier, iso
from auren.services.connections import PEER_EXTENSION
from auren.services.console.auth import (
    COOKIE,
    CSRF_HEADER,
    Authenticator,
    Session,
    check_same_origin,
)
from auren.services.console.live import Live, Upstream
from auren.services.console.runner import ValidateRunner, validate_command
from auren.services.forwarding import TrustedProxies
from auren.services.kernel.problem import problem_responses
from auren.services.kernel.responses import json_response
from auren.settings import Settings, secret_values

STATIC = Path(__file__).resolve().parent / "static"
mimetypes.add_type("application/manifest+json", ".webmanifest")
mimetypes.add_type("text/javascript", ".js")

# Scripts, styles, images, fetches and the worker from this origin only: no inline script or
# style, nothing from another site, no plugin, no framing, forms only to this origin.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
# A report is self-contained HTML with its own inline style and charts as data URIs: it opens
# sandboxed, with no script, no fetch and no framing.
REPORT_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
              "frame-ancestors 'none'")
_REPORT_DIR = re.compile(r"\d{8}T\d{6}Z")
MAX_STREAMS = 64
MAX_JSON_BYTES = 64 * 1024
RECENT_EVENTS = 50
_EVENT_PAGES = 5
_UPSTREAM_TIMEOUT_S = 10.0
_REPORTS_LISTED = 100
_STREAM_WAIT_S = 15.0


class _Static(StaticFiles):
    """The package's assets; revalidated on every use (the service worker keeps them offline)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


@dataclass
class Console:
    """What the routes share: settings, the login checks, the live view, the runner."""

    settings: Settings
    auth: Authenticator
    live: Live
    runner: ValidateRunner
    clients: dict[str, httpx.AsyncClient]
    trusted: TrustedProxies
    streams: int = 0

    async def start(self) -> None:
        self.live.start()

    async def close(self) -> None:
        await self.runner.close()
        await self.live.close()

    def _service_headers(self) -> dict[str, str]:
        keys = secret_values(self.settings.auren_api_keys)
        return {"authorization": f"Bearer {keys[0]}"} if keys else {}

    def secure_transport(self, scope: Scope) -> bool:
        """Whether the browser reached us over TLS (directly, or through a trusted proxy)."""
        if scope.get("scheme") == "https":
            return True
        entry = scope.get("extensions", {}).get(PEER_EXTENSION)
        peer = entry.get("address") if isinstance(entry, dict) else scope.get("client")
        if not peer or peer[0] not in self.trusted:
            return False
        proto = [v for k, v in scope["headers"] if k == b"x-forwarded-proto"]
        return bool(proto) and proto[-1].split(b",")[-1].strip().lower() == b"https"


def install(app: FastAPI, settings: Settings, upstreams: list[Upstream],
            clients: dict[str, httpx.AsyncClient], env: dict[str, str]) -> Console:
    """Add the console's routes to ``app``; the caller starts and closes the returned
    :class:`Console` in its lifespan. ``env`` is the environment a validation run gets."""
    urls = {"AUREN_NEUROS_URL": settings.auren_neuros_url,
            "AUREN_BRIDGE_URL": settings.auren_bridge_url,
            "AUREN_LEGACY_URL": settings.auren_legacy_url,
            "AUREN_GATEWAY_URL": settings.auren_gateway_url,
            # rich wraps at 80 columns when not on a terminal: keep phase lines whole.
            "COLUMNS": "160"}
    console = Console(
        settings, Authenticator(settings),
        Live(upstreams, clients, poll_s=settings.gateway_console_poll_s,
             sink_url=settings.auren_sink_url),
        ValidateRunner(validate_command(settings.auren_reports_dir, settings.auren_data_dir),
                       {**env, **urls}, settings.gateway_validate_timeout_s),
        clients, TrustedProxies(settings.trusted_proxies))
    app.state.console = console
    app.include_router(_router(console))
    app.mount("/console/static", _Static(directory=STATIC), name="console-static")
    return console


def _client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise MalformedPayload("send JSON (Content-Type: application/json)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"body exceeds {MAX_JSON_BYTES} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedPayload("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedPayload("body must be a JSON object")
    return value


def _text(body: dict[str, Any], name: str, *, limit: int, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidPayload(f"{name} must be a string of 1 to {limit} characters")
    return value


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _session(request: Request) -> Session:
    """The signed-in session (401 without one)."""
    return _console(request).auth.read(request.cookies.get(COOKIE))


def _acting(request: Request) -> Session:
    """A session that may change something: same origin, and its CSRF token."""
    console = _console(request)
    current = console.auth.read(request.cookies.get(COOKIE))
    check_same_origin(request.headers.get("origin"), request.headers.get("sec-fetch-site"),
                      request.headers.get("host"))
    console.auth.check_csrf(current, request.headers.get(CSRF_HEADER))
    return current


Viewer = Annotated[Session, Depends(_session)]
Actor = Annotated[Session, Depends(_acting)]


def _router(console: Console) -> APIRouter:
    router = APIRouter(tags=["console"])
    auth = console.auth
    session = _session

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        """The console (a single page; it signs in and loads its data itself)."""
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers=PAGE_HEADERS)

    @router.get("/sw.js", include_in_schema=False)
    async def service_worker() -> Response:
        """The service worker, at the root so that it may serve the page offline."""
        return FileResponse(STATIC / "sw.js", media_type="text/javascript",
                            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/",
                                     "Content-Security-Policy": PAGE_CSP})

    # --- session ----------------------------------------------------------------------------

    @router.post("/console/api/login", responses=problem_responses(400, 401, 403, 413, 422, 429))
    async def login(request: Request) -> Response:
        """Sign in with ``{"user", "password"}`` or ``{"key"}`` (a service key)."""
        check_same_origin(request.headers.get("origin"),
                          request.headers.get("sec-fetch-site"), request.headers.get("host"))
        body = await _json_body(request)
        key = _text(body, "key", limit=512, required=False)
        user = None if key else _text(body, "user", limit=64)
        password = None if key else _text(body, "password", limit=1024)
        current = await auth.login(_client_of(request), user=user, password=password, key=key)
        response = json_response(current.as_dict())
        response.set_cookie(COOKIE, auth.token(current), max_age=auth.lifetime_s, path="/",
                            httponly=True, samesite="strict",
                            secure=auth.secure_cookie(console.secure_transport(request.scope)))
        return response

    @router.get("/console/api/session")
    async def whoami(request: Request) -> Response:
        """The signed-in user, role and CSRF token; else ``signed_in: false`` and whether
        anyone can sign in at all (200 either way: the page asks before it knows)."""
        try:
            current = session(request)
        except AurenError as exc:
            return json_response({"signed_in": False, "detail": exc.detail,
                                  "configured": auth.configured})
        return json_response({"signed_in": True, **current.as_dict()})

    @router.post("/console/api/logout", responses=problem_responses(401, 403))
    async def logout(request: Request, current: Actor) -> Response:
        auth.revoke(current)
        response = json_response({"signed_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=auth.secure_cookie(console.secure_transport(request.scope)))
        return response

    # --- now and traffic ----------------------------------------------------------------------

    @router.get("/console/api/now", responses=problem_responses(401))
    async def now(current: Viewer) -> Response:
        """Services, dependencies, breakers, admission, spool, lag and dead fetch jobs."""
        return json_response(console.live.now)

    @router.get("/console/api/traffic", responses=problem_responses(401))
    async def traffic(current: Viewer) -> Response:
        """The last hour: webhooks/s by bridge, provider and outcome; latency percentiles of
        both bridges and NEUROS; NEUROS's chats/s."""
        return json_response(console.live.traffic())

    @router.get("/console/api/stream", responses=problem_responses(401, 503))
    async def stream(request: Request, current: Viewer) -> Response:
        """Server-sent events: ``snapshot`` (now, and the newest traffic point) each round,
        until the session expires or the page goes."""
        if console.streams >= MAX_STREAMS:
            raise Overloaded("too many console streams open", retry_after_s=5)
        live = console.live

        async def events() -> Any:
            console.streams += 1
            try:
                with live.watching():
                    seen = -1
                    while time.time() < current.expires:
                        seq = await live.next_round(seen, _STREAM_WAIT_S)
                        if seq == seen:
                            yield b": idle\n\n"
                            continue
                        seen = seq
                        point = live.points[-1] if live.points else None
                        yield _sse("snapshot", {"now": live.now, "point": point})
                    yield _sse("expired", {"detail": "the session has expired"})
            finally:
                console.streams -= 1

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers=_SSE_HEADERS)

    # --- people and sources ---------------------------------------------------------------------

    @router.get("/console/api/people", responses=problem_responses(401))
    async def people(current: Viewer) -> Response:
        """The connection and fetch figures the bridge exports (empty: no connections yet)."""
        return json_response({"figures": console.live.people()})

    @router.get("/console/api/people/{user_id}", responses=problem_responses(400, 401, 422))
    async def person(current: Viewer,
                     user_id: Annotated[str, PathParam(min_length=1, max_length=256)]
                     ) -> Response:
        """One person: their connections, their coverage over 30 days and recent events, as
        the bridge answers them (``available: false`` where it has no such route yet)."""
        if not is_identifier(user_id):
            raise InvalidPayload("a user id is 1 to 256 printable characters without leading "
                                 "or trailing spaces")
        client = console.clients["bridge"]
        base = f"/api/v1/users/{quote(user_id, safe='')}"
        headers = console._service_headers()
        connections, coverage, events = await asyncio.gather(
            _bridge_json(client, f"{base}/connections", headers),
            _bridge_json(client, f"{base}/coverage?days=30", headers),
            _recent_events(client, base, headers))
        return json_response({"user_id": user_id, "connections": connections,
                              "coverage": coverage, "events": events})

    # --- validation -------------------------------------------------------------------------------

    @router.get("/console/api/reports", responses=problem_responses(401))
    async def reports(current: Viewer) -> Response:
        """The validation reports under the reports directory, newest first, with verdicts."""
        return json_response({"directory": str(console.settings.auren_reports_dir),
                              "reports": await asyncio.to_thread(
                                  list_reports, console.settings.auren_reports_dir)})

    @router.get("/console/reports/{name}/report.html", include_in_schema=False)
    async def report(current: Viewer, name: str) -> Response:
        if not _REPORT_DIR.fullmatch(name):
            raise NotFound("no such report")
        path = console.settings.auren_reports_dir / name / "report.html"
        if not path.is_file():
            raise NotFound("no such report")
        return FileResponse(path, media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": REPORT_CSP,
                                     "X-Frame-Options": "DENY",
                                     "Referrer-Policy": "no-referrer",
                                     "Cache-Control": "no-store"})

    @router.get("/console/api/validate", responses=problem_responses(401))
    async def validation(current: Viewer) -> Response:
        return json_response(console.runner.as_dict())

    @router.post("/console/api/validate", status_code=202,
                 responses=problem_responses(401, 403, 409))
    async def start_validation(current: Actor) -> Response:
        """Start ``auren validate --quick`` against this deployment (operator; one at a time:
        409 while one runs)."""
        auth.check_operator(current)
        console.runner.start(current.user)
        return json_response(console.runner.as_dict(), 202)

    @router.get("/console/api/validate/stream", responses=problem_responses(401))
    async def validation_stream(current: Viewer) -> Response:
        """Server-sent events: ``progress`` (new lines, the phases) until the run ends."""
        runner = console.runner

        async def events() -> Any:
            seen = -1
            while time.time() < current.expires:
                state = runner.as_dict(after=seen)
                seen = state["seq"]
                yield _sse("progress", state)
                if not runner.running:
                    yield _sse("end", state)
                    return
                await runner.wait_change(seen, _STREAM_WAIT_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers=_SSE_HEADERS)

    # --- chat -------------------------------------------------------------------------------------

    @router.post("/console/api/chat",
                 responses=problem_responses(400, 401, 403, 413, 422, 429, 502))
    async def chat(request: Request, current: Actor) -> Response:
        """Ask NEUROS as ``user_id`` (operator): its reply and evidence, or its problem."""
        auth.check_operator(current)
        body = await _json_body(request)
        user_id = _text(body, "user_id", limit=256)
        if not is_identifier(user_id or ""):
            raise InvalidPayload("a user id is 1 to 256 printable characters without leading "
                                 "or trailing spaces")
        message = _text(body, "message", limit=console.settings.neuros_max_message_chars)
        question: dict[str, Any] = {"user_id": user_id, "message": message}
        conversation = _text(body, "conversation_id", limit=64, required=False)
        if conversation is not None:
            question["conversation_id"] = conversation
        try:
            answer = await console.clients["neuros"].post(
                "/chat", json=question, headers=console._service_headers(),
                timeout=_UPSTREAM_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise _Unreachable(f"NEUROS is unreachable ({type(exc).__name__})") from None
        if answer.status_code >= 500:
            raise _Unreachable(f"NEUROS answered {answer.status_code}")
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type", "application/json"))

    return router


class _Unreachable(AurenError):
    status = 502
    title = "Bad Gateway"
    slug = "upstream-unreachable"
    retriable = True


async def _bridge_json(client: httpx.AsyncClient, path: str,
                       headers: dict[str, str]) -> dict[str, Any]:
    """A read route of the bridge: ``{"available": true, "body": ...}``, or ``available:
    false`` with why (a route it does not have yet answers 404)."""
    try:
        response = await client.get(path, headers=headers, timeout=_UPSTREAM_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return {"available": False, "status": None,
                "detail": f"the bridge is unreachable ({type(exc).__name__})"}
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        return {"available": False, "status": response.status_code,
                "detail": detail or f"the bridge answered {response.status_code}"}
    return {"available": True, "status": 200, "body": body}


async def _recent_events(client: httpx.AsyncClient, base: str,
                         headers: dict[str, str]) -> dict[str, Any]:
    """The newest events (by start): the read API pages oldest first, so the newest are looked
    for in the last week, then the last 90 days, two years, all time, until a window has any;
    at most ``_EVENT_PAGES`` pages of that window are read (``more``: there were more)."""
    for days in (7, 90, 730, None):
        since = ("" if days is None else
                 f"since={quote(iso(datetime.now(UTC) - timedelta(days=days)))}&")
        newest: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        cursor: str | None = None
        count = 0
        for _ in range(_EVENT_PAGES):
            query = f"?{since}limit=1000" + (f"&cursor={quote(cursor)}" if cursor else "")
            page = await _bridge_json(client, f"{base}/events{query}", headers)
            if not page["available"]:
                return page
            body = page["body"] if isinstance(page["body"], dict) else {}
            events = body.get("events", [])
            count += len(events)
            newest.extend(events)
            cursor = body.get("next")
            if not cursor:
                break
        if count or days is None:
            return {"available": True, "count": count, "more": bool(cursor),
                    "window_days": days, "events": list(reversed(newest))}
    raise AssertionError("unreachable")  # pragma: no cover - the last window returns


def list_reports(directory: Path) -> list[dict[str, Any]]:
    """Report directories (``<UTC>/report.json``), newest first, with what each concluded."""
    try:
        names = sorted((p.name for p in directory.iterdir()
                        if _REPORT_DIR.fullmatch(p.name)), reverse=True)
    except OSError:
        return []
    out = []
    for name in names[:_REPORTS_LISTED]:
        path = directory / name / "report.json"
        try:
            summary = _report_summary(str(path), path.stat().st_mtime_ns)
        except OSError:
            continue
        if summary is not None:
            out.append({"name": name, **summary,
                        "html": (directory / name / "report.html").is_file()})
    return out


@functools.lru_cache(maxsize=256)
def _report_summary(path: str, mtime_ns: int) -> dict[str, Any] | None:
    """What a report concluded (read once per version of the file: reports are large)."""
    try:
        with open(path, "rb") as handle:
            run = orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(run, dict):
        return None
    comparison = run.get("comparison") or {}
    return {"generated_at": run.get("generated_at"), "verdict": run.get("verdict"),
            "verdict_note": run.get("verdict_note"), "quick": run.get("quick"),
            "target": run.get("target"),
            "throughput_ratio": (comparison.get("ratios") or {}).get("throughput")}
