"""The audit log's writer: one record for every request to a route that touches a person's
data, written by the route class, so no route can forget it.

Every route of an audited app declares its ``action`` in its OpenAPI operation
(``x-audit``: ``read``, ``export``, ``connect``, ..., or ``none`` for a route that touches
nobody's data: health, metrics); a test fails for a route that declares nothing. The record
says who (the principal the route's authorisation found, ``anonymous`` when none was), what
(the action and the route's template, never its values), whose (the ``user_id`` of the path or
query, or the one the route named), when, from where (the client address the connection guard
resolved through ``TRUSTED_PROXIES``) and the outcome (the HTTP status). A successful answer is
given only once its record is durable: when the log cannot be written the answer is 503 and
nothing is disclosed. A refused or failed request is recorded too (a failure to record it is
logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from auren.errors import AurenError, StoreUnavailable
from auren.observability import REQUEST_ID
from auren.privacy.base import NOT_AUDITED, AuditLog, AuditRecord, actor_of
from auren.services.auth import Principal, ReadAuth

log = logging.getLogger("auren.audit")

AUDIT_KEY = "x-audit"
_JWT = actor_of("")  # what a person's own token is recorded as, before their id
_MAX_ID = 256


def audited(action: str) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring its audit action."""
    return {AUDIT_KEY: action}


def route_action(route: APIRoute) -> str | None:
    action = (route.openapi_extra or {}).get(AUDIT_KEY)
    return action if isinstance(action, str) else None


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _identify(auth: ReadAuth, request: Request) -> Principal:
    principal = auth.identify(request.headers.get("authorization"), _client(request))
    request.state.audit_actor = principal.actor  # also when the rule then refuses them
    return principal


def authorize(auth: ReadAuth, request: Request, user_id: str) -> Principal:
    """The read API's rule for ``user_id``, remembering the caller for the audit record."""
    return auth.require(_identify(auth, request), user_id)


def authorize_service(auth: ReadAuth, request: Request) -> Principal:
    """A service key only, remembering the caller for the audit record."""
    return auth.require_service(_identify(auth, request))


def name_subject(request: Request, user_id: str) -> None:
    """Whose data a route without ``user_id`` in its path or query touched."""
    request.state.audit_user = user_id


def _status(exc: BaseException) -> int:
    if isinstance(exc, AurenError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return 422
    return 500


class Auditor:
    def __init__(self, log: AuditLog,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 erased_as: Callable[[str], str | None] | None = None) -> None:
        self.log = log
        self._clock = clock
        # An erased person's pseudonym (None for anyone else): their id is never written again.
        self._erased_as = erased_as

    def record(self, *, actor: str | None, action: str, user_id: str | None, route: str,
               client: str | None, outcome: int) -> AuditRecord:
        if self._erased_as is not None:
            if user_id and (pseudonym := self._erased_as(user_id[:_MAX_ID])) is not None:
                user_id = pseudonym
            subject = actor.removeprefix(_JWT) if actor and actor.startswith(_JWT) else None
            if subject and (pseudonym := self._erased_as(subject)) is not None:
                actor = _JWT + pseudonym
        return AuditRecord(at=self._clock(), actor=actor or "anonymous", action=action,
                           user_id=user_id[:_MAX_ID] if user_id else None, route=route,
                           client=client, outcome=outcome, request_id=REQUEST_ID.get())

    async def write(self, record: AuditRecord) -> None:
        """Append ``record``. A success (status < 400) discloses data: when it cannot be
        recorded, StoreUnavailable (503) is raised instead of answering. A refusal or failure
        that cannot be recorded is logged."""
        try:
            await self.log.append(record)
        except StoreUnavailable as failed:
            if record.outcome < 400:
                raise StoreUnavailable("the audit log could not be written; nothing was "
                                       "disclosed", retry_after_s=2) from failed
            log.error("audit record not written", extra={
                "error": failed.detail, "detail": f"{record.action} {record.route}"})

    def record_of(self, request: Request, action: str, route: str,
                  outcome: int) -> AuditRecord:
        state = request.state
        user = getattr(state, "audit_user", None) or request.path_params.get("user_id") \
            or request.query_params.get("user_id")
        return self.record(actor=getattr(state, "audit_actor", None), action=action,
                           user_id=str(user) if user else None, route=route,
                           client=_client(request), outcome=outcome)

    def route_class(self) -> type[APIRoute]:
        """The route class that writes each request's record (``app.router.route_class``).
        A handler that wrote its request's record itself (``mark_audited``) is not recorded
        twice."""
        auditor = self

        class AuditedRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()
                action = route_action(self)
                if action is None or action == NOT_AUDITED:
                    return handler
                template = f"{'|'.join(sorted(self.methods or ()))} {self.path}"

                async def audited_handler(request: Request) -> Response:
                    try:
                        response = await handler(request)
                    except Exception as exc:
                        if not getattr(request.state, "audited", False):
                            await auditor.write(auditor.record_of(request, action, template,
                                                                  _status(exc)))
                        raise
                    if not getattr(request.state, "audited", False):
                        await auditor.write(auditor.record_of(request, action, template,
                                                              response.status_code))
                    return response

                return audited_handler

        return AuditedRoute


def mark_audited(request: Request) -> None:
    """The handler wrote this request's record itself (a lane shared with a raw endpoint)."""
    request.state.audited = True


def status_of(exc: BaseException) -> int:
    return _status(exc)
