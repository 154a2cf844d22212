"""The health document every service serves at ``GET /health``, defined once.

``application/health+json`` (the IETF draft's shape): ``status`` is ``pass``, ``warn`` or
``fail`` (HTTP 503 on fail), and ``checks`` holds one entry per dependency, keyed
``<component>:<measurement>``, plus the process's uptime. A dependency whose loss stops the
service fails; one the service works around warns.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from auren import __version__
from auren.adapters.breaker import CircuitBreaker
from auren.errors import AurenError
from auren.events import iso
from auren.services.kernel.responses import json_response

HEALTH = "application/health+json"
PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

Checks = dict[str, list[dict[str, Any]]]


def worst(*statuses: str) -> str:
    return max(statuses, key=_RANK.__getitem__)


def now_text() -> str:
    """The time every check of one document carries."""
    return iso(datetime.now(UTC))


async def round_trip(checks: Checks, key: str, ping: Callable[[], Awaitable[dict[str, Any]]],
                     severity: str, now: str, kind: str = "datastore") -> str:
    """One real round trip to a dependency as the check ``key``; its status: pass, or
    ``severity`` when it failed (the failure's detail goes into ``output``)."""
    try:
        facts = await ping()
    except AurenError as exc:
        checks[key] = [{"componentType": kind, "status": severity, "output": exc.detail,
                        "time": now}]
        return severity
    checks[key] = [{"componentId": facts.get("engine", key.split(":")[0]),
                    "componentType": kind,
                    "observedValue": round(facts["responseTime_ms"], 3),
                    "observedUnit": "ms", "status": PASS, "time": now}]
    return PASS


def breaker_check(checks: Checks, breaker: CircuitBreaker, now: str) -> str:
    """A circuit breaker's state as the check ``breaker:<name>``: warn unless closed."""
    snapshot = breaker.snapshot()
    state = snapshot["state"]
    status = PASS if state == "closed" else WARN
    checks[f"breaker:{breaker.name}"] = [{"componentType": "component", "observedValue": state,
                                          "status": status, "time": now, **snapshot}]
    return status


def health_response(status: str, checks: Checks, *, service_id: str, description: str,
                    started: float, now: str, **extra: Any) -> Response:
    """The document: ``checks`` plus the uptime since ``started`` (epoch seconds); ``extra``
    fields (``mode``, ``llm``) go between the description and the checks."""
    checks["uptime"] = [{"componentType": "system", "observedUnit": "s",
                         "observedValue": round(time.time() - started, 1),
                         "status": PASS, "time": now}]
    body = {"status": status, "version": __version__, "serviceId": service_id,
            "description": description, **extra, "checks": checks}
    return json_response(body, 503 if status == FAIL else 200, HEALTH)
