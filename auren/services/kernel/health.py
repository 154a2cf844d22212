"""The health document every service serves at ``GET /health``, defined once.

``application/health+json`` (the IETF draft's shape): ``status`` is ``pass``, ``warn`` or
``fail`` (HTTP 503 on fail), and ``checks`` holds one entry per dependency, keyed
``<component>:<measurement>``, plus the process's uptime. A dependency whose loss stops the
service fails; one the service works around warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

log = logging.getLogger("auren.health")

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


Probe = Callable[[str], Awaitable[tuple[str, Checks]]]


class ProbeCache:
    """A service's dependency round trips, made in the background every ``interval_s``;
    ``/health`` answers from the latest ones instead of making them itself.

    Why: a round trip is a hop to a thread or a socket and back, and each return to the event
    loop waits behind everything queued there. Under a flood of webhooks, five of them took
    tens of milliseconds, and a load balancer's check would queue behind ingestion work. Read
    from here, ``/health`` is one step of the loop. Each check keeps the ``time`` it was
    observed at, so the answer says how old it is.

    A refresh whose pings hang past their own timeouts means something is stuck: once the
    latest completed refresh is older than ``stale_after_s``, the answer fails with a
    ``health:refresh`` check saying so, rather than repeat old good news.
    """

    def __init__(self, probe: Probe, *, interval_s: float, stale_after_s: float) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._stale_after_s = stale_after_s
        self._latest: tuple[str, Checks] | None = None
        self._completed_at = 0.0  # monotonic
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh(), name="health-probes")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh(self) -> None:
        while True:
            try:
                self._latest = await self._probe(now_text())
                self._completed_at = time.monotonic()
                self._first.set()
            except Exception:  # a probe bug must not end the refreshes
                log.exception("health probes failed")
            await asyncio.sleep(self._interval_s)

    async def read(self, now: str) -> tuple[str, Checks]:
        """The latest round trips' status and checks (a copy: the caller adds its own)."""
        if self._task is None:  # not started (a tool, a test): make them now
            return await self._probe(now)
        if self._latest is None:  # just started: the first refresh is under way
            await self._first.wait()
        assert self._latest is not None  # noqa: S101 - set before _first
        status, checks = self._latest
        checks = dict(checks)
        age = time.monotonic() - self._completed_at
        if age > self._stale_after_s:
            checks["health:refresh"] = [{
                "componentType": "component", "status": FAIL, "time": now,
                "observedValue": round(age, 1), "observedUnit": "s",
                "output": f"the dependency round trips last completed {age:.0f} s ago"}]
            status = FAIL
        return status, checks
