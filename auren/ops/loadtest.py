"""Load phases over the engines: a measured step, a ramp with its breaking point, and the
reconciliation of what was answered against what was stored.

A step runs one engine at one load level while the sampler records the server processes, and
counts the ERROR lines the services logged meanwhile. A ramp steps through the given levels
(connections in the closed model, requests/s in the open model) until one breaks the SLA row,
then bisects between the last level that held and the first that broke (``BISECT_STEPS`` at
most). A step whose generator could not keep up is ``invalid``: the ramp stops there and the
breaking point is reported as not found, because the server was not what gave way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auren.ops import deps, loadgen, workloads, wrk
from auren.ops.loadgen import RequestFactory, StepResult
from auren.ops.sampler import Sampler
from auren.ops.sla import SLARow, verdict
from auren.ops.target import Target

BISECT_STEPS = 2
# wrk takes over the closed model from this many connections on (when installed): that is
# where a Python generator's CPU starts to share the machine with the server noticeably.
WRK_MIN_CONNECTIONS = 100
# Pre-signed requests per second of a wrk step: well above what one machine's bridge answers.
WRK_POOL_PER_S = 12_000
SETTLE_S = 0.5
Progress = Callable[[str, float], None]


class NoSecret(ValueError):
    """The webhook workload needs STANDARD_WEBHOOK_SECRET (exit code 2)."""


def factory_for(target: Target, service: str, workload: str, path: str) -> RequestFactory:
    base = target.urls[service]
    if workload == "webhooks":
        secrets = target.settings.standard_webhook_secret
        if not secrets:
            raise NoSecret("webhook load needs STANDARD_WEBHOOK_SECRET (the bridge's native "
                           "route) to sign unique deliveries")
        return workloads.webhooks(base, secrets[0].get_secret_value(), path=path)
    if workload == "chat":
        keys = target.settings.auren_api_keys
        return workloads.chat(base, path, keys[0].get_secret_value() if keys else None)
    return workloads.health(base, path)


@dataclass
class Step:
    """What to run: one engine at one level."""

    service: str
    workload: str
    path: str
    model: str  # closed | open
    level: float  # connections (closed) or requests/s (open)
    duration_s: float
    engine: str = "auto"  # auto | builtin | wrk
    connections: int = 64  # open model: the most requests on the wire
    timeout_s: float = 10.0
    label: str = ""


def _use_wrk(step: Step) -> bool:
    if step.model != "closed" or step.engine == "builtin":
        return False
    if step.engine == "wrk":
        return True
    return wrk.available() and step.level >= WRK_MIN_CONNECTIONS


def run_step(target: Target, step: Step, sampler: Sampler | None = None,
             progress: Progress | None = None) -> StepResult:
    factory = factory_for(target, step.service, step.workload, step.path)
    base = target.urls[step.service]
    label = step.label or (f"{step.model} {step.level:g} "
                           f"{'conn' if step.model == 'closed' else 'req/s'}")
    offsets = target.error_log_offsets()
    start = sampler.mark(label) if sampler is not None else 0.0

    def tick(fraction: float) -> None:
        if progress is not None:
            progress(label, fraction)

    if _use_wrk(step):
        result = wrk.run(base, factory, connections=int(step.level), duration_s=step.duration_s,
                         pool_size=int(WRK_POOL_PER_S * step.duration_s),
                         timeout_s=step.timeout_s, label=label)
    elif step.model == "closed":
        result = asyncio.run(loadgen.run_closed(base, factory, connections=int(step.level),
                                                duration_s=step.duration_s,
                                                timeout_s=step.timeout_s, label=label,
                                                on_progress=tick))
    else:
        result = asyncio.run(loadgen.run_open(base, factory, rate=step.level,
                                              duration_s=step.duration_s,
                                              connections=step.connections,
                                              timeout_s=step.timeout_s, label=label,
                                              on_progress=tick))
    if sampler is not None:
        time.sleep(min(SETTLE_S, sampler.interval_s))  # one more sample inside the window
        result.server = sampler.window(start, sampler.now())
    result.error_lines = target.error_lines_since(offsets)
    result.workload = step.workload
    tick(1.0)
    return result


def holds(result: StepResult, row: SLARow) -> bool:
    return verdict(row, result.latency_ms, result.error_rate, result.invalid).status == "pass"


@dataclass
class Ramp:
    steps: list[StepResult] = field(default_factory=list)
    max_ok_level: float | None = None  # the highest level that held the SLA row
    breaking_level: float | None = None  # the lowest level that broke it
    conclusion: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"max_ok_level": self.max_ok_level, "breaking_level": self.breaking_level,
                "conclusion": self.conclusion, "steps": [s.as_dict() for s in self.steps]}


def ramp(target: Target, template: Step, levels: list[float], row: SLARow,
         sampler: Sampler | None = None, progress: Progress | None = None,
         bisect: bool = True) -> Ramp:
    """Step through ``levels``; bisect between the last that held and the first that broke."""
    out = Ramp()
    unit = "connections" if template.model == "closed" else "req/s"

    def measure(level: float) -> StepResult | None:
        step = Step(**{**template.__dict__, "level": level, "label": ""})
        result = run_step(target, step, sampler, progress)
        out.steps.append(result)
        if result.invalid:
            out.conclusion = (f"stopped at {level:g} {unit}: {result.invalid_reason}; the "
                              "breaking point was not reached by this generator")
            return None
        return result

    for level in levels:
        result = measure(level)
        if result is None:
            return out
        if holds(result, row):
            out.max_ok_level = level
        else:
            out.breaking_level = level
            break
    if out.breaking_level is None:
        out.conclusion = (f"held at every level up to {levels[-1]:g} {unit}: the breaking "
                          "point is above the ramp")
        return out
    low, high = out.max_ok_level, out.breaking_level
    for _ in range(BISECT_STEPS if bisect and low is not None else 0):
        assert low is not None  # noqa: S101 - guarded by the range above
        mid = round((low + high) / 2)
        if mid in (low, high) or high - low <= max(2.0, 0.1 * low):
            break
        result = measure(mid)
        if result is None:
            break
        if holds(result, row):
            low = out.max_ok_level = mid
        else:
            high = out.breaking_level = mid
    out.conclusion = (f"breaks between {out.max_ok_level:g} and {out.breaking_level:g} {unit}"
                      if out.max_ok_level is not None else
                      f"broke already at the first level, {out.breaking_level:g} {unit}")
    out.conclusion += f" ({row.describe()})"
    return out


@dataclass
class Reconciliation:
    status: str  # pass | fail | n/a
    answered_2xx: int = 0
    accepted: int = 0
    stored: int | None = None
    lost: int = 0
    unanswered_stored: int = 0
    kafka_records: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def _stable_count(target: Target, wait_s: float) -> deps.StoreCount:
    """The store count once it stops changing (the full stack's sink writes after the 202)."""
    last = await target.count_store()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = await target.count_store()
        if now == last:
            return now
        last = now
    return last


async def store_baseline(target: Target) -> tuple[deps.StoreCount | str, int | str | None]:
    try:
        count: deps.StoreCount | str = await target.count_store()
    except deps.ProbeFailed as exc:
        count = str(exc)
    offsets: int | str | None = None
    if target.settings.kafka_bootstrap_servers:
        try:
            offsets = await deps.kafka_offsets(target.settings.kafka_bootstrap_servers, 5.0)
        except deps.ProbeFailed as exc:
            offsets = str(exc)
    return count, offsets


async def reconcile(target: Target, before: deps.StoreCount | str, offsets_before: int | str | None,
                    steps: list[StepResult]) -> Reconciliation:
    """Every webhook answered 2xx must be in the store: ``lost`` must be 0.

    Requests that timed out may still have been stored (the server finished after the client
    gave up), so the store may hold *more* than was answered, by at most those requests'
    items; it may never hold less.
    """
    hooks = [s for s in steps if s.workload == "webhooks"]
    answered = sum(s.ok_2xx for s in hooks)
    accepted = sum(s.accepted_items for s in hooks)
    if isinstance(before, str):
        return Reconciliation("n/a", answered, accepted,
                              detail=f"the store cannot be read from here: {before}")
    wait = 2.0 if target.embedded else 30.0
    try:
        after = await _stable_count(target, wait)
    except deps.ProbeFailed as exc:
        return Reconciliation("fail", answered, accepted, detail=f"store unreadable: {exc}")
    stored = after.items - before.items
    lost = max(0, accepted - stored)
    extra = max(0, stored - accepted)
    kafka = None
    if isinstance(offsets_before, int) and target.settings.kafka_bootstrap_servers:
        try:
            kafka = await deps.kafka_offsets(target.settings.kafka_bootstrap_servers, 5.0) - \
                offsets_before
        except deps.ProbeFailed:
            kafka = None
    # wrk abandons what is in flight when its time is up: one request per connection, whose
    # answer nobody reads but which the server may well have stored.
    unanswered = sum(s.errors.get("timeout", 0) + s.errors.get("read", 0)
                     + (s.connections if s.engine == "wrk" else 0) for s in hooks)
    per_request = workloads.EVENTS_PER_WEBHOOK
    problems = []
    if lost:
        problems.append(f"LOST {lost}: {accepted} items answered as accepted, {stored} stored")
    if extra > unanswered * per_request:
        problems.append(f"{extra} items stored without an accepted answer, more than the "
                        f"{unanswered} unanswered requests can explain")
    detail = "; ".join(problems) or (
        f"{accepted} accepted items all stored ({stored} new rows"
        + (f", {extra} from requests whose answer was never read: wrk's in-flight at its "
           "end, or timeouts" if extra else "") + ")")
    if kafka is not None:
        detail += f"; Kafka records appended: {kafka}"
    return Reconciliation("fail" if problems else "pass", answered, accepted, stored, lost,
                          extra, kafka, detail)
