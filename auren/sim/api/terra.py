"""Terra (aggregator), simulated: widget sessions, auth/deauth webhooks, users and data.

Terra holds the device tokens; the app authenticates every call with ``dev-id`` and
``x-api-key`` and knows a person by the ``reference_id`` it gave when the widget session was
made. Quirks reproduced: ``POST /auth/generateWidgetSession`` answers a ``url`` valid for 900 s;
completing the widget redirects to ``auth_success_redirect_url`` with ``user_id``,
``resource`` and ``reference_id`` and sends a signed ``auth`` webhook; each connected device
is a Terra user of its own; ``DELETE /auth/deauthenticateUser`` sends ``deauth``; data calls
answer only an acknowledgement and deliver the data by signed webhook unless
``to_webhook=false``; ranges over 28 days are "large requests" delivered in chunks; errors are
``application/problem+json``. Data items are the ones ``auren simulate`` pushes for Terra
(sleep: RMSSD *and* SDNN, a temperature *deviation*; daily: steps, distance, active energy).
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from auren.sim.api import shapes
from auren.sim.api.core import (
    AccessStatus,
    Grant,
    LimitState,
    OAuthPolicy,
    Outgoing,
    ProviderApi,
    Reply,
    add_query,
    json_response,
)
from auren.sim.api.wearers import Wearer
from auren.sim.render import RenderContext, render_terra, uid
from auren.sim.wearers import DayRecord

RESOURCES = ("OURA", "GARMIN", "FITBIT", "WITHINGS", "POLAR", "WHOOP", "APPLE", "GOOGLE")
VERSION = "2022-03-16"
SESSION_TTL_S = 900
CHUNK_DAYS = 28
DATA_TYPES = ("sleep", "daily")


def items(r: DayRecord) -> dict[str, dict[str, Any]]:
    """The day's Terra data items by type, exactly as ``auren simulate`` renders them."""
    out = {}
    for unsigned in render_terra(r, RenderContext("api", 0.0)):
        body = orjson.loads(unsigned.body)
        out[body["type"]] = body["data"][0]
    return out


def terra_user_id(wearer_id: str, resource: str) -> str:
    return uid("terra-user", wearer_id, resource)


class TerraApi(ProviderApi):
    name = "terra"
    policy = OAuthPolicy(scopes=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: dict[str, dict[str, Any]] = {}
        # Set by the app: sends webhooks (in the background).
        self.send: Any = None

    # -- formats --------------------------------------------------------------------------------

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Any = None) -> Response:
        title = {400: "bad request", 401: "unauthorized", 404: "not found",
                 424: "failed dependency", 429: "too many requests"}.get(status, "error")
        return json_response({"type": f"https://docs.tryterra.co/errors/{code}", "title": title,
                              "instance": code, "detail": message}, status, headers,
                             media_type="application/problem+json")

    def unauthorized(self, reason: AccessStatus) -> Response:
        return self.error(401, "dev-id and x-api-key are missing or invalid",
                          code="unauthorized")

    def rate_limited(self, retry_after_s: int, limit: LimitState | None) -> Response:
        return self.error(429, "rate limit exceeded", code="rate_limited",
                          headers={"Retry-After": str(retry_after_s)})

    # -- app authentication -----------------------------------------------------------------------

    async def app_call(self, request: Request, wearer: Wearer | None = None) -> None:
        client = self.client
        if (request.headers.get("dev-id") != client.client_id
                or request.headers.get("x-api-key") != client.client_secret):
            raise Reply(self.unauthorized("invalid"))
        await self.apply_faults(wearer, "api")
        limit, retry = self.state.limiter.hit(self.name, self.settings.limits,
                                              {"app": client.client_id}, 0, self.state.clock())
        if retry is not None:
            raise Reply(self.rate_limited(retry, limit))

    def connection(self, user_id: str | None = None,
                   reference_id: str | None = None) -> Grant | None:
        for grant in self.state.grants.values():
            if grant.provider == self.name and not grant.revoked and (
                    grant.external_id == user_id or (reference_id is not None
                                                     and grant.member_id == reference_id)):
                return grant
        return None

    def user(self, grant: Grant) -> dict[str, Any]:
        return {"user_id": grant.external_id, "provider": grant.resource,
                "reference_id": grant.member_id, "scopes": None, "active": not grant.revoked,
                "last_webhook_update": shapes.utc_z(self.state.clock(), millis=False),
                "created_at": shapes.utc_z(grant.created_at, millis=False)}

    def event(self, kind: str, grant: Grant, **extra: Any) -> Outgoing:
        trace = str(uuid.uuid4())
        body = {"type": kind, "user": self.user(grant), "version": VERSION, **extra}
        return Outgoing(kind, orjson.dumps(body), trace, {"trace_id": trace})

    def data_events(self, grant: Grant, records: list[DayRecord]) -> list[Outgoing]:
        out = []
        for kind in DATA_TYPES:
            data = [items(r)[kind] for r in records]
            if data:
                out.append(self.event(kind, grant, data=data))
        return out

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        out = []
        for grant in list(self.state.grants.values()):
            if grant.provider == self.name and grant.wearer is wearer and not grant.revoked:
                out += self.data_events(grant, records)
        return out

    def revocation_notifications(self, grant: Grant) -> list[Outgoing]:
        return [self.event("access_revoked", grant, message="The user revoked access")]

    def connect(self, session: dict[str, Any], resource: str, hint: str | None) -> Response:
        """The user finishes the widget: a Terra user, a redirect and an ``auth`` webhook."""
        failure = session.get("auth_failure_redirect_url")
        wearer = self.state.choose_login(self.name, hint)
        if wearer is None or resource not in RESOURCES:
            if failure:
                return RedirectResponse(add_query(failure, reason="no user or resource"), 302)
            return self.error(400, "no simulated user is left, or the resource is unknown")
        grant = self.state.new_grant(self.name, wearer, self.client.client_id, (resource,))
        grant.external_id = terra_user_id(wearer.id, resource)
        grant.resource = resource
        grant.member_id = session.get("reference_id")
        if self.send is not None:
            self.send(self.name, wearer, [self.event(
                "auth", grant, status="success", reference_id=grant.member_id,
                widget_session_id=session.get("session_id"))])
        success = session.get("auth_success_redirect_url")
        if not success:
            return json_response({"status": "success", "user_id": grant.external_id})
        return RedirectResponse(add_query(success, user_id=grant.external_id, resource=resource,
                                          reference_id=grant.member_id), 302)

    # -- routes ---------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter()

        async def body_of(request: Request) -> dict[str, Any]:
            try:
                body = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError:
                raise Reply(self.error(400, "body is not JSON", code="bad_request")) from None
            if not isinstance(body, dict):
                raise Reply(self.error(400, "body must be an object", code="bad_request"))
            return body

        def new_session(body: dict[str, Any], request: Request) -> dict[str, Any]:
            session_id = secrets.token_hex(12)
            session = {"session_id": session_id, "reference_id": body.get("reference_id"),
                       "auth_success_redirect_url": body.get("auth_success_redirect_url"),
                       "auth_failure_redirect_url": body.get("auth_failure_redirect_url"),
                       "expires_at": time.time() + SESSION_TTL_S}
            self.sessions[session_id] = session
            return session

        @router.post("/v2/auth/generateWidgetSession", include_in_schema=False)
        async def widget_session(request: Request) -> Response:
            await self.app_call(request)
            body = await body_of(request)
            session = new_session(body, request)
            url = str(request.url_for("terra_widget", session_id=session["session_id"]))
            return json_response({"status": "success", "session_id": session["session_id"],
                                  "url": url, "expires_in": SESSION_TTL_S})

        @router.get("/widget/session/{session_id}", name="terra_widget", include_in_schema=False)
        async def widget(request: Request, session_id: str) -> Response:
            session = self.sessions.get(session_id)
            if session is None or session["expires_at"] < time.time():
                return self.error(404, "the widget session is unknown or expired",
                                  code="not_found")
            resource = request.query_params.get("resource", "OURA").upper()
            return self.connect(session, resource, request.query_params.get("sim_user"))

        @router.post("/v2/auth/authenticateUser", include_in_schema=False)
        async def authenticate(request: Request) -> Response:
            await self.app_call(request)
            resource = request.query_params.get("resource", "").upper()
            if resource not in RESOURCES:
                return self.error(400, "resource is missing or unknown", code="bad_request")
            session = new_session(await body_of(request), request)
            url = add_query(str(request.url_for("terra_widget",
                                                 session_id=session["session_id"])),
                            resource=resource)
            return json_response({"status": "success", "user_id": None, "auth_url": url})

        @router.delete("/v2/auth/deauthenticateUser", include_in_schema=False)
        async def deauthenticate(request: Request) -> Response:
            await self.app_call(request)
            grant = self.connection(request.query_params.get("user_id"))
            if grant is None:
                return self.error(404, "user not found", code="not_found")
            self.state.revoke(grant)
            if self.send is not None:
                self.send(self.name, grant.wearer, [self.event(
                    "deauth", grant, status="success", message="User has deauthenticated")])
            return json_response({"status": "success"})

        @router.get("/v2/userInfo", include_in_schema=False)
        async def user_info(request: Request) -> Response:
            await self.app_call(request)
            q = request.query_params
            grant = self.connection(q.get("user_id"), q.get("reference_id"))
            if grant is None:
                return self.error(404, "user not found", code="not_found")
            return json_response({"status": "success", "user": self.user(grant),
                                  "is_authenticated": True})

        async def data(request: Request, kind: str) -> Response:
            q = request.query_params
            grant = self.connection(q.get("user_id"))
            await self.app_call(request, grant.wearer if grant else None)
            if grant is None:
                return self.error(404, "user not found", code="not_found")
            try:
                first = _day(q.get("start_date"))
                last = _day(q.get("end_date")) if q.get("end_date") else grant.wearer.today
            except ValueError:
                return self.error(400, "start_date and end_date must be YYYY-MM-DD or Unix "
                                       "seconds", code="bad_request")
            records = grant.wearer.between(first, last)
            chosen = [items(r)[kind] for r in records] if kind in DATA_TYPES else []
            if q.get("to_webhook", "true").lower() == "false":
                return json_response({"status": "success", "type": kind,
                                      "user": self.user(grant), "data": chosen})
            reference = str(uuid.uuid4())
            chunks = [records[i: i + CHUNK_DAYS] for i in range(0, len(records), CHUNK_DAYS)]
            if self.send is not None and kind in DATA_TYPES:
                self.send(self.name, grant.wearer,
                          [e for chunk in chunks for e in self.data_events(grant, chunk)
                           if orjson.loads(e.body)["type"] == kind])
            answer = {"status": "success", "type": kind, "reference": reference}
            if len(chunks) > 1:
                answer["message"] = "Large request submitted, data will be sent in chunks"
            return json_response(answer)

        def route(kind: str) -> Any:
            async def handler(request: Request) -> Response:
                return await data(request, kind)
            return handler

        for kind in ("daily", "sleep", "activity", "body", "menstruation", "nutrition"):
            router.add_api_route(f"/v2/{kind}", route(kind), methods=["GET"],
                                 include_in_schema=False)
        return router


def _day(raw: str | None) -> date:
    if raw is None:
        raise ValueError("missing")
    if raw.isascii() and raw.isdigit():
        return datetime.fromtimestamp(int(raw), UTC).date()
    return date.fromisoformat(raw)

