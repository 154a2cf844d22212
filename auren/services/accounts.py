"""The bridge's people, connections and job routes (``/api/v1``), thin over
:class:`~auren.connections.service.ConnectionsService`.

Who may call: the read API's rule (``auren.services.auth``): a service key, or a person's own
JWT for their own user id; the job admin and creating a person without naming them take a
service key (or, with nothing configured, a loopback client). The OAuth callback is the one
route without credentials: the provider redirects the person's browser to it, and its signed,
single-use ``state`` is what authenticates it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from starlette.responses import Response

from auren.connections.base import DEAD, JOB_STATES
from auren.connections.service import ConnectionsService
from auren.errors import InvalidPayload, MalformedPayload, NotFound
from auren.events import is_identifier, parse_time
from auren.privacy import base as audit
from auren.privacy import texts
from auren.services.auditing import audited, authorize, authorize_service, name_subject
from auren.services.auth import ReadAuth
from auren.services.kernel.body import read_body
from auren.services.kernel.problem import problem_responses
from auren.services.kernel.responses import json_response

UserPath = Annotated[str, Path(min_length=1, max_length=256)]
ProviderPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z]+$")]
_MAX_BODY = 4096


def _user(user_id: str) -> str:
    if not is_identifier(user_id):
        raise InvalidPayload("user_id must be 1 to 256 printable characters without leading "
                             "or trailing spaces")
    return user_id


def install(app: FastAPI, service: ConnectionsService, auth: ReadAuth) -> None:
    """The routes, each declaring its audit action (the app's route class writes the
    records: ``auren.services.auditing``)."""

    def allow(request: Request, user_id: str) -> None:
        authorize(auth, request, user_id)

    @app.post("/api/v1/users", tags=["connections"], status_code=201,
              responses=problem_responses(400, 401, 403, 409, 413, 415, 422),
              openapi_extra=audited(audit.CREATE))
    async def create_user(request: Request) -> Response:
        """Create a person (201), or answer the one with the given ``user_id`` (200). Body:
        ``{"user_id": "…"}`` (optional; without it an id is made). 409: the id belongs to an
        erased person."""
        raw = await read_body(request, _MAX_BODY)
        try:
            body: Any = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise MalformedPayload("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise MalformedPayload("body must be a JSON object")
        wanted = body.get("user_id")
        if wanted is not None and not isinstance(wanted, str):
            raise InvalidPayload("user_id must be a string")
        if wanted is None:
            authorize_service(auth, request)
        else:
            allow(request, _user(wanted))
        user, created = await service.create_user(wanted)
        name_subject(request, user.user_id)
        return json_response(user.as_dict(), 201 if created else 200)

    @app.get("/api/v1/users/{user_id}", tags=["connections"],
             responses=problem_responses(400, 401, 403, 404, 422),
             openapi_extra=audited(audit.READ))
    async def get_user(request: Request, user_id: UserPath) -> Response:
        allow(request, user_id)
        user = await service.user(_user(user_id))
        return json_response({**user.as_dict(),
                              "connections": await service.list_connections(user_id)})

    @app.get("/api/v1/connect/{provider}", tags=["connections"], status_code=302,
             responses={302: {"description": "To the provider's consent page (Location)"},
                        **problem_responses(400, 401, 403, 404, 422, 503)},
             openapi_extra=audited(audit.CONNECT))
    async def connect(request: Request, provider: ProviderPath,
                      user_id: Annotated[str, Query(min_length=1, max_length=256)]) -> Response:
        """Redirect to the provider's consent page (Terra: its widget) to connect an account
        for ``user_id``; the answer's body gives the same URL as ``authorize_url`` and the
        consent text shown (``consent``: version, purpose, text), which is recorded with the
        consent once the account is connected."""
        allow(request, user_id)
        shown = texts.current()
        url = await service.connect_url(provider, _user(user_id), shown.version)
        response = json_response({"authorize_url": url, "consent": shown.as_dict(provider)},
                                 302)
        response.headers["location"] = url
        return response

    @app.get("/api/v1/connect/{provider}/callback", tags=["connections"],
             responses=problem_responses(400, 404, 424, 503),
             openapi_extra=audited(audit.CONNECT))
    async def callback(request: Request, provider: ProviderPath) -> Response:
        """Where the provider sends the person back (``code`` and ``state``; Terra: its
        ``user_id``): the account is connected and its history queued."""
        params = {k: v for k, v in request.query_params.items() if len(v) <= 4096}
        result = await service.callback(provider, params)
        name_subject(request, str(result["user_id"]))
        return json_response(result)

    @app.get("/api/v1/users/{user_id}/connections", tags=["connections"],
             responses=problem_responses(400, 401, 403, 404, 422),
             openapi_extra=audited(audit.READ))
    async def connections(request: Request, user_id: UserPath) -> Response:
        """Provider, provider user id, status (``active``, ``reauthorization_required``),
        scopes, when connected, the last fetch and success, the last error."""
        allow(request, user_id)
        return json_response({"connections": await service.list_connections(_user(user_id))})

    @app.delete("/api/v1/users/{user_id}/connections/{provider}", tags=["connections"],
                responses=problem_responses(400, 401, 403, 404, 422, 503),
                openapi_extra=audited(audit.DISCONNECT))
    async def disconnect(request: Request, user_id: UserPath,
                         provider: ProviderPath) -> Response:
        """Revoke AUREN's access at the provider, then forget the tokens (503 + Retry-After
        when the provider is unreachable: nothing was forgotten yet)."""
        allow(request, user_id)
        return json_response(await service.disconnect(_user(user_id), provider))

    @app.post("/api/v1/users/{user_id}/connections/{provider}/sync", tags=["connections"],
              status_code=202, responses=problem_responses(400, 401, 403, 404, 422),
              openapi_extra=audited(audit.SYNC))
    async def sync(request: Request, user_id: UserPath, provider: ProviderPath,
                   since: Annotated[str | None, Query(max_length=40)] = None) -> Response:
        """Fetch a window again, from ``since`` (RFC 3339) or ``BACKFILL_DAYS`` back."""
        allow(request, user_id)
        moment = None
        if since is not None:
            try:
                moment = parse_time(since)
            except ValueError:
                raise MalformedPayload("since must be an RFC 3339 timestamp with an offset") \
                    from None
        return json_response(await service.sync(_user(user_id), provider, moment), 202)

    @app.get("/api/v1/users/{user_id}/coverage", tags=["connections"],
             responses=problem_responses(400, 401, 403, 404, 422),
             openapi_extra=audited(audit.READ))
    async def coverage(request: Request, user_id: UserPath,
                       days: Annotated[int, Query(ge=1, le=365)] = 30) -> Response:
        """Per source and metric: the days with data, the last event, receipt and fetch, and
        ``stale`` when a connected source has been silent longer than its usual cadence."""
        allow(request, user_id)
        return json_response(await service.coverage(_user(user_id), days))

    @app.get("/api/v1/jobs", tags=["jobs"], responses=problem_responses(400, 401, 403, 422),
             openapi_extra=audited(audit.READ))
    async def jobs(request: Request,
                   state: Annotated[str | None, Query(max_length=16)] = None,
                   provider: Annotated[str | None, Query(max_length=32)] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        """Fetch jobs, newest first; ``state=dead`` lists the dead letters with their reason
        (``last_error``). Service key only."""
        authorize_service(auth, request)
        return json_response({"jobs": await service.job_listing(state, provider, limit),
                              "states": list(JOB_STATES),
                              "as_of": datetime.now(UTC).isoformat()})

    @app.post("/api/v1/jobs/{job_id}/retry", tags=["jobs"], status_code=202,
              responses=problem_responses(401, 403, 404), openapi_extra=audited(audit.RETRY))
    async def retry_one(request: Request, job_id: Annotated[str, Path(max_length=64)]
                        ) -> Response:
        authorize_service(auth, request)
        count = await service.retry([job_id])
        if not count:
            raise NotFound(f"no job {job_id[:64]!r}")
        return json_response({"retried": count}, 202)

    @app.post("/api/v1/jobs/retry", tags=["jobs"], status_code=202,
              responses=problem_responses(400, 401, 403, 422),
              openapi_extra=audited(audit.RETRY))
    async def retry_all(request: Request,
                        state: Annotated[str, Query(max_length=16)] = DEAD,
                        provider: Annotated[str | None, Query(max_length=32)] = None
                        ) -> Response:
        """Every job in ``state`` (default: the dead letters), of ``provider`` if given, is
        pending again with its attempts reset."""
        authorize_service(auth, request)
        if state not in JOB_STATES:
            raise InvalidPayload(f"state must be one of {', '.join(JOB_STATES)}")
        return json_response({"retried": await service.retry(None, state=state,
                                                             provider=provider)}, 202)
