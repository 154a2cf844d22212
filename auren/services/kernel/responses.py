"""The JSON and Prometheus responses every service answers with."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.responses import Response

JSON = "application/json"


def json_response(body: Any, status: int = 200, media_type: str = JSON) -> Response:
    """``body`` as JSON (orjson); None is an empty body."""
    if body is None:
        return Response(status_code=status)
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)


def metrics_response(registry: CollectorRegistry) -> Response:
    """``GET /metrics``: the registry in Prometheus's text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
