"""The bridge's privacy routes (``/api/v1``): a person's export, their consents and
withdrawing one, the consent text, and the audit log (a service key only). Thin over
``auren.privacy`` and ``auren.services.export``; every route declares its audit action.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from auren.errors import InvalidPayload, MalformedPayload, NotFound
from auren.events import check_instant, is_identifier, parse_time
from auren.privacy import base as audit
from auren.privacy import texts
from auren.privacy.base import AuditLog, AuditQuery, Withdrawn
from auren.privacy.gate import ConsentGate
from auren.services import export
from auren.services.auditing import audited, authorize, authorize_service
from auren.services.auth import ReadAuth
from auren.services.kernel.problem import problem_responses
from auren.services.kernel.responses import json_response

UserPath = Annotated[str, Path(min_length=1, max_length=256)]
ProviderPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z]+$")]


def _user(user_id: str) -> str:
    if not is_identifier(user_id):
        raise InvalidPayload("user_id must be 1 to 256 printable characters without leading "
                             "or trailing spaces")
    return user_id


def erasure_link(user_id: str) -> dict[str, str]:
    return {"method": "DELETE", "href": f"/api/v1/users/{user_id}"}


def install(app: FastAPI, auth: ReadAuth, sources: export.ExportSources, gate: ConsentGate,
            log: AuditLog) -> None:
    @app.get("/api/v1/users/{user_id}/export", tags=["privacy"],
             responses={200: {"description": "The export, streamed: NDJSON (schema "
                                             "`auren-export` version 1) or CSV of the events",
                              "content": {export.NDJSON: {"schema": {"type": "string"}},
                                          "text/csv": {"schema": {"type": "string"}}}},
                        **problem_responses(400, 401, 403, 422)},
             response_class=StreamingResponse, openapi_extra=audited(audit.EXPORT))
    async def export_user(request: Request, user_id: UserPath,
                          format: Annotated[str, Query(max_length=8)] = "ndjson"
                          ) -> Response:
        """Everything held about the person, streamed: the person, consents, connections
        (never tokens), coverage, NEUROS's conversations and every event with its provenance
        (NDJSON, a header line first and an ``end`` line last), or the events as CSV
        (``format=csv``)."""
        authorize(auth, request, user_id)
        if format not in export.FORMATS:
            raise InvalidPayload(f"format must be one of {', '.join(export.FORMATS)}")
        name = _user(user_id)
        suffix = "csv" if format == "csv" else "ndjson"
        return StreamingResponse(
            export.stream(sources, name, format), media_type=export.media_type(format),
            headers={"content-disposition": f'attachment; filename="auren-export.{suffix}"',
                     "cache-control": "no-store"})

    @app.get("/api/v1/users/{user_id}/consents", tags=["privacy"],
             responses=problem_responses(400, 401, 403, 422),
             openapi_extra=audited(audit.READ))
    async def consents(request: Request, user_id: UserPath) -> Response:
        """Every consent the person gave, in force or withdrawn: provider, purpose, scopes,
        the version of the text shown, when given and withdrawn."""
        authorize(auth, request, user_id)
        found = await gate.consents.consents_of(_user(user_id))
        return json_response({"user_id": user_id, "consents": [c.as_dict() for c in found],
                              "current_text_version": texts.CURRENT_VERSION})

    @app.delete("/api/v1/users/{user_id}/consents/{provider}", tags=["privacy"],
                responses=problem_responses(400, 401, 403, 404, 422),
                openapi_extra=audited(audit.CONSENT_WITHDRAW))
    async def withdraw(request: Request, user_id: UserPath, provider: ProviderPath) -> Response:
        """Withdraw the person's consent for ``provider``: from now on nothing of that
        provider is stored for them (webhooks are answered without storing, fetch jobs are
        cancelled; both counted). The answer offers erasure and disconnecting."""
        authorize(auth, request, user_id)
        name = _user(user_id)
        now = datetime.now(UTC)
        changed = await gate.consents.withdraw(name, provider, now)
        if not changed:
            found = [c for c in await gate.consents.consents_of(name) if c.provider == provider]
            if not found:
                raise NotFound(f"{name[:64]!r} gave no consent for {provider}")
            changed = found  # withdrawn before: answered alike (idempotent)
        gate.add(Withdrawn(name, provider, frozenset(
            c.provider_user_id for c in changed if c.provider_user_id)))
        withdrawn_at = max(c.withdrawn_at or now for c in changed)
        return json_response({
            "user_id": name, "provider": provider, "withdrawn_at": withdrawn_at.isoformat(),
            "consents": [c.as_dict() for c in changed], "ingestion": "stopped",
            "offers": {"erase": erasure_link(name),
                       "disconnect": {"method": "DELETE",
                                      "href": f"/api/v1/users/{name}/connections/{provider}"},
                       "export": {"method": "GET", "href": f"/api/v1/users/{name}/export"}}})

    @app.get("/api/v1/consent-text", tags=["privacy"], responses=problem_responses(400, 404),
             openapi_extra=audited(audit.NOT_AUDITED))
    async def consent_text(provider: Annotated[str | None, Query(max_length=32)] = None,
                           version: Annotated[str | None, Query(max_length=32)] = None
                           ) -> Response:
        """The consent text a person is shown before connecting (the current version, or
        ``version``), and every published version."""
        chosen = texts.TEXTS.get(version or texts.CURRENT_VERSION)
        if chosen is None:
            raise NotFound(f"no consent text version {version!r}")
        return json_response({**chosen.as_dict(provider), "versions": sorted(texts.TEXTS)})

    @app.get("/api/v1/audit", tags=["audit"],
             responses=problem_responses(400, 401, 403, 422), openapi_extra=audited(audit.AUDIT))
    async def audit_log(request: Request,
                        user_id: Annotated[str | None, Query(max_length=256)] = None,
                        action: Annotated[str | None, Query(max_length=32)] = None,
                        since: Annotated[str | None, Query(max_length=40)] = None,
                        after: Annotated[int | None, Query(ge=0)] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        """The audit log, oldest first (``after``: the ``seq`` of the last record of the
        previous page, given as ``next``). A service key only."""
        authorize_service(auth, request)
        if action is not None and action not in audit.ACTIONS:
            raise InvalidPayload(f"action must be one of {', '.join(audit.ACTIONS)}")
        moment = None
        if since is not None:
            try:
                moment = check_instant(parse_time(since), datetime.now(UTC), "since")
            except ValueError as exc:
                raise MalformedPayload(f"since: {exc}") from None
        records = await log.query(AuditQuery(user_id=user_id, action=action, since=moment,
                                             after_seq=after, limit=limit))
        return json_response({"records": [r.as_dict() for r in records],
                              "next": records[-1].seq if len(records) == limit else None})
