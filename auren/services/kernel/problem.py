"""The one place where the exception tree becomes HTTP: RFC 9457 ``application/problem+json``.

Every app installs these handlers. Details of unexpected errors are logged (type only) and
never returned; client errors say precisely what is wrong with the request.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from auren.errors import AurenError
from auren.services.openapi import conform

log = logging.getLogger("auren.http")

PROBLEM = "application/problem+json"
_TYPE_BASE = "https://auren.dev/problems/"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status"],
}


def problem_response(status: int, title: str, detail: str, *, slug: str, instance: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": _TYPE_BASE + slug, "title": title, "status": status,
                            "detail": detail, "instance": instance}
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def problem_for(exc: AurenError, instance: str) -> Response:
    if exc.status >= 500 and not exc.retriable:
        log.error("internal error", extra={"error": type(exc).__name__, "path": instance})
        return problem_response(500, "Internal Server Error", "internal error", slug="internal",
                                instance=instance)
    return problem_response(exc.status, exc.title, exc.detail, slug=exc.slug, instance=instance,
                            headers=exc.headers(), **exc.extra)


async def _auren_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AurenError)  # noqa: S101 - registered for AurenError only
    return problem_for(exc, request.url.path)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> str:
    """Every method the request's path answers. Starlette's 405 names only the methods of the
    first route that matched the path, and a path may have one route per method; routers that
    FastAPI includes are routes of their own, so each method is asked of every top-level route
    rather than reading the routes' method sets."""
    routes = request.app.router.routes
    return ", ".join(
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in routes))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed(request) or headers.get("Allow", "")
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(exc.status_code, str(exc.detail), str(exc.detail), slug=slug,
                            instance=request.url.path, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", ""))}
              for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['message']}" for e in errors)
    return problem_response(400, "Bad Request", detail, slug="bad-request",
                            instance=request.url.path, errors=errors)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"error": type(exc).__name__,
                                            "path": request.url.path})
    return problem_response(500, "Internal Server Error", "internal error", slug="internal",
                            instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AurenError, _auren_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    # The document says what these handlers answer (400, not FastAPI's 422, and the like).
    conform(app, {PROBLEM: {"schema": PROBLEM_SCHEMA}})


# Headers a problem of that status always carries.
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    405: {"Allow": {"description": "The methods the resource answers", "required": True,
                    "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "required": True,
                          "schema": {"type": "integer"}}},
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given problem statuses."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": "Problem",
                                 "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}
        if status in _PROBLEM_HEADERS:
            entry["headers"] = _PROBLEM_HEADERS[status]
        responses[status] = entry
    return responses
