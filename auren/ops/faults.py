"""Circuit-breaker verification and bad input under load.

1. **Malformed burst**: requests that are wrong in every way a client can be wrong (bad
   signature, no signature, broken JSON under a valid signature, a declared body over the cap,
   a compressed body, an unknown provider, a wrong method) must each get a 4xx — never a 5xx
   or a hang — and must not open any circuit breaker (a client's mistake says nothing about a
   dependency).
2. **Dependency faults** (full stack, servers started by ``auren infra``): each configured
   dependency is made to fail (paused with SIGSTOP, or killed and restarted) while an
   open-model load runs (``mode``: kill = a crash, then a restart; pause = a hung server
   whose connections stay open, the harder case; both). Expected: the bridge's breaker for
   it opens; every answer is a 2xx or a 503 with ``Retry-After`` (never another 5xx, never
   a timeout); after the dependency is back the breaker goes half-open and closes; the
   reconciliation shows 0 lost.

The breaker states are read from the bridge's ``/health``: any check entry carrying a
``state`` of closed/open/half_open is a breaker, named by its check key. A bridge that exposes
none cannot have its breakers verified, and the checks say so (n/a with the reason) rather than
guess. Every fault is undone in ``finally`` (and SIGTERM is turned into the same unwinding),
so an interrupted run never leaves a dependency stopped.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from auren.ops import loadgen, workloads
from auren.ops.health import FAIL, NA, PASS
from auren.ops.target import Target
from auren.providers.native import decode_whsec

BREAKER_STATES = ("closed", "open", "half_open")
DEPENDENCIES = ("kafka", "postgres", "redis")


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
        return not any(c.status == FAIL for c in self.checks)

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
def _sigterm_unwinds() -> Iterator[None]:
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


def dependency_faults(target: Target, *, fault_s: float = 8.0, recover_s: float = 30.0,
                      rate: float = 40.0, mode: str = "kill", unaffected_ms: float = 500.0
                      ) -> FaultsResult:
    """Each configured dependency failed in turn under load (see the module docstring).

    A breaker that stays closed passes only when the fault did not touch the webhooks at all
    (every answer 2xx, p99 within ``unaffected_ms``, the webhook SLA): a dependency off the
    webhook path (PostgreSQL behind Kafka) gives its breaker nothing to trip on.
    """
    result = FaultsResult()
    name = "dependency faults: breakers open, shed with 503 + Retry-After, then close"
    if target.embedded:
        result.checks.append(FaultCheck(name, NA, "embedded mode has no external "
                                        "dependency and the embedded bridge no circuit "
                                        "breaker; run against the full stack (auren infra up)"))
        return result
    health = asyncio.run(_health_once(target.urls["bridge"]))
    states = breaker_states(health)
    if not states:
        result.checks.append(FaultCheck(name, NA, "the bridge's /health exposes no circuit "
                                        "breaker state, so breakers cannot be verified"))
        return result
    from auren import infra
    from auren.infra.base import InfraConfig

    cfg = InfraConfig.from_settings(target.settings)
    for dependency in _configured(target):
        if infra.running_pid(cfg, dependency) is None:
            result.checks.append(FaultCheck(f"{dependency} fault", NA,
                                            f"{dependency} was not started by `auren infra`: "
                                            "the toolkit only stops processes it can identify"))
            continue
        breaker = next((b for b in states if dependency in b.lower()), None)
        if breaker is None:
            result.checks.append(FaultCheck(f"{dependency} fault", NA,
                                            f"no breaker named after {dependency} in /health "
                                            f"({', '.join(states)})"))
            continue
        for how in (("kill", "pause") if mode == "both" else (mode,)):
            check, step = _one_fault(target, cfg, dependency, breaker, fault_s=fault_s,
                                     recover_s=recover_s, rate=rate, mode=how,
                                     unaffected_ms=unaffected_ms)
            result.checks.append(check)
            result.steps.append(step)
    return result


async def _health_once(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
        return await _health(client, url)


def _one_fault(target: Target, cfg: Any, dependency: str, breaker: str, *, fault_s: float,
               recover_s: float, rate: float, mode: str, unaffected_ms: float
               ) -> tuple[FaultCheck, loadgen.StepResult]:
    from auren import infra

    seen: list[tuple[float, str]] = []
    recovered = asyncio.Event()  # the breaker was open and is closed again
    inject: Callable[[], object] = (lambda: infra.pause_server(cfg, dependency)) \
        if mode == "pause" else (lambda: infra.kill_server(cfg, dependency))
    undo: Callable[[], object] = (lambda: infra.resume_server(cfg, dependency)) \
        if mode == "pause" else (lambda: infra.restart_server(cfg, dependency))
    secret = target.settings.standard_webhook_secret[0].get_secret_value()
    bridge = target.urls["bridge"]
    duration = fault_s + recover_s

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
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        load = asyncio.create_task(loadgen.run_open(
            bridge, workloads.webhooks(bridge, secret), rate=rate, duration_s=duration,
            connections=32, timeout_s=10.0, label=f"{dependency} {mode}"))
        injected = False
        try:
            await asyncio.sleep(1.0)
            injected = True  # before: a fault half-applied when inject fails is undone too
            await asyncio.to_thread(inject)
            await asyncio.sleep(fault_s)
        finally:
            if injected:
                await asyncio.to_thread(undo)
        step = await load
        # Let the breaker finish recovering after the load ended, boundedly.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recovered.wait(), recover_s)
        stop.set()
        await watcher
        return step

    with _sigterm_unwinds():
        step = asyncio.run(scenario())
    step.workload = "webhooks"
    path = [state for _, state in seen]
    problems = []
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
    detail = (f"{mode} {dependency} {fault_s:g} s under {rate:g} req/s: breaker "
              f"{' → '.join(path) or 'not seen'}; statuses "
              f"{dict(sorted(step.statuses.items()))}; p99 {p99:.0f} ms")
    if "open" not in path and untouched:
        detail += (f"; webhooks did not depend on {dependency} during the fault (all 2xx, p99 "
                   f"within {unaffected_ms:g} ms), so there was nothing for its breaker to "
                   "trip on")
    name = f"{dependency} {mode}: breaker opens, sheds 503 + Retry-After, then closes"
    return FaultCheck(name, FAIL if problems else PASS,
                      ("; ".join(problems) + f" ({detail})") if problems else detail), step
