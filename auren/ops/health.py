"""The health sweep: one row per component, pass / warn / fail / n/a, with response time.

Services are read through their ``application/health+json`` (the document's own ``status`` is
the verdict, ``warn`` stays WARN, and the ``uptime`` check gives the uptime); the gateway is
read directly and through both proxy routes; the data plane is probed directly (``deps``).
A component the deployment does not have is ``n/a`` with the reason, never a failure.
Checks run at most ``CONCURRENCY`` at a time so that response times are not skewed by the
sweep itself (Gatus's lesson).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from auren.ops import deps
from auren.ops.loadgen import exact_summary
from auren.ops.target import TITLES, Target

CONCURRENCY = 3
PASS, WARN, FAIL, NA = "pass", "warn", "fail", "n/a"
# A load balancer's check while the bridge is saturated: how often, and the bound it must meet
# (a check that queues behind ingestion work takes a healthy bridge out of rotation).
PROBE_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 5.0
UNDER_LOAD_P99_MS = 10.0


@dataclass
class Row:
    component: str
    target: str
    status: str
    ms: float | None = None
    uptime_s: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ms"] = None if self.ms is None else round(self.ms, 2)
        return data


@dataclass
class Sweep:
    rows: list[Row]
    mode: str

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "ok": self.ok, "rows": [r.as_dict() for r in self.rows]}


def _uptime(body: dict[str, Any]) -> float | None:
    uptime = (body.get("checks") or {}).get("uptime")
    if isinstance(uptime, list) and uptime and isinstance(uptime[0], dict):
        value = uptime[0].get("observedValue")
        return float(value) if isinstance(value, int | float) else None
    return None


def _failing_checks(body: dict[str, Any]) -> str:
    bad = []
    for key, entries in (body.get("checks") or {}).items():
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and entry.get("status") in (WARN, FAIL):
                bad.append(f"{key}={entry.get('status')}"
                           + (f" ({entry['output']})" if entry.get("output") else ""))
    return "; ".join(bad)


async def http_health(client: httpx.AsyncClient, component: str, url: str) -> Row:
    started = time.perf_counter()
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return Row(component, url, FAIL, None, None, f"unreachable: {type(exc).__name__}")
    ms = (time.perf_counter() - started) * 1000
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        return Row(component, url, FAIL, ms, None,
                   f"HTTP {response.status_code}, not a health document")
    status = str(body["status"]).lower()
    status = {"ok": PASS, "up": PASS, "error": FAIL, "down": FAIL}.get(status, status)
    if status not in (PASS, WARN, FAIL):
        status = FAIL
    if status == PASS and response.status_code >= 400:
        status = FAIL
    detail = _failing_checks(body) or f"HTTP {response.status_code}"
    return Row(component, url, status, ms, _uptime(body), detail)


async def _dependency(component: str, where: str, probe: Callable[[], Awaitable[dict[str, Any]]]
                      ) -> Row:
    try:
        facts = await probe()
    except deps.ProbeFailed as exc:
        return Row(component, where, FAIL, None, None, str(exc))
    detail = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "ms")
    return Row(component, where, PASS, facts["ms"], None, detail or "ok")


async def _na(component: str, why: str) -> Row:
    return Row(component, "-", NA, detail=why)


def _host(url: str) -> str:
    """host:port of a URL, without credentials (report rows must not leak passwords)."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0]


async def _embedded_store(target: Target, timeout_s: float) -> Row:
    started = time.perf_counter()
    try:
        count = await target.count_store(timeout_s)
    except deps.ProbeFailed as exc:
        return Row("Database (SQLite)", str(target.data_dir), FAIL, None, None, str(exc))
    return Row("Database (SQLite)", str(target.data_dir), PASS,
               (time.perf_counter() - started) * 1000, None,
               f"{count.events} events, {count.fetch_jobs} fetch jobs")


# The proxy routes a public deployment (deploy/vercel.json) puts in front of the gateway.
PUBLIC_ROUTES = (("Public → NEUROS", "/api/neuros/health"),
                 ("Public → Enhanced Bridge", "/api/bridge/health"))


async def sweep(target: Target, *, timeout_s: float = 5.0, public_url: str | None = None
                ) -> Sweep:
    """Every row of the sweep, in a fixed order. ``public_url`` (else ``AUREN_PUBLIC_GATEWAY_URL``):
    the public base URL whose proxy routes are probed too."""
    settings = target.settings
    public = (public_url or settings.auren_public_gateway_url or "").rstrip("/")
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(job: Awaitable[Row]) -> Row:
        async with limit:
            return await job

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False) as client:
        jobs: list[Awaitable[Row]] = [
            http_health(client, TITLES[name], target.urls[name] + "/health")
            for name in ("neuros", "legacy", "bridge", "gateway")]
        gateway = target.urls["gateway"]
        jobs += [http_health(client, "Gateway → NEUROS", gateway + "/api/neuros/health"),
                 http_health(client, "Gateway → Enhanced Bridge", gateway + "/api/bridge/health")]
        jobs += [http_health(client, name, public + route) if public
                 else _na(name, "no public URL (AUREN_PUBLIC_GATEWAY_URL or --public)")
                 for name, route in PUBLIC_ROUTES]
        if settings.postgres_url is not None:
            dsn = settings.postgres_url.get_secret_value()
            jobs.append(_dependency("PostgreSQL", _host(dsn),
                                    lambda: deps.postgres_probe(dsn, timeout_s)))
        elif target.data_dir is not None and (target.data_dir / "auren.sqlite3").exists():
            jobs.append(_embedded_store(target, timeout_s))
        else:
            jobs.append(_na("Database (SQLite)", "no SQLite file in --data-dir to read; the "
                                                 "bridges' rows include their store check"))
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            ca_file = settings.redis_ssl_ca_file
            jobs.append(_dependency("Redis", _host(url),
                                    lambda: deps.redis_probe(url, timeout_s, ca_file)))
        if settings.kafka_bootstrap_servers:
            bootstrap = settings.kafka_bootstrap_servers
            jobs.append(_dependency("Kafka", bootstrap,
                                    lambda: deps.kafka_probe(bootstrap, timeout_s,
                                                             deps.kafka_security(settings),
                                                             settings.kafka_events_topic)))
        rows = list(await asyncio.gather(*(bounded(j) for j in jobs)))
    reason = "embedded mode: not part of this deployment"
    if settings.postgres_url is None:
        rows.append(Row("PostgreSQL", "-", NA, detail=f"{reason} (SQLite store)"))
    if settings.redis_url is None:
        rows.append(Row("Redis", "-", NA, detail=f"{reason} (in-process cache)"))
    if not settings.kafka_bootstrap_servers:
        rows.append(Row("Kafka", "-", NA, detail=f"{reason} (no event log)"))
    return Sweep(rows, target.describe())


class LoadBalancerProbe:
    """``GET url`` every ``interval_s`` on a keep-alive connection of its own, from a thread,
    while a load runs: the latencies a load balancer's health check would see then.

    ``with LoadBalancerProbe(url) as probe: <load>``, then ``probe.summary()``. A probe
    without a 200 within ``PROBE_TIMEOUT_S`` counts as a failure.
    """

    def __init__(self, url: str, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.url = url
        self.interval_s = interval_s
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def __enter__(self) -> LoadBalancerProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_S + 5)

    def _run(self) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as client:
            while not self._stop.wait(self.interval_s):
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.failures += not ok

    def summary(self) -> dict[str, float]:
        """count, failures, the percentiles and max in ms; empty when no probe was made."""
        if not self.latencies_ms:
            return {}
        return {"count": len(self.latencies_ms), "failures": self.failures,
                **exact_summary(self.latencies_ms)}
