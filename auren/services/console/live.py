"""What the console shows, read from the services themselves: ``/health`` and ``/metrics``.

One task in the gateway reads every upstream's ``/health`` and ``/metrics`` (and the sink's
``/metrics`` when ``AUREN_SINK_URL`` is set) every ``GATEWAY_CONSOLE_POLL_S`` while someone
watches, every ``IDLE_POLL_S`` otherwise, so the last hour of traffic is always there. Each
round gives:

* **now**: each service's status, uptime, version and mode, its dependencies' checks, the
  breakers, the bridge's admission (in flight, waiting), the spool, the sink's consumer lag,
  dead fetch jobs, and the connection figures the bridge exports (none yet: "no connections
  yet");
* **a traffic point**: webhooks per second by bridge, provider and outcome (from the counters'
  increase since the previous round: 2xx, duplicate, 4xx by status, 503), webhook latency
  percentiles of each bridge and NEUROS's chats per second and latency (from the histograms'
  increase over the last ``LATENCY_WINDOW_S``, interpolated as Prometheus does), kept for an
  hour.

Counters that went down (a restarted service) start again from zero. A service that does not
answer a round leaves gaps, not zeros. With several worker processes, a service's ``/metrics``
is one worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx

from auren.events import iso
from auren.observability import Scrape, histogram_quantile

log = logging.getLogger("auren.console")

HISTORY_S = 3600.0
IDLE_POLL_S = 5.0
LATENCY_WINDOW_S = 10.0
_TIMEOUT_S = 2.0
_RANK = {"pass": 0, "warn": 1, "fail": 2}
# What a 4xx of a webhook means (the bridge's problem types), for the traffic legend.
REASONS = {400: "malformed", 401: "unauthorized", 403: "forbidden", 404: "not configured",
           405: "method", 408: "timeout", 413: "too large", 415: "media type",
           422: "invalid", 429: "rate limited"}
_WEBHOOK_LATENCY = "auren_webhook_latency_seconds"
_CHAT_LATENCY = "auren_neuros_chat_latency_seconds"
# The bridge's figures of connections and fetching, shown as they come (prefixes).
PEOPLE_PREFIXES = ("auren_connections", "auren_coverage", "auren_fetch")


class Upstream(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def url(self) -> str: ...


def outcome(provider: str, status: str) -> str:
    """A webhook answer's outcome: 2xx, duplicate (200: a re-delivery; Withings answers 200 to
    everything), ``4xx <reason>``, 503, 5xx, or gone (the client left first)."""
    code = int(status) if status.isdigit() else 0
    if code == 200 and provider != "withings":
        return "duplicate"
    if 200 <= code < 300:
        return "2xx"
    if code == 503:
        return "503"
    if code == 499:
        return "gone"
    if 400 <= code < 500:
        return f"{code} {REASONS.get(code, 'client error')}"
    return "5xx"


@dataclass
class Reading:
    """One upstream's answers in one round."""

    name: str
    health: dict[str, Any] | None = None
    health_ms: float | None = None
    error: str = ""
    scrape: Scrape | None = None


@dataclass
class _Counters:
    """A source's counters at the previous round, and its histograms over the window."""

    at: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, deque[tuple[float, dict[float, float]]]] = field(default_factory=dict)


K = TypeVar("K", str, float)


def _increase(before: dict[K, float], now: dict[K, float]) -> dict[K, float]:
    """Per key, how much each counter grew; all of ``now`` when any went down (a restart)."""
    if any(now.get(k, 0.0) < v for k, v in before.items()):
        return dict(now)
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in now.items()}


def _health_check(checks: dict[str, Any], key: str) -> dict[str, Any] | None:
    entries = checks.get(key)
    return entries[0] if isinstance(entries, list) and entries and isinstance(
        entries[0], dict) else None


class Live:
    """The polling task, the latest ``now`` document and an hour of traffic points."""

    def __init__(self, upstreams: list[Upstream], clients: dict[str, httpx.AsyncClient], *,
                 poll_s: float, sink_url: str | None = None) -> None:
        self._upstreams = upstreams
        self._clients = clients
        self._sink_url = sink_url.rstrip("/") if sink_url else None
        self._sink_client = httpx.AsyncClient(timeout=_TIMEOUT_S, trust_env=False) \
            if sink_url else None
        self.poll_s = poll_s
        self.now: dict[str, Any] = {"time": None, "overall": "fail", "services": [],
                                    "dependencies": [], "breakers": []}
        self.points: deque[dict[str, Any]] = deque()
        self.scrapes: dict[str, Scrape] = {}
        self.seq = 0
        self.viewers = 0
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._counters: dict[str, _Counters] = {}
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="auren-console-live")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sink_client is not None:
            await self._sink_client.aclose()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """A viewer for the block: rounds every ``poll_s`` (and one at once)."""
        self.viewers += 1
        self._wake.set()
        try:
            yield
        finally:
            self.viewers -= 1

    async def next_round(self, seen: int, timeout_s: float) -> int:
        """Wait until a round newer than ``seen`` is there (or the timeout); its number."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.seq > seen),
                                       timeout_s)
        return self.seq

    async def _loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.poll()
            except Exception:  # one bad round must not end the console's view
                log.exception("console round failed")
            interval = self.poll_s if self.viewers else max(self.poll_s, IDLE_POLL_S)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       max(0.05, interval - (time.monotonic() - began)))

    # --- one round ---------------------------------------------------------------------------

    async def poll(self) -> None:
        readings = await asyncio.gather(*(self._read(u) for u in self._upstreams))
        sink = await self._read_sink()
        at = time.time()
        self.scrapes = {r.name: r.scrape for r in readings if r.scrape is not None}
        self.now = self._now_document(readings, sink, at)
        self.points.append(self._traffic_point(readings, at))
        while self.points and self.points[0]["t"] < at - HISTORY_S:
            self.points.popleft()
        async with self._changed:
            self.seq += 1
            self._changed.notify_all()

    async def _read(self, upstream: Upstream) -> Reading:
        client = self._clients[upstream.name]
        reading = Reading(upstream.name)

        async def health() -> None:
            began = time.perf_counter()
            try:
                response = await client.get(upstream.url + "/health", timeout=_TIMEOUT_S)
                body = response.json()
                reading.health = body if isinstance(body, dict) else None
                if reading.health is None:
                    reading.error = f"/health answered {response.status_code} without JSON"
            except (httpx.HTTPError, ValueError) as exc:
                reading.error = f"unreachable: {type(exc).__name__}"
            reading.health_ms = round((time.perf_counter() - began) * 1000, 1)

        async def metrics() -> None:
            try:
                response = await client.get(upstream.url + "/metrics", timeout=_TIMEOUT_S)
                if response.status_code == 200:
                    reading.scrape = Scrape(response.text)
            except (httpx.HTTPError, ValueError):
                reading.scrape = None

        await asyncio.gather(health(), metrics())
        return reading

    async def _read_sink(self) -> Scrape | None:
        if self._sink_client is None:
            return None
        try:
            response = await self._sink_client.get(f"{self._sink_url}/metrics")
            return Scrape(response.text) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    # --- now ---------------------------------------------------------------------------------

    def _now_document(self, readings: list[Reading], sink: Scrape | None,
                      at: float) -> dict[str, Any]:
        titles = {u.name: u for u in self._upstreams}
        services, dependencies, breakers = [], [], []
        admission: dict[str, Any] | None = None
        spool: dict[str, Any] | None = None
        for reading in readings:
            upstream = titles[reading.name]
            body = reading.health or {}
            found = body.get("checks")
            checks: dict[str, Any] = found if isinstance(found, dict) else {}
            status = str(body.get("status", "fail"))
            status = status if status in _RANK else "fail"
            uptime = _health_check(checks, "uptime")
            services.append({
                "name": reading.name, "title": upstream.title, "url": upstream.url,
                "status": status if reading.health is not None else "fail",
                "response_ms": reading.health_ms,
                "uptime_s": uptime.get("observedValue") if uptime else None,
                "version": body.get("version"), "mode": body.get("mode"),
                "detail": reading.error})
            for key in sorted(checks):
                check = _health_check(checks, key)
                if check is None or key == "uptime":
                    continue
                name = key.split(":", 1)[0]
                if key.startswith("breaker:"):
                    breakers.append({"service": reading.name, "name": key.split(":", 1)[1],
                                     "state": check.get("observedValue"),
                                     "status": check.get("status"),
                                     "window_calls": check.get("windowCalls"),
                                     "window_failures": check.get("windowFailures"),
                                     "in_flight": check.get("inFlight"),
                                     "reason": (check.get("lastTransition") or {}).get(
                                         "reason", "")})
                elif key == "admission:utilization":
                    admission = {"in_flight": check.get("inFlight"),
                                 "waiting": check.get("waiting"), "limit": check.get("limit"),
                                 "rejected": check.get("rejected"),
                                 "utilization_pct": check.get("observedValue")}
                elif key == "spool:records":
                    spool = {"records": check.get("observedValue"),
                             "bytes": check.get("pendingBytes"),
                             "status": check.get("status")}
                else:
                    dependencies.append({"service": reading.name, "name": name,
                                         "status": check.get("status"),
                                         "value": check.get("observedValue"),
                                         "unit": check.get("observedUnit"),
                                         "detail": check.get("output", "")})
        statuses: list[str] = [str(s["status"]) for s in services] or ["fail"]
        bridge = self.scrapes.get("bridge")
        return {
            "time": iso(datetime.fromtimestamp(at, UTC)),
            "overall": max(statuses, key=_RANK.__getitem__),
            "services": services, "dependencies": dependencies, "breakers": breakers,
            "admission": admission, "spool": spool,
            "consumer_lag": sink.value("auren_sink_consumer_lag") if sink else None,
            "fetch_dead": bridge.value("auren_fetch_jobs_dead") if bridge else None,
            "people": self.people(),
        }

    def people(self) -> list[dict[str, Any]]:
        """The bridge's connection and fetch figures, sample by sample (empty: none yet)."""
        bridge = self.scrapes.get("bridge")
        if bridge is None:
            return []
        return [{"metric": name, "labels": labels, "value": value}
                for name, labels, value in bridge.samples
                if name.startswith(PEOPLE_PREFIXES) and not name.endswith("_created")]

    # --- traffic -----------------------------------------------------------------------------

    def _traffic_point(self, readings: list[Reading], at: float) -> dict[str, Any]:
        point: dict[str, Any] = {"t": round(at, 3), "webhooks": {}, "latency": {}}
        for reading in readings:
            scrape = reading.scrape
            if scrape is None:
                continue
            counters = self._counters.setdefault(reading.name, _Counters())
            if reading.name in ("bridge", "legacy"):
                counts = {f"{reading.name}/{provider}/{status}": value for (provider, status),
                          value in scrape.by("auren_webhook_requests_total", "provider",
                                             "status").items()}
                rates = self._rates(counters, counts, at)
                grouped: dict[str, float] = {}
                for key, rate in rates.items():
                    service, provider, status = key.split("/")
                    label = f"{service}/{provider}/{outcome(provider, status)}"
                    grouped[label] = grouped.get(label, 0.0) + rate
                point["webhooks"].update({k: round(v, 2) for k, v in grouped.items()})
                point["latency"][reading.name] = self._percentiles(
                    counters, _WEBHOOK_LATENCY, scrape.buckets(_WEBHOOK_LATENCY), at)
            elif reading.name == "neuros":
                total = sum(scrape.by("auren_neuros_chat_requests_total", "status").values())
                rates = self._rates(counters, {"chats": total}, at)
                point["chats"] = round(rates.get("chats", 0.0), 2) if rates else None
                point["latency"]["neuros"] = self._percentiles(
                    counters, _CHAT_LATENCY, scrape.buckets(_CHAT_LATENCY), at)
            counters.at = at
        return point

    @staticmethod
    def _rates(counters: _Counters, counts: dict[str, float], at: float) -> dict[str, float]:
        """Per second since the previous round ({} on the first one)."""
        elapsed = at - counters.at
        before = counters.counts
        counters.counts = counts
        if not counters.at or elapsed <= 0:
            return {}
        return {k: v / elapsed for k, v in _increase(before, counts).items()}

    @staticmethod
    def _percentiles(counters: _Counters, name: str, buckets: dict[float, float],
                     at: float) -> dict[str, float | None]:
        """p50/p95/p99 in ms of what the histogram recorded over the last window."""
        window = counters.buckets.setdefault(name, deque())
        window.append((at, buckets))
        while len(window) > 1 and window[0][0] < at - LATENCY_WINDOW_S:
            window.popleft()
        grown = _increase(window[0][1], buckets) if len(window) > 1 else {}
        out: dict[str, float | None] = {}
        for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = histogram_quantile(q, grown)
            out[label] = None if value is None else round(1000 * value, 2)
        return out

    def traffic(self) -> dict[str, Any]:
        """The last hour, column by column (``None`` where a round had no figure)."""
        points = list(self.points)
        keys = sorted({k for p in points for k in p["webhooks"]})
        latency_keys = sorted({f"{s}/{q}" for p in points for s, qs in p["latency"].items()
                               for q in qs})
        return {
            "t": [p["t"] for p in points],
            "webhooks": {k: [p["webhooks"].get(k) for p in points] for k in keys},
            "latency": {k: [p["latency"].get(k.split("/")[0], {}).get(k.split("/")[1])
                            for p in points] for k in latency_keys},
            "chats": [p.get("chats") for p in points],
        }
