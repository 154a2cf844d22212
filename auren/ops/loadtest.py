"""Load phases over the engines: a measured step, a ramp with its breaking point, and
``auren loadtest`` itself (:func:`run`): the steps, then the reconciliation by identity of
every webhook against the store (``auren.ops.reconcile``).

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

from auren.ops import deps, loadgen, reconcile, sla, workloads, wrk
from auren.ops.loadgen import RequestFactory, StepResult
from auren.ops.reconcile import Reconciliation
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
    result.service = step.service
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


async def kafka_baseline(target: Target) -> int | str | None:
    """The Kafka topic's offsets before the load (full stack), for the records-appended line."""
    if not target.settings.kafka_bootstrap_servers:
        return None
    try:
        return await deps.kafka_offsets(target.settings)
    except deps.ProbeFailed as exc:
        return str(exc)


# --- `auren loadtest`: one step or a ramp, then the reconciliation ------------------------------


ENDPOINTS = {"webhooks": ("webhooks", "/webhooks/auren"), "chat": ("chat", "/chat"),
             "health": ("get", "/health")}


@dataclass
class Plan:
    """What ``auren loadtest`` runs, parsed and checked by the CLI."""

    endpoint: str = "webhooks"  # webhooks | chat | health
    service: str | None = None  # default: bridge (webhooks, health), neuros (chat)
    model: str = "closed"
    connections: int = 100
    rate: float = 200.0
    duration_s: float = 30.0
    levels: list[float] | None = None  # a ramp
    engine: str = "auto"
    timeout_s: float = 10.0
    reconcile: bool = True  # False: --no-reconcile, said in the verdict


@dataclass
class Outcome:
    target: str
    row: SLARow
    steps: list[StepResult]
    verdicts: list[Any]
    ramp: Ramp | None
    reconciliation: Reconciliation
    samples: dict[str, Any]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a check failed (loss, SLA, not reconciled), 3 the generator's limit."""
        if self.reconciliation.blocks_pass:
            return 1
        if self.ramp is None:
            status = self.verdicts[0].status
            return 0 if status == "pass" else 3 if status == "invalid" else 1
        return 0

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "sla": self.row.as_dict(),
                "steps": [s.as_dict() for s in self.steps],
                "verdicts": [v.as_dict() for v in self.verdicts],
                "ramp": self.ramp.as_dict() if self.ramp else None,
                "reconciliation": self.reconciliation.as_dict(), "samples": self.samples}


def run(target: Target, plan: Plan, rows: list[SLARow],
        progress: Progress | None = None) -> Outcome:
    """One step (or a ramp) against ``target`` while its processes are sampled, then every
    webhook reconciled against the store by identity. Raises NoSecret (usage)."""
    workload, path = ENDPOINTS[plan.endpoint]
    service = plan.service or ("neuros" if plan.endpoint == "chat" else "bridge")
    row = next((r for r in rows if r.workload == workload), sla.webhook_row(rows))
    template = Step(service, workload, path, plan.model,
                    float(plan.connections if plan.model == "closed" else plan.rate),
                    plan.duration_s, plan.engine, connections=plan.connections,
                    timeout_s=plan.timeout_s)
    sampler = Sampler(target.pids).start()
    try:
        offsets = asyncio.run(kafka_baseline(target))
        ramp_result: Ramp | None = None
        if plan.levels:
            ramp_result = ramp(target, template, plan.levels, row, sampler, progress)
            steps = ramp_result.steps
        else:
            steps = [run_step(target, template, sampler, progress)]
        if workload != "webhooks":
            recon = Reconciliation(reconcile.NA, detail="only webhooks are reconciled")
        elif not plan.reconcile:
            recon = reconcile.skipped("--no-reconcile")
        else:
            recon = asyncio.run(reconcile.reconcile(target, steps, offsets_before=offsets))
    finally:
        sampler.stop()
    verdicts = [sla.verdict(row, s.latency_ms, s.error_rate, s.invalid, s.invalid_reason)
                for s in steps]
    return Outcome(target.describe(), row, steps, verdicts, ramp_result, recon,
                   sampler.as_dict())
