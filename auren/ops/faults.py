"""Circuit-breaker verification, bad input under load, and drills in which things get slow.

1. **Malformed burst**: requests that are wrong in every way a client can be wrong (bad
   signature, no signature, broken JSON under a valid signature, a declared body over the cap,
   a compressed body, an unknown provider, a wrong method) must each get a 4xx — never a 5xx
   or a hang — and must not open any circuit breaker (a client's mistake says nothing about a
   dependency).
2. **Dependency drills** (full stack): each configured dependency is failed in turn while an
   open-model load runs, by every drill asked for (``DRILLS``) that the deployment allows:
   ``kill`` (SIGKILL, then a restart) and ``pause`` (SIGSTOP: hung, connections open) for
   servers started by ``auren infra``; through the fault proxy (``auren.ops.faultproxy``, placed
   by ``auren infra up --fault-proxy`` or ``auren validate --stack full``) ``slow`` (every answer
   delayed by twice the breaker's slow-call bound), ``lossy`` (every connection reset shortly
   after it opens) and ``partition`` (nothing passes, connections stay open). Expected: the
   bridge's breaker for it opens; every answer is a 2xx or a 503 with ``Retry-After`` (never
   another 5xx, never a timeout); after the fault the breaker goes half-open and closes, and
   the load stops once it has. A dependency off the webhook path may leave every answer fast:
   then a closed breaker is right, and the detail says so.
3. **Upstream slow at the gateway** (``upstream``): the link from the gateway to the bridge
   answers later than the gateway's timeout. Expected: 504 problem+json within the timeout,
   NEUROS still answering through the gateway, 2xx again once the link is fast.
4. Every webhook a drill got a 2xx for must be stored exactly once: the drills' load steps are
   reconciled by identity like every other (``loss_check`` for ``auren faults``; ``auren
   validate`` reconciles them with the rest).

The breaker states are read from the bridge's ``/health``: any check entry carrying a
``state`` of closed/open/half_open is a breaker, named by its check key. A bridge that exposes
none cannot have its breakers verified, and the checks say so (n/a with the reason) rather than
guess. Every fault is undone in ``finally`` (and SIGTERM is turned into the same unwinding),
so an interrupted run never leaves a dependency stopped or a toxic in place.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from auren.ops import faultproxy, loadgen, placement, workloads
from auren.ops.health import FAIL, NA, PASS
from auren.ops.target import Target
from auren.providers.native import decode_whsec

BREAKER_STATES = ("closed", "open", "half_open")
DEPENDENCIES = ("kafka", "postgres", "redis")
DRILLS = ("kill", "pause", "slow", "lossy", "partition", "upstream")
NOT_RECONCILED = "not reconciled"
LEAD_S = 1.0  # load before a fault is applied
LOSSY_RESET_MS = 100
GATEWAY_RATE = 5.0  # webhooks/s through the gateway: its hung requests stay within its pool
QUICK_GATEWAY_TIMEOUT_S = 10.0


@dataclass
class FaultCheck:
    name: str
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultsResult:
    checks: list[FaultCheck] = field(default_factory=list)
    steps: list[loadgen.StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status in (FAIL, NOT_RECONCILED) for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.as_dict() for c in self.checks],
                "steps": [s.as_dict() for s in self.steps]}


def breaker_states(health: dict[str, Any]) -> dict[str, str]:
    """Breaker name → state, from a health document's checks (empty when none exposed)."""
    states: dict[str, str] = {}
    for key, entries in (health.get("checks") or {}).items():
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and entry.get("state") in BREAKER_STATES:
                # "breaker:kafka" (the bridge's own keys) or "kafka:breaker" both name kafka.
                parts = [part for part in key.split(":") if part != "breaker"] or [key]
                name = str(entry.get("componentId") or parts[0])
                states[name] = entry["state"]
    return states


async def _health(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        body = (await client.get(url + "/health")).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def malformed_requests(secret: str | None) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(label, method/path, headers, body) of deliberately wrong requests."""
    good_body = orjson.dumps({"type": "biometrics.recorded", "user_id": "fault-user",
                              "events": []})
    out: list[tuple[str, str, dict[str, str], bytes]] = [
        ("no signature", "POST /webhooks/auren", {"content-type": "application/json"},
         good_body),
        ("bad signature", "POST /webhooks/auren",
         {"webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())),
          "webhook-signature": "v1,AAAA", "content-type": "application/json"}, good_body),
        ("stale timestamp", "POST /webhooks/auren",
         {"webhook-id": "msg_y", "webhook-timestamp": "1000000000",
          "webhook-signature": "v1,AAAA", "content-type": "application/json"}, good_body),
        ("declared body over the cap", "POST /webhooks/auren",
         {"content-type": "application/json", "content-length": "99999999"}, b""),
        ("compressed body", "POST /webhooks/auren",
         {"content-type": "application/json", "content-encoding": "gzip"}, b"\x1f\x8b"),
        ("unknown provider", "POST /webhooks/nosuchprovider",
         {"content-type": "application/json"}, good_body),
        ("wrong method", "PUT /webhooks/auren", {}, b""),
    ]
    if secret:
        # Correctly signed garbage: verification passes, parsing must refuse it (4xx).
        key = decode_whsec(secret)
        for label, body in (("signed broken JSON", b"{not json"),
                            ("signed wrong shape", b'{"events": "many"}'),
                            ("signed invalid event", orjson.dumps(
                                {"type": "biometrics.recorded", "user_id": "u",
                                 "events": [{"metric": "hrv_rmssd", "value": "high"}]}))):
            msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
            mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
            out.append((label, "POST /webhooks/auren",
                        {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
                         "webhook-signature": "v1," + base64.b64encode(mac).decode(),
                         "content-type": "application/json"}, body))
    return out


async def malformed_burst(target: Target, *, rounds: int = 20, concurrency: int = 16,
                          timeout_s: float = 5.0) -> FaultCheck:
    name = "malformed burst: every request 4xx, no breaker opens"
    bridge = target.urls["bridge"]
    secrets = target.settings.standard_webhook_secret
    secret = secrets[0].get_secret_value() if secrets else None
    limit = asyncio.Semaphore(concurrency)
    outcomes: dict[str, set[str]] = {}

    host, port = urlsplit(bridge).hostname or "127.0.0.1", urlsplit(bridge).port or 80
    before = breaker_states(await _health_once(bridge))

    async def one(label: str, line: str, headers: dict[str, str], body: bytes) -> None:
        # Raw bytes on a fresh connection: an HTTP client library refuses to send most of
        # these (a Content-Length its body does not have), which is the point of sending them.
        method, path = line.split(" ", 1)
        head = {"Connection": "close", **headers}
        if "content-length" not in {k.lower() for k in head} and (body or method == "POST"):
            head["Content-Length"] = str(len(body))
        raw = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body
        async with limit:
            conn = loadgen.Connection(host, port, timeout_s)
            try:
                status, _ = await conn.request(raw)
                outcome = str(status)
            except loadgen.HTTPError as exc:
                outcome = f"no answer ({exc.kind})"
            finally:
                conn.close()
        outcomes.setdefault(label, set()).add(outcome)

    await asyncio.gather(*(one(*request) for _ in range(rounds)
                           for request in malformed_requests(secret)))
    after = breaker_states(await _health_once(bridge))
    total = rounds * len(malformed_requests(secret))
    bad = {label: sorted(o for o in seen if not (o.isdigit() and 400 <= int(o) < 500))
           for label, seen in outcomes.items()}
    bad = {k: v for k, v in bad.items() if v}
    opened = sorted(n for n, s in after.items() if s != "closed" and before.get(n) != s)
    summary = ", ".join(f"{label} → {'/'.join(sorted(seen))}"
                        for label, seen in sorted(outcomes.items()))
    breakers = (f"breakers {', '.join(f'{n}={s}' for n, s in sorted(after.items()))}"
                if after else "the bridge exposes no circuit breakers (embedded)")
    if bad or opened:
        problems = [f"{k}: {', '.join(v)}" for k, v in bad.items()]
        problems += [f"breaker {n} left closed" for n in opened]
        return FaultCheck(name, FAIL, f"{'; '.join(problems)} ({total} requests; {breakers})")
    return FaultCheck(name, PASS, f"{total} requests: {summary}; {breakers}")


# --- dependency faults -------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM during a fault unwinds like Ctrl-C, so the ``finally`` that undoes it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _configured(target: Target) -> list[str]:
    settings = target.settings
    return [name for name, on in (("kafka", bool(settings.kafka_bootstrap_servers)),
                                  ("postgres", settings.postgres_url is not None),
                                  ("redis", settings.redis_url is not None)) if on]


def parse_drills(text: str) -> list[str]:
    """``kill,slow``, ``both`` (kill and pause) or ``all``: the drills, in a fixed order."""
    wanted: set[str] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            wanted.update(DRILLS)
        elif part == "both":
            wanted.update(("kill", "pause"))
        elif part in DRILLS:
            wanted.add(part)
        else:
            raise ValueError(f"unknown drill {part!r}: one of {', '.join(DRILLS)}, both, all")
    if not wanted:
        raise ValueError("no drill given")
    return [d for d in DRILLS if d in wanted]


def _slow_bound(target: Target, dependency: str) -> float:
    """The breaker's slow-call bound of ``dependency`` (s): a slow drill adds twice it."""
    settings = target.settings
    bound = {"kafka": settings.kafka_slow_call_s, "redis": settings.redis_slow_call_s,
             "postgres": settings.postgres_slow_call_s}[dependency]
    return bound or 1.0


def _proxy(target: Target) -> tuple[faultproxy.Client | None, dict[str, Any], str]:
    """The fault proxy's client and routes, or None and why there is none."""
    url = target.fault_proxy_url or target.settings.auren_fault_proxy_url
    if not url:
        return None, {}, ("no fault proxy in front of it (auren infra up --fault-proxy, or "
                          "AUREN_FAULT_PROXY_URL)")
    client = faultproxy.Client(url)
    try:
        return client, client.routes(), ""
    except (httpx.HTTPError, faultproxy.FaultProxyError) as exc:
        client.close()
        return None, {}, f"the fault proxy at {url} does not answer ({type(exc).__name__})"


@dataclass
class Drill:
    """One fault, how to apply it and how to undo it."""

    name: str
    inject: Callable[[], object]
    undo: Callable[[], object]
    what: str  # for the detail: "kill kafka", "+2000 ms latency on redis", ...


def _proxy_drill(client: faultproxy.Client, route: str, kind: str, target: Target,
                 dependency: str) -> Drill:
    names: list[tuple[str, str]] = []

    def add(toxic: str, stream: str, **attributes: float) -> None:
        names.append((route, client.add_toxic(route, toxic, stream=stream,
                                              name=f"drill_{kind}_{stream}", **attributes)))

    def undo() -> None:
        for route_name, toxic in names:
            with contextlib.suppress(faultproxy.FaultProxyError, httpx.HTTPError):
                client.remove_toxic(route_name, toxic)
        names.clear()

    if kind == "slow":
        latency_ms = 2000 * _slow_bound(target, dependency)
        return Drill(kind, lambda: add("latency", "downstream", latency=latency_ms), undo,
                     f"+{latency_ms:.0f} ms on every answer of {dependency} (twice its "
                     "breaker's slow-call bound)")
    if kind == "lossy":
        return Drill(kind, lambda: add("reset_peer", "downstream", timeout=LOSSY_RESET_MS),
                     undo, f"every connection to {dependency} reset (RST) "
                           f"{LOSSY_RESET_MS} ms after it opens")

    def partition() -> None:
        add("timeout", "upstream", timeout=0)
        add("timeout", "downstream", timeout=0)

    return Drill(kind, partition, undo, f"network partition: nothing passes to or from "
                                        f"{dependency}, connections stay open")


def _infra_drill(cfg: Any, dependency: str, kind: str) -> Drill:
    from auren import infra

    if kind == "pause":
        return Drill(kind, lambda: infra.pause_server(cfg, dependency),
                     lambda: infra.resume_server(cfg, dependency),
                     f"SIGSTOP {dependency} (hung: connections open, nothing answers)")
    return Drill(kind, lambda: infra.kill_server(cfg, dependency),
                 lambda: infra.restart_server(cfg, dependency),
                 f"SIGKILL {dependency}, then a restart")


def dependency_faults(target: Target, *, drills: list[str] | None = None,
                      fault_s: float = 8.0, recover_s: float = 30.0, rate: float = 40.0,
                      unaffected_ms: float = 500.0, quick: bool = False,
                      mode: str | None = None) -> FaultsResult:
    """Each configured dependency failed in turn under load, by every drill asked for that
    this deployment allows (see the module docstring), then the gateway's upstream drill.

    A breaker that stays closed passes only when the fault did not touch the webhooks at all
    (every answer 2xx, p99 within ``unaffected_ms``, the webhook SLA): a dependency off the
    webhook path (PostgreSQL behind Kafka) gives its breaker nothing to trip on.
    """
    chosen = drills or parse_drills(mode or "all")
    result = FaultsResult()
    client, routes, no_proxy = _proxy(target)
    try:
        _dependency_drills(target, result, chosen, client, routes, no_proxy,
                           fault_s=fault_s, recover_s=recover_s, rate=rate,
                           unaffected_ms=unaffected_ms)
        if "upstream" in chosen:
            upstream_drill(target, result, client, routes, no_proxy, fault_s=fault_s,
                           recover_s=recover_s, rate=rate, quick=quick)
    finally:
        if client is not None:
            client.close()
    return result


def _dependency_drills(target: Target, result: FaultsResult, chosen: list[str],
                       client: faultproxy.Client | None, routes: dict[str, Any],
                       no_proxy: str, **timing: float) -> None:
    name = "dependency faults: breakers open, shed with 503 + Retry-After, then close"
    wanted = [d for d in chosen if d != "upstream"]
    if not wanted:
        return
    if target.embedded:
        result.checks.append(FaultCheck(name, NA, "embedded mode has no external "
                                        "dependency and the embedded bridge no circuit "
                                        "breaker; run against the full stack (auren validate "
                                        "--stack full, or auren infra up --fault-proxy)"))
        return
    health = asyncio.run(_health_once(target.urls["bridge"]))
    states = breaker_states(health)
    if not states:
        result.checks.append(FaultCheck(name, NA, "the bridge's /health exposes no circuit "
                                        "breaker state, so breakers cannot be verified"))
        return
    from auren import infra

    cfg = target.infra or placement.infra_config(target.settings)
    for dependency in _configured(target):
        breaker = next((b for b in states if dependency in b.lower()), None)
        for kind in wanted:
            title = f"{dependency} {kind}: breaker opens, sheds 503 + Retry-After, then closes"
            if breaker is None:
                result.checks.append(FaultCheck(title, NA, f"no breaker named after "
                                                f"{dependency} in /health "
                                                f"({', '.join(states)})"))
                continue
            if kind in ("kill", "pause"):
                if infra.running_pid(cfg, dependency) is None:
                    result.checks.append(FaultCheck(
                        title, NA, f"{dependency} was not started by `auren infra`: the "
                                   "toolkit only stops processes it can identify"))
                    continue
                drill = _infra_drill(cfg, dependency, kind)
            else:
                if client is None or dependency not in routes:
                    why = no_proxy or f"the fault proxy has no route {dependency!r}"
                    result.checks.append(FaultCheck(title, NA, f"{dependency} {kind}: {why}"))
                    continue
                drill = _proxy_drill(client, dependency, kind, target, dependency)
            check, step = _one_fault(target, dependency, breaker, drill, title, **timing)
            result.checks.append(check)
            result.steps.append(step)


async def _health_once(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
        return await _health(client, url)


async def _closed(bridge: str, breaker: str, wait_s: float) -> str:
    """Wait (bounded) until ``breaker`` is closed, so each drill starts from a healthy state;
    returns the state seen last."""
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False) as client:
        while True:
            state = breaker_states(await _health(client, bridge)).get(breaker, "?")
            if state == "closed" or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.25)


async def _under_load(load: Awaitable[loadgen.StepResult], drill: Drill, fault_s: float,
                      settle: Callable[[], Awaitable[None]], stop: asyncio.Event
                      ) -> loadgen.StepResult:
    """``drill`` applied for ``fault_s`` while ``load`` runs, always undone; the load stops
    once ``settle`` returns (recovered, or bounded)."""
    task = asyncio.ensure_future(load)
    injected = False
    try:
        await asyncio.sleep(LEAD_S)
        injected = True  # before: a fault half-applied when inject fails is undone too
        await asyncio.to_thread(drill.inject)
        await asyncio.sleep(fault_s)
    finally:
        if injected:
            await asyncio.to_thread(drill.undo)
    await settle()
    stop.set()
    return await task


def _one_fault(target: Target, dependency: str, breaker: str, drill: Drill, name: str, *,
               fault_s: float, recover_s: float, rate: float, unaffected_ms: float
               ) -> tuple[FaultCheck, loadgen.StepResult]:
    seen: list[tuple[float, str]] = []
    recovered = asyncio.Event()  # the breaker was open and is closed again
    secret = target.settings.standard_webhook_secret[0].get_secret_value()
    bridge = target.urls["bridge"]

    async def watch(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False) as client:
            while not stop.is_set():
                state = breaker_states(await _health(client, bridge)).get(breaker, "?")
                if not seen or seen[-1][1] != state:
                    seen.append((time.monotonic(), state))
                if state == "closed" and any(s == "open" for _, s in seen):
                    recovered.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

    async def scenario() -> loadgen.StepResult:
        stop, done = asyncio.Event(), asyncio.Event()
        watcher = asyncio.create_task(watch(done))

        async def settle() -> None:
            # Until the breaker that opened has closed again; one that never opened needs
            # only a moment to show what the fault's end did.
            opened = any(s == "open" for _, s in seen)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recovered.wait(), recover_s if opened else 2.0)
            if not opened and any(s == "open" for _, s in seen):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recovered.wait(), recover_s)

        load = loadgen.run_open(bridge, workloads.webhooks(bridge, secret), rate=rate,
                                duration_s=LEAD_S + fault_s + recover_s, connections=32,
                                timeout_s=10.0, label=f"{dependency} {drill.name}", stop=stop)
        try:
            step = await _under_load(load, drill, fault_s, settle, stop)
        finally:
            done.set()
            await watcher
        return step

    before = asyncio.run(_closed(bridge, breaker, recover_s))
    with sigterm_unwinds():
        step = asyncio.run(scenario())
    step.workload = "webhooks"
    path = [state for _, state in seen]
    problems = []
    if before != "closed":
        problems.append(f"the breaker was {before} before the fault, still recovering from an "
                        f"earlier one after {recover_s:g} s")
    p99 = step.latency_ms.get("p99", 0.0)
    untouched = (not step.errors and step.ok_2xx == step.sent and p99 <= unaffected_ms)
    if "open" not in path and not untouched:
        # Requests suffered (slow, failed or unanswered) and the breaker did not step in.
        problems.append(f"requests suffered (p99 {p99:.0f} ms from the intended send time) "
                        "but the breaker never opened")
    if path and path[-1] != "closed":
        problems.append(f"the breaker ended {path[-1]}, not closed")
    others = {code: n for code, n in step.statuses.items()
              if code >= 500 and code != 503}
    if others:
        problems.append(f"5xx other than 503: {others}")
    if step.no_retry_after_503:
        problems.append(f"{step.no_retry_after_503} 503s without Retry-After")
    if step.errors:
        problems.append(f"requests with no answer: {dict(step.errors)}")
    detail = (f"{drill.what}, {fault_s:g} s under {rate:g} req/s: breaker "
              f"{' → '.join(path) or 'not seen'}; statuses "
              f"{dict(sorted(step.statuses.items()))}; p99 {p99:.0f} ms")
    if "open" not in path and untouched:
        detail += (f"; webhooks did not depend on {dependency} during the fault (all 2xx, p99 "
                   f"within {unaffected_ms:g} ms), so there was nothing for its breaker to "
                   "trip on")
    return FaultCheck(name, FAIL if problems else PASS,
                      ("; ".join(problems) + f" ({detail})") if problems else detail), step


# --- the gateway's upstream gets slow ----------------------------------------------------------


def upstream_drill(target: Target, result: FaultsResult, client: faultproxy.Client | None,
                   routes: dict[str, Any], no_proxy: str, *, fault_s: float,
                   recover_s: float, rate: float, quick: bool = False) -> None:
    """The link from the gateway to the bridge answers later than the gateway's timeout.

    Expected: the gateway answers 504 problem+json within its timeout (never a hang, never
    another 5xx) while NEUROS stays reachable through it, and everything is 2xx again once
    the link is fast. What the bridge stored anyway is reconciled by identity with the rest."""
    name = "gateway upstream slow: 504 problem+json in time, others unaffected, recovers"
    route = placement.GATEWAY_ROUTES["bridge"]
    if client is None or route not in routes:
        why = no_proxy or f"the fault proxy has no route {route!r}"
        result.checks.append(FaultCheck(name, NA, f"between the gateway and the bridge: {why}"))
        return
    timeout_s = target.settings.gateway_timeout_s
    if quick and timeout_s > QUICK_GATEWAY_TIMEOUT_S:
        result.checks.append(FaultCheck(name, NA, f"GATEWAY_TIMEOUT_S is {timeout_s:g} s: "
                                        f"quick runs drill timeouts up to "
                                        f"{QUICK_GATEWAY_TIMEOUT_S:g} s (run without --quick)"))
        return
    latency_ms = 1000 * (timeout_s + 1.0)
    drill = Drill("upstream", lambda: client.add_toxic(route, "latency", latency=latency_ms,
                                                       name="drill_upstream"),
                  lambda: _remove_quietly(client, route, "drill_upstream"),
                  f"+{latency_ms:.0f} ms between the gateway and the bridge (its timeout is "
                  f"{timeout_s:g} s)")
    gateway = target.urls["gateway"]
    secret = target.settings.standard_webhook_secret[0].get_secret_value()
    gateway_rate = max(1.0, min(rate, GATEWAY_RATE))
    probes: dict[str, Any] = {}

    async def probe_during_fault() -> None:
        await asyncio.sleep(LEAD_S + 0.5)
        async with httpx.AsyncClient(timeout=timeout_s + 10, trust_env=False) as http:
            began = time.perf_counter()
            try:
                response = await http.get(gateway + "/api/bridge/health")
                probes["bridge"] = (response.status_code,
                                    response.headers.get("content-type", ""),
                                    time.perf_counter() - began)
            except httpx.HTTPError as exc:
                probes["bridge"] = (type(exc).__name__, "", time.perf_counter() - began)

    async def isolation_during_fault() -> None:
        await asyncio.sleep(LEAD_S + 0.5)
        began = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                response = await http.get(gateway + "/api/neuros/health")
            probes["neuros"] = (response.status_code, time.perf_counter() - began)
        except httpx.HTTPError as exc:
            probes["neuros"] = (type(exc).__name__, time.perf_counter() - began)

    async def recovery() -> None:
        deadline = time.monotonic() + recover_s
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    began = time.perf_counter()
                    response = await http.get(gateway + "/api/bridge/health")
                    if response.status_code == 200:
                        probes["recovered_s"] = time.perf_counter() - began
                        return
                await asyncio.sleep(0.25)

    async def scenario() -> loadgen.StepResult:
        stop = asyncio.Event()
        path = "/api/bridge/webhooks/auren"
        load = loadgen.run_open(gateway, workloads.webhooks(gateway, secret, path=path),
                                rate=gateway_rate,
                                duration_s=LEAD_S + fault_s + timeout_s + recover_s,
                                connections=64, timeout_s=timeout_s + 10.0,
                                label="gateway upstream slow", stop=stop)
        side = [asyncio.create_task(probe_during_fault()),
                asyncio.create_task(isolation_during_fault())]

        async def settle() -> None:
            await asyncio.gather(*side)
            await asyncio.sleep(timeout_s + 1.0)  # the last slowed requests end in 504
            await recovery()

        return await _under_load(load, drill, fault_s, settle, stop)

    with sigterm_unwinds():
        step = asyncio.run(scenario())
    step.workload = "webhooks"
    problems = []
    bridge = probes.get("bridge")
    if bridge is None or bridge[0] != 504 or "problem+json" not in bridge[1]:
        problems.append(f"a request through the slowed link got {bridge and bridge[:2]}, not "
                        "504 application/problem+json")
    elif bridge[2] > timeout_s + 2.0:
        problems.append(f"the 504 took {bridge[2]:.1f} s, beyond the gateway's timeout "
                        f"({timeout_s:g} s)")
    others = {code: n for code, n in step.statuses.items()
              if code >= 400 and code not in (504, 503)}
    if others:
        problems.append(f"answers other than 2xx or 504: {others}")
    if step.errors:
        problems.append(f"requests with no answer from the gateway: {dict(step.errors)}")
    if 504 not in step.statuses:
        problems.append("no webhook through the slowed link was answered 504")
    neuros = probes.get("neuros")
    if "gateway-neuros" in routes and (neuros is None or neuros[0] != 200 or neuros[1] > 1.0):
        problems.append(f"NEUROS through the gateway during the fault: {neuros} (expected 200 "
                        "within 1 s: one slow upstream must not hold up the others)")
    if "recovered_s" not in probes:
        problems.append(f"the bridge was not reachable through the gateway again within "
                        f"{recover_s:g} s after the fault")
    detail = (f"{drill.what}, {fault_s:g} s under {gateway_rate:g} webhooks/s through the "
              f"gateway: statuses {dict(sorted(step.statuses.items()))}; probe "
              f"{bridge[0] if bridge else '-'} in {bridge[2] if bridge else 0:.1f} s; NEUROS "
              f"{neuros[0] if neuros else '-'} in {neuros[1] if neuros else 0:.2f} s; "
              f"{'recovered' if 'recovered_s' in probes else 'not recovered'}")
    result.checks.append(FaultCheck(name, FAIL if problems else PASS,
                                    ("; ".join(problems) + f" ({detail})") if problems
                                    else detail))
    result.steps.append(step)


def _remove_quietly(client: faultproxy.Client, route: str, name: str) -> None:
    with contextlib.suppress(faultproxy.FaultProxyError, httpx.HTTPError):
        client.remove_toxic(route, name)


# --- no loss during the drills -----------------------------------------------------------------


def loss_check(target: Target, steps: list[loadgen.StepResult], *, enabled: bool = True
               ) -> FaultCheck | None:
    """Every webhook the drills' load got a 2xx for is in the store exactly once (by id)."""
    from auren.ops import reconcile

    if not steps:
        return None
    name = "no loss during the drills (by identity)"
    if not enabled:  # opted out: said, and not counted as a pass of the loss check
        return FaultCheck(name, NA, reconcile.skipped("--no-reconcile").detail)
    recon = asyncio.run(reconcile.reconcile(target, steps))
    status = {reconcile.PASS: PASS, reconcile.FAIL: FAIL}.get(recon.status, NOT_RECONCILED)
    return FaultCheck(name, status, recon.detail)
