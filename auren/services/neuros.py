"""NEUROS (port 8000): the chat API, thin over ``auren.neuros``.

``create_app(settings)`` takes its dependencies from the composition root
(``auren.services.dataplane``): the event store the bridge writes (so NEUROS sees what the
bridge stored), the conversation store (SQLite embedded; PostgreSQL in the full stack, shared by
every NEUROS process), Redis for the shared daily series and the optional LLM client. It adds
the per-user rate limit; the lifespan opens them and closes them again on shutdown.

Order of checks on a chat: body size (413, while it streams) → JSON shape (400/422) → auth for
the body's ``user_id`` exactly as the bridge's read API (401/403) → safety screen → message
length (413) → rate limit (429) → answer. Only authorised requests spend a user's rate budget;
an emergency is answered whatever its length or the user's rate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from auren import __version__
from auren.adapters.base import EventStore
from auren.erasure.ledger import LedgerFeed, ScreenedConversations
from auren.errors import (
    AurenError,
    InvalidPayload,
    MalformedPayload,
    PayloadTooLarge,
    StoreUnavailable,
)
from auren.events import iso
from auren.neuros import safety
from auren.neuros.chat import ChatResult, Neuros, parse_timezone, timezone_or_utc
from auren.neuros.memory import ConversationStore
from auren.neuros.metrics import NeurosMetrics
from auren.neuros.ratelimit import RateLimiter
from auren.neuros.summaries import SharedSeries
from auren.privacy.base import ERASE, NOT_AUDITED, READ
from auren.services.auditing import AUDIT_KEY, Auditor, audited, authorize, mark_audited
from auren.services.auth import ReadAuth
from auren.services.dataplane import build_dataplane
from auren.services.erasures import erased_as, erasure_store, ledger_cipher, new_ledger
from auren.services.kernel.body import check_declared, read_body, receive_capped
from auren.services.kernel.health import PASS, WARN, health_response, now_text, worst
from auren.services.kernel.problem import (
    install_problem_handlers,
    problem_for,
    problem_response,
    problem_responses,
)
from auren.services.kernel.requests import RequestTracing
from auren.services.kernel.responses import JSON, json_response, metrics_response
from auren.services.runtime import tune_runtime_for_serving
from auren.settings import Settings

log = logging.getLogger("auren.neuros")

_ID = r"^[A-Za-z0-9_-]{1,64}$"
# The same rule as _ID for the fast path; fullmatch, because "$" also matches before a final
# newline in Python (pydantic's engine does not).
_ID_FULL = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHAT_PATHS = ("/chat", "/api/v1/chat")
_JSON_HEADERS = (b"content-type", JSON.encode())
UserPath = Annotated[str, Path(min_length=1, max_length=256)]
ConversationPath = Annotated[str, Path(pattern=_ID)]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    message: str = Field(min_length=1, description="The person's question, plain text.")
    user_id: str = Field(min_length=1, max_length=256,
                         description="The only user whose data this request may read.")
    conversation_id: str | None = Field(default=None, pattern=_ID,
                                        description="Continue this conversation; omit to "
                                                    "start a new one.")
    timezone: str | None = Field(default=None, max_length=64,
                                 description="IANA name or offset (e.g. +02:00) of the "
                                             "person's days; UTC when omitted.")


class EvidenceWindow(BaseModel):
    start: str
    end: str
    days: int


class EvidenceItem(BaseModel):
    metric: str
    statistic: str
    window: EvidenceWindow
    value: float | None
    unit: str
    n_days: int
    baseline: float | None = None
    low: float | None = None
    high: float | None = None
    delta: float | None = None
    threshold: float | None = None
    min_days: int | None = None
    status: str | None = None


class ChatResponse(BaseModel):
    reply: str
    conversation_id: str
    evidence: list[EvidenceItem]
    model: str
    intent: str


@dataclass(slots=True)
class NeurosState:
    settings: Settings
    events: EventStore
    conversations: ConversationStore
    neuros: Neuros
    metrics: NeurosMetrics
    limiter: RateLimiter
    auth: ReadAuth
    started: float


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(slots=True)
class ChatInput:
    """A validated chat body (what ``ChatRequest`` accepts, without building the model)."""

    message: str
    user_id: str
    conversation_id: str | None
    timezone: str | None


def parse_chat_body(body: bytes) -> ChatInput:
    """The chat body, or the problem ``ChatRequest`` validation reports (400/422).

    Well-formed bodies, nearly all of them, are checked here by hand: ``model_validate`` was a
    tenth of a chat's CPU. Anything the hand check does not accept goes through
    ``ChatRequest`` itself, so every error is exactly the documented model's.
    """
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedPayload("body must be a JSON object") from None
    if not isinstance(raw, dict):
        raise MalformedPayload("body must be a JSON object")
    message, user_id = raw.get("message"), raw.get("user_id")
    conversation_id, tz = raw.get("conversation_id"), raw.get("timezone")
    if (type(message) is str and message and type(user_id) is str and 0 < len(user_id) <= 256
            and (conversation_id is None
                 or (type(conversation_id) is str and _ID_FULL.fullmatch(conversation_id)))
            and (tz is None or (type(tz) is str and len(tz) <= 64))):
        return ChatInput(message, user_id, conversation_id, tz)
    try:
        parsed = ChatRequest.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": [str(p) for p in e["loc"]], "message": e["msg"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['message']}" for e in errors)
        raise InvalidPayload(detail, errors=errors) from None
    return ChatInput(parsed.message, parsed.user_id, parsed.conversation_id, parsed.timezone)


@dataclass(slots=True)
class _Who:
    """Who asked for whose data, as far as the request got (for its audit record)."""

    actor: str | None = None
    user_id: str | None = None


class ChatService:
    """One chat from raw body to result, for every route that answers one.

    Order of checks: body (413/415/400 while it streams) → shape (400/422) → auth (401/403)
    → safety screen (an emergency skips the rest) → message length (413) → time zone (422)
    → rate limit (429) → answer.
    """

    def __init__(self, state: NeurosState, auditor: Auditor) -> None:
        self._state = state
        self._auditor = auditor
        self._max_body = state.settings.neuros_max_body_bytes
        self._max_chars = state.settings.neuros_max_message_chars
        # Prometheus children resolved once: ``labels()`` per request is a lock and a lookup.
        self._counters: dict[tuple[str, int], Any] = {}
        self._latency = {name: state.metrics.latency.labels(name) for name in ("chat", "stream")}

    def _admit(self, body: bytes, authorization: str | None, client_host: str | None,
               who: _Who) -> tuple[ChatInput, tzinfo, safety.Screening]:
        state = self._state
        parsed = parse_chat_body(body)
        who.user_id = parsed.user_id
        principal = state.auth.identify(authorization, client_host)
        who.actor = principal.actor
        state.auth.require(principal, parsed.user_id)
        # The safety screen runs before every limit: an emergency is answered whatever the
        # message's length, its time zone or the user's rate (it still spends a token).
        screened = safety.screen(parsed.message)
        if screened.emergency:
            if not state.limiter.try_take(parsed.user_id):
                state.metrics.emergencies_over_limit.inc()
            return parsed, timezone_or_utc(parsed.timezone), screened
        if len(parsed.message) > self._max_chars:
            raise PayloadTooLarge(f"message exceeds {self._max_chars} characters")
        tz = parse_timezone(parsed.timezone)
        try:
            state.limiter.take(parsed.user_id)
        except AurenError:
            state.metrics.rate_limited.inc()
            raise
        return parsed, tz, screened

    async def _audit(self, who: _Who, route: str, client_host: str | None, status: int, *,
                     emergency: bool = False) -> None:
        """One audit record per chat (an answer reads the person's data). A data answer is
        given only once recorded; an emergency answer (no data in it) never waits more than
        2 s for it, and never fails for it."""
        record = self._auditor.record(actor=who.actor, action=READ, user_id=who.user_id,
                                      route=route, client=client_host, outcome=status)
        if not emergency:
            await self._auditor.write(record)
            return
        try:
            await asyncio.wait_for(self._auditor.log.append(record), 2.0)
        except (TimeoutError, StoreUnavailable):
            log.error("audit record of an emergency answer not written",
                      extra={"detail": route})

    async def run(self, endpoint: str, body: Callable[[], Awaitable[bytes]],
                  authorization: str | None, client_host: str | None,
                  route: str = "POST /chat") -> ChatResult:
        started = time.perf_counter()
        status, intent = 500, "none"
        who = _Who()
        try:
            try:
                parsed, tz, screened = self._admit(await body(), authorization, client_host,
                                                   who)
                result = await self._state.neuros.answer(parsed.user_id, parsed.message,
                                                         parsed.conversation_id, tz,
                                                         screened=screened)
            except ClientDisconnect:
                status = 499  # nginx's convention: the client went away; nothing to answer
                await self._audit(who, route, client_host, status)
                raise
            except AurenError as exc:
                status = exc.status
                await self._audit(who, route, client_host, status)
                raise
            except Exception:
                await self._audit(who, route, client_host, 500)
                raise
            await self._audit(who, route, client_host, 200, emergency=screened.emergency)
            status, intent = 200, result.intent
            return result
        except AurenError as exc:  # the audit log refused a data answer: 503
            status = exc.status
            raise
        finally:
            counter = self._counters.get((intent, status))
            if counter is None:
                counter = self._counters[(intent, status)] = self._state.metrics.chats.labels(
                    intent, str(status))
            counter.inc()
            self._latency[endpoint].observe(time.perf_counter() - started)

    async def run_request(self, request: Request, endpoint: str) -> ChatResult:
        """For FastAPI routes (the stream, and /chat when called on the FastAPI app itself);
        the chat writes its own audit record, so the route class does not."""
        mark_audited(request)
        return await self.run(endpoint, lambda: read_body(request, self._max_body),
                              request.headers.get("authorization"), _client_host(request),
                              f"POST {request.url.path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /chat as a raw ASGI endpoint: FastAPI's middleware, dependency solving and
        request model cost about as much CPU per chat as answering it."""
        encoding = declared = authorization = None
        # The first occurrence of each, as Starlette's Headers.get; ASGI names are lower-case.
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1") if declared is None else declared
            elif name == b"authorization":
                authorization = (value.decode("latin-1") if authorization is None
                                 else authorization)
            elif name == b"content-encoding":
                encoding = value.decode("latin-1") if encoding is None else encoding
        client = scope.get("client")

        async def body() -> bytes:
            check_declared(encoding, declared, self._max_body)
            return await receive_capped(receive, self._max_body)

        path: str = scope["path"]
        try:
            result = await self.run("chat", body, authorization, client[0] if client else None,
                                    f"POST {path}")
        except ClientDisconnect:
            return
        except AurenError as exc:
            await problem_for(exc, path)(scope, receive, send)
            return
        except Exception as exc:
            log.exception("unhandled error", extra={"error": type(exc).__name__, "path": path})
            await problem_response(500, "Internal Server Error", "internal error",
                                   slug="internal", instance=path)(scope, receive, send)
            return
        payload = orjson.dumps(result.as_dict())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode()),
                                _JSON_HEADERS]})
        await send({"type": "http.response.body", "body": payload})


class NeurosApp:
    """NEUROS's ASGI entry: POST /chat goes straight to the chat service, the rest to FastAPI
    (the stream, memory, health, metrics, docs, lifespan and every error for other methods).
    The FastAPI /chat routes stay registered, so OpenAPI documents them as before."""

    def __init__(self, api: FastAPI, chat: ChatService, tracing: RequestTracing) -> None:
        self.api = api
        self._chat = chat
        self._tracing = tracing

    @property
    def router(self) -> Router:
        """FastAPI's router, so that ``app.router.lifespan_context(app)`` works as on the
        FastAPI app this wraps."""
        return self.api.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._tracing(self._route, scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in CHAT_PATHS:
            await self._chat(scope, receive, send)
            return
        await self.api(scope, receive, send)


def _sse(event: str, data: Any) -> bytes:
    # One JSON line per event: a newline inside the data can never end the event early.
    return f"event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def create_app(settings: Settings | None = None) -> NeurosApp:
    settings = settings or Settings()
    metrics = NeurosMetrics()
    plane = build_dataplane(settings, service="neuros")
    for collector in plane.collectors():
        metrics.registry.register(collector)
    assert plane.conversations is not None  # noqa: S101 - built for every NEUROS plane
    # An erased person's new chats are answered and not kept (the erasure ledger).
    erasures = erasure_store(settings, "auren-neuros-erasure")
    feed = LedgerFeed(erasures, new_ledger(ledger_cipher(settings)))
    events = plane.store
    conversations = plane.conversations = ScreenedConversations(plane.conversations,
                                                                feed.ledger)
    # With REDIS_URL, daily series are shared by every NEUROS process through Redis (a second
    # level behind the in-process cache); without it nothing changes.
    shared = (SharedSeries(plane.redis, ttl_s=settings.redis_summary_ttl_s)
              if plane.redis is not None else None)
    neuros = Neuros(events, conversations, plane.llm, metrics,
                    llm_timeout_s=settings.neuros_llm_timeout_s,
                    history_messages=settings.neuros_history_messages, shared_cache=shared,
                    contacts=safety.contacts_for(settings.neuros_locale,
                                                 settings.neuros_emergency_number,
                                                 settings.neuros_crisis_line),
                    connections=plane.connections)
    state = NeurosState(settings, events, conversations, neuros, metrics,
                        RateLimiter(settings.neuros_rate_per_minute),
                        ReadAuth.from_settings(settings), time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_runtime_for_serving()
        await plane.open()
        plane.refresh_health()
        try:
            await erasures.open()
            await feed.refresh()
        except BaseException:
            await erasures.close()
            await plane.close(settings.shutdown_timeout_s)
            raise
        stop = asyncio.Event()
        following = asyncio.create_task(feed.follow(stop, settings.erasure_poll_s))
        log.info("neuros started", extra={"mode": plane.mode, "detail": neuros.llm_name})
        try:
            yield
        finally:
            stop.set()
            await following
            # uvicorn has stopped taking requests and drained in-flight ones by now.
            await erasures.close()
            await plane.close(settings.shutdown_timeout_s)
            log.info("neuros stopped")

    app = FastAPI(title="AUREN NEUROS", version=__version__, lifespan=lifespan,
                  description="Grounded, explainable answers about a person's own biometrics.")
    app.state.neuros = state
    install_problem_handlers(app)
    # Every route below declares its audit action; this route class writes the records (the
    # chats write theirs themselves: the raw /chat lane has no route).
    assert plane.audit is not None  # noqa: S101 - built for every NEUROS plane
    auditor = Auditor(plane.audit, erased_as=erased_as(ledger_cipher(settings), feed.ledger))
    app.router.route_class = auditor.route_class()

    service = ChatService(state, auditor)

    chat_doc: dict[str, Any] = {
        "responses": {200: {"model": ChatResponse, "description": "The reply and its evidence"},
                      **problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)},
        "openapi_extra": {"requestBody": {"required": True, "content": {
            "application/json": {"schema": ChatRequest.model_json_schema()}}}},
        "tags": ["chat"],
    }
    chat_doc["openapi_extra"][AUDIT_KEY] = READ

    async def chat(request: Request) -> Response:
        """Ask about your own data. Every number in ``reply`` is in ``evidence``."""
        return json_response((await service.run_request(request, "chat")).as_dict())

    for path, name in (("/chat", "chat"), ("/api/v1/chat", "chat_v1")):
        app.add_api_route(path, chat, methods=["POST"], name=name, summary="Chat", **chat_doc)

    @app.post("/api/v1/chat/stream", tags=["chat"],
              responses={200: {"description": "Server-sent events: meta, token…, done",
                               "content": {"text/event-stream": {}}},
                         **problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)},
              openapi_extra=chat_doc["openapi_extra"], response_class=StreamingResponse)
    async def chat_stream(request: Request) -> StreamingResponse:
        """The reply as server-sent events. It is checked whole before the first token is sent,
        so a stream never carries an ungrounded number; errors before that are problem+json."""
        result = await service.run_request(request, "stream")

        async def events() -> AsyncIterator[bytes]:
            yield _sse("meta", {"conversation_id": result.conversation_id,
                                "model": result.model, "intent": result.intent})
            for token in re.findall(r"\S+\s*", result.reply):
                yield _sse("token", {"text": token})
            yield _sse("done", result.as_dict())

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache",
                                          "x-accel-buffering": "no"})

    @app.get("/api/v1/users/{user_id}/conversations", tags=["memory"],
             responses=problem_responses(401, 403), openapi_extra=audited(READ))
    async def list_conversations(request: Request, user_id: UserPath,
                                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
        """The user's conversations, most recent first."""
        authorize(state.auth, request, user_id)
        found = await conversations.conversations(user_id, limit)
        return json_response({"user_id": user_id,
                              "conversations": [c.as_dict() for c in found]})

    @app.get("/api/v1/users/{user_id}/conversations/{conversation_id}", tags=["memory"],
             responses=problem_responses(401, 403, 404), openapi_extra=audited(READ))
    async def get_conversation(request: Request, user_id: UserPath,
                               conversation_id: ConversationPath,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Response:
        """One conversation's messages, oldest first."""
        authorize(state.auth, request, user_id)
        messages = await conversations.messages(user_id, conversation_id, limit)
        return json_response({"conversation_id": conversation_id,
                              "messages": [m.as_dict() for m in messages]})

    @app.delete("/api/v1/users/{user_id}/conversations", tags=["memory"],
                responses=problem_responses(401, 403), openapi_extra=audited(ERASE))
    async def erase(request: Request, user_id: UserPath) -> Response:
        """Erase everything NEUROS keeps about the user: conversations, messages, rate state and
        cached series (this process's and, with Redis, the shared ones).
        (Biometric events belong to the bridge and are not touched.)"""
        authorize(state.auth, request, user_id)
        deleted = await conversations.erase_user(user_id)
        state.limiter.forget(user_id)
        if not await neuros.cache.erase(user_id):
            log.warning("cached series not erased from redis; they expire within %d s",
                        settings.redis_summary_ttl_s, extra={"detail": "redis"})
        log.info("user erased from neuros", extra={"count": deleted["messages"]})
        return json_response({"user_id": user_id, "deleted": deleted})

    @app.get("/health", tags=["operations"], openapi_extra=audited(NOT_AUDITED))
    async def health() -> Response:
        """``application/health+json``: the stores, Redis and the LLM, each pass, warn or fail."""
        now = now_text()
        status, checks = await plane.health(now)
        llm_check: dict[str, Any] = {"componentId": neuros.llm_name,
                                     "componentType": "component", "status": PASS,
                                     "time": now}
        if neuros.llm_last is not None:
            outcome, at = neuros.llm_last
            llm_check["observedValue"] = outcome
            llm_check["lastCall"] = iso(datetime.fromtimestamp(at, UTC))
            if outcome != "ok":
                llm_check["status"] = WARN
                llm_check["output"] = f"last reply not used ({outcome}); builtin phrasing served"
                status = worst(status, WARN)
        checks["llm:lastCall"] = [llm_check]
        return health_response(status, checks, service_id="auren-neuros",
                               description="AUREN NEUROS", started=state.started, now=now,
                               llm=neuros.llm_name, mode=plane.mode)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             openapi_extra=audited(NOT_AUDITED))
    async def prometheus_metrics() -> Response:
        return metrics_response(metrics.registry)

    return NeurosApp(app, service, RequestTracing.from_settings(settings, "neuros"))
