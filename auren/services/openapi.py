"""Make each service's OpenAPI document say what the service answers.

FastAPI documents a few things the services do differently, and a client (or Schemathesis)
reading the document would be misled:

- every route with parameters gets a ``422`` ``HTTPValidationError`` in ``application/json``,
  while the problem handlers answer a request FastAPI cannot validate with ``400``
  ``application/problem+json`` (``422`` is kept for content that is well-formed but wrong, and
  routes that answer it document it themselves);
- ``/health`` is ``application/health+json``, ``200`` for pass or warn and ``503`` for fail, not
  ``application/json``; ``/metrics`` is Prometheus text.

``conform`` wraps ``app.openapi`` once, when the problem handlers are installed; routes added to
the document later (the raw webhook lanes) are documented right by whoever adds them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

HEALTH = "application/health+json"
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
        "version": {"type": "string"},
        "serviceId": {"type": "string"},
        "description": {"type": "string"},
        "checks": {"type": "object",
                   "additionalProperties": {"type": "array", "items": {"type": "object"}}},
    },
}
_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    content = response.get("content", {})
    return any(media.get("schema", {}).get("$ref") == _VALIDATION_REF
               for media in content.values())


def conform_schema(schema: dict[str, Any], problem: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` in place (and return it); ``problem`` is the problem ``content``."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.get("responses", {})
            found = responses.get("422")
            if isinstance(found, dict) and _is_fastapi_validation(found):
                del responses["422"]
                responses.setdefault("400", {"description": "The request is malformed: a "
                                             "parameter is missing or not of its type",
                                             "content": problem})
            if path == "/health" and method == "get":
                content = {HEALTH: {"schema": HEALTH_SCHEMA}}
                responses["200"] = {"description": "pass or warn", "content": content}
                responses["503"] = {"description": "fail", "content": content}
            elif path == "/metrics" and method == "get":
                responses["200"] = {"description": "Prometheus text exposition",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}
    components = schema.get("components", {}).get("schemas", {})
    if not _refers(schema.get("paths", {}), _VALIDATION_REF):
        for name in _VALIDATION_SCHEMAS:
            components.pop(name, None)
    return schema


def _refers(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers(v, ref) for v in node)
    return False


def conform(app: FastAPI, problem: dict[str, Any]) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return conform_schema(build(), problem)

    app.openapi = openapi  # type: ignore[method-assign]
