"""``auren validate``: every phase of the validation plan in order, and one report.

Phases: health sweep → end-to-end chain → SLA baselines (open model, one per SLA row) → stress
at 100 connections (closed model, like ``wrk -c100``) → progressive ramp with its breaking point
→ the Original Bridge against the Enhanced Bridge (``auren.ops.compare``: the "100x" claim,
measured) → faults → reconciliation by identity of every webhook sent against the store → the
report (``reports/<UTC timestamp>/``). A phase that cannot run is recorded with the reason and
the next one still runs. The overall verdict is FAIL when any check, SLA row or the
reconciliation failed; NOT RECONCILED when nothing failed but the store could not be read, so
that no loss was measured (a run can only PASS with that evidence, unless the user opted out
with ``--no-reconcile``, and then the verdict says so); INVALID when an SLA baseline could not
be judged because the generator could not keep up; PASS otherwise.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from auren import __version__
from auren.ops import (
    compare,
    e2e,
    faults,
    health,
    loadtest,
    recommend,
    reconcile,
    report,
    sla,
    wrk,
)
from auren.ops.loadgen import StepResult
from auren.ops.sampler import Sampler
from auren.ops.target import TITLES, Target

DEFAULT_RAMP = (50.0, 100.0, 200.0, 500.0)
QUICK_RAMP = (25.0, 100.0, 400.0)
STRESS_CONNECTIONS = 100
QUICK_DRILLS = ("kill", "slow", "partition", "upstream")


@dataclass
class Plan:
    quick: bool = False
    sla_rows: list[sla.SLARow] = field(default_factory=list)
    ramp: tuple[float, ...] = DEFAULT_RAMP
    stress_s: float = 30.0
    step_s: float = 10.0
    engine: str = "auto"
    faults: bool = True
    reconcile: bool = True  # False: --no-reconcile, said in the verdict
    compare: bool = True  # the Original against the Enhanced Bridge (auren.ops.compare)

    @classmethod
    def make(cls, *, quick: bool, rows: list[sla.SLARow], ramp: tuple[float, ...] | None,
             engine: str, faults: bool, reconcile: bool = True, compare: bool = True) -> Plan:
        if quick:
            return cls(True, rows, ramp or QUICK_RAMP, 5.0, 3.0, engine, faults, reconcile,
                       compare)
        return cls(False, rows, ramp or DEFAULT_RAMP, 30.0, 10.0, engine, faults, reconcile,
                   compare)

    def sla_duration(self, row: sla.SLARow) -> float:
        return max(3.0, row.duration_s / sla.QUICK_DIVISOR) if self.quick else row.duration_s


Log = Callable[[str], None]


def _area(area: str, rows: list[dict[str, Any]], fallback: str) -> dict[str, Any]:
    if not rows:
        return {"area": area, "status": "n/a", "detail": fallback}
    statuses = [r["status"] for r in rows]
    status = ("fail" if "fail" in statuses else "pass" if "pass" in statuses or
              "warn" in statuses else "n/a")
    detail = "; ".join(f"{r['component']}: {r['status'].upper()}"
                       + (f" ({r['detail']})" if r["status"] != "pass" else "")
                       for r in rows)
    return {"area": area, "status": status, "detail": detail}


def validation_rows(sweep: dict[str, Any], chain: dict[str, Any]) -> list[dict[str, Any]]:
    """The four rows of the plan's System Validation Report, from the sweep and the chain."""
    rows = sweep["rows"]
    services = [r for r in rows if r["component"] in TITLES.values()]
    proxies = [r for r in rows if r["component"].startswith("Gateway →")]
    database = [r for r in rows if r["component"].startswith(("Database", "PostgreSQL"))
                and r["status"] != "n/a"]
    store_step = next((s for s in chain.get("steps", []) if s["name"].startswith("store")),
                      None)
    if store_step is not None:
        database.append({"component": "writes reconcile", "status": store_step["status"],
                         "detail": store_step["detail"]})
    kafka = [r for r in rows if r["component"] == "Kafka"]
    kafka_step = next((s for s in chain.get("steps", []) if s["name"].startswith("Kafka")),
                      None)
    if kafka_step is not None and kafka_step["status"] != "n/a":
        kafka.append({"component": "offsets grew", "status": kafka_step["status"],
                      "detail": kafka_step["detail"]})
    kafka_area = _area("Kafka functionality", [r for r in kafka if r["status"] != "n/a"],
                       kafka[0]["detail"] if kafka else "not checked")
    return [_area("All services", services, "no service checked"),
            _area("Proxy endpoints", proxies, "no gateway"),
            _area("Database connectivity", database, "no store reachable"),
            kafka_area]


def _peak(steps: list[StepResult]) -> dict[str, Any]:
    valid = [s for s in steps if not s.invalid] or steps
    if not valid:
        return {"label": "-", "error_rate": None, "cpu_peak_pct": None, "rss_peak_mb": None,
                "achieved_rate": None}
    peak = max(valid, key=lambda s: (s.connections, s.achieved_rate))
    return {"label": peak.label, "error_rate": peak.error_rate,
            "achieved_rate": round(peak.achieved_rate, 1),
            "cpu_peak_pct": round(sum(v["cpu_peak_pct"] for v in peak.server.values()), 1)
            if peak.server else None,
            "rss_peak_mb": round(sum(v["rss_peak_mb"] for v in peak.server.values()), 1)
            if peak.server else None}


def _cpu_per_webhook(step: StepResult) -> dict[str, Any] | None:
    """The CPU each accepted webhook cost during ``step``, in ms: the bridge's, and every
    sampled service process's together (the whole stack in full mode); None without a CPU
    sample or a rate to divide by."""
    rate = step.achieved_rate
    bridge = step.server.get("bridge") if step.server else None
    if not rate or not bridge or bridge.get("cpu_mean_pct") is None:
        return None
    stack = sum(v.get("cpu_mean_pct") or 0.0 for v in step.server.values())
    # % of a core / webhooks per second * 10 = ms of CPU per webhook.
    return {"label": step.label, "achieved_rate": round(rate, 1),
            "bridge_cpu_mean_pct": bridge["cpu_mean_pct"],
            "bridge_ms": round(10 * bridge["cpu_mean_pct"] / rate, 4),
            "stack_ms": round(10 * stack / rate, 4), "services": sorted(step.server)}


def run_validation(target: Target, plan: Plan, *, log: Log,
                   progress: loadtest.Progress | None = None) -> dict[str, Any]:
    started = time.monotonic()
    phases: list[dict[str, Any]] = []
    row = sla.webhook_row(plan.sla_rows)

    def phase(name: str) -> Callable[[str], None]:
        begun = time.monotonic()
        log(f"phase: {name} ...")

        def done(status: str) -> None:
            phases.append({"name": name, "status": status,
                           "seconds": round(time.monotonic() - begun, 1)})
            log(f"phase: {name}: {status.upper()}")

        return done

    done = phase("health sweep")
    sweep = asyncio.run(health.sweep(target))
    done("pass" if sweep.ok else "fail")

    done = phase("end-to-end chain")
    chain = asyncio.run(e2e.run_e2e(target))
    done("pass" if chain.ok else "fail")

    sampler = Sampler(target.pids).start()
    offsets = asyncio.run(loadtest.kafka_baseline(target))
    load_steps: list[StepResult] = []
    try:
        done = phase("SLA baselines")
        verdicts = []
        for sla_row in plan.sla_rows:
            step = loadtest.Step(sla_row.service, sla_row.workload, sla_row.path, "open",
                                 sla_row.rate, plan.sla_duration(sla_row), "builtin",
                                 connections=64, label=f"SLA {sla_row.name} "
                                                        f"{sla_row.rate:g}/s")
            result = loadtest.run_step(target, step, sampler, progress)
            load_steps.append(result)
            verdicts.append(sla.verdict(sla_row, result.latency_ms, result.error_rate,
                                        result.invalid, result.invalid_reason))
        statuses = {v.status for v in verdicts}
        done("fail" if "fail" in statuses else "invalid" if "invalid" in statuses else "pass")

        done = phase(f"stress: {STRESS_CONNECTIONS} connections")
        # What a load balancer's health check sees while the webhooks saturate the bridge.
        with health.LoadBalancerProbe(target.urls["bridge"] + "/health") as probe:
            stress = loadtest.run_step(target, loadtest.Step(
                "bridge", "webhooks", row.path, "closed", STRESS_CONNECTIONS, plan.stress_s,
                plan.engine, label=f"stress {STRESS_CONNECTIONS} conn"), sampler, progress)
        load_steps.append(stress)
        stress_holds = loadtest.holds(stress, row)
        done("pass" if stress_holds else "invalid" if stress.invalid else "fail")

        done = phase("progressive ramp")
        ramp = loadtest.ramp(target, loadtest.Step("bridge", "webhooks", row.path, "closed",
                                                   plan.ramp[0], plan.step_s, plan.engine),
                             list(plan.ramp), row, sampler, progress)
        load_steps.extend(ramp.steps)
        done("pass" if ramp.steps and not all(s.invalid for s in ramp.steps) else "invalid")

        comparison = _compare(target, plan, row, sampler, progress, phase)
        if comparison is not None:
            load_steps.extend(comparison.steps)

        fault_result = faults.FaultsResult()
        if plan.faults:
            done = phase("faults")
            fault_result.checks.append(asyncio.run(faults.malformed_burst(target)))
            # Quick: a crash, a slow and a cut-off dependency, and a slow gateway upstream;
            # full: every drill. Their load steps are reconciled with all the others.
            dependency = faults.dependency_faults(
                target, unaffected_ms=row.latency_ms, quick=plan.quick,
                drills=list(QUICK_DRILLS if plan.quick else faults.DRILLS),
                fault_s=3.0 if plan.quick else 8.0)
            fault_result.checks.extend(dependency.checks)
            fault_result.steps.extend(dependency.steps)
            load_steps.extend(dependency.steps)
            done("pass" if fault_result.ok else "fail")

        done = phase("reconciliation")
        if plan.reconcile:
            recon = asyncio.run(reconcile.reconcile(target, load_steps,
                                                    offsets_before=offsets))
        else:
            recon = reconcile.skipped("--no-reconcile")
        done(recon.status)
    finally:
        sampler.stop()

    error_lines = sum(sum(s.error_lines.values()) for s in load_steps)
    failed = (not sweep.ok or not chain.ok or any(v.status == "fail" for v in verdicts)
              or recon.status == reconcile.FAIL or not fault_result.ok)
    verdict = ("FAIL" if failed else "NOT RECONCILED" if recon.blocks_pass
               else "INVALID" if any(v.status == "invalid" for v in verdicts) else "PASS")
    verdict_note = ""
    if verdict == "NOT RECONCILED":
        verdict_note = ("no loss was measured: the store could not be read, so this run "
                        "cannot pass (" + recon.detail.removeprefix("NOT RECONCILED: ") + ")")
    elif recon.opted_out:
        verdict_note = ("not reconciled (--no-reconcile): no loss was measured, the verdict "
                        "covers everything else")
    at_100 = stress.latency_ms
    # The highest concurrency that held: the ramp's, or the stress step's when the ramp did
    # not break below it.
    held = [level for level in (ramp.max_ok_level,) if level is not None]
    if stress_holds and (ramp.breaking_level is None or ramp.breaking_level > STRESS_CONNECTIONS):
        held.append(float(STRESS_CONNECTIONS))
    max_ok = max(held) if held else None
    note = ("" if ramp.breaking_level is not None or max_ok is None else
            f"(held at every level tried; the ceiling is above {max_ok:g})")
    if any(s.invalid for s in ramp.steps):
        note = "(the generator reached its limit first: a lower bound)"
    settings = target.settings
    run: dict[str, Any] = {
        "title": "AUREN System Validation Report",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "target": target.describe(),
        "mode": target.mode,
        "verdict": verdict,
        "verdict_note": verdict_note,
        "validation": validation_rows(sweep.as_dict(), chain.as_dict()),
        "performance": {
            "max_concurrent_webhooks": int(max_ok) if max_ok is not None else None,
            "max_concurrent_note": note,
            "at_100": {"connections": STRESS_CONNECTIONS, "mean": at_100.get("mean"),
                       "p95": at_100.get("p95"), "p99": at_100.get("p99"),
                       "engine": stress.engine},
            "peak": _peak([*ramp.steps, stress]),
            "events_lost": recon.lost,  # None: not reconciled
            "events_duplicated": recon.duplicated,
            "error_log_lines": error_lines,
            "stress_holds": stress_holds,
            # /health probed every 0.1 s during the stress step ({} when none answered).
            "health_under_load": probe.summary(),
            "health_under_load_bound_ms": health.UNDER_LOAD_P99_MS,
            "cpu_per_webhook": _cpu_per_webhook(stress),
        },
        "health": sweep.as_dict(),
        "e2e": chain.as_dict(),
        "sla": [v.as_dict() for v in verdicts],
        "webhook_sla": row.as_dict(),
        "stress": stress.as_dict(),
        "ramp": ramp.as_dict(),
        "load_steps": [s.as_dict() for s in load_steps],
        "faults": fault_result.as_dict() if plan.faults else None,
        "comparison": comparison.as_dict() if comparison is not None else None,
        "reconciliation": recon.as_dict(),
        "samples": sampler.as_dict(),
        "phases": phases,
        "environment": {
            "auren": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count() or 1,
            "bridge_workers": bridge_workers(target.pids.get("bridge")),
            "max_concurrent_webhooks": settings.max_concurrent_webhooks,
            "wrk": shutil.which("wrk") or "not installed (built-in engine only)",
            "closed-model engine at >= 100 connections": "wrk" if wrk.available()
            and plan.engine != "builtin" else "built-in",
            "urls": ", ".join(f"{k}={v}" for k, v in target.urls.items()),
            "logs": ", ".join(str(p) for p in target.log_paths.values()) or "-",
            "data_dir": str(target.data_dir or "-"),
            "duration_s": round(time.monotonic() - started, 1),
            "command": " ".join(["auren", *sys.argv[1:]]) if sys.argv else "auren validate",
        },
    }
    # strip the HDR blobs from the per-step copies inside ramp/stress: load_steps keeps them
    for step in (run["stress"], *run["ramp"]["steps"]):
        step.pop("histogram", None)
    run["recommendations"] = recommend.recommendations(run)
    return run


def _compare(target: Target, plan: Plan, row: sla.SLARow, sampler: Sampler,
             progress: loadtest.Progress | None,
             phase: Callable[[str], Callable[[str], None]]) -> compare.Comparison | None:
    """The Original Bridge against the Enhanced Bridge (auren.ops.compare); its webhooks are
    reconciled with every other step's. None (the phase n/a) without an Original Bridge."""
    if not plan.compare:
        return None
    done = phase("comparison: Original vs Enhanced Bridge")
    if "legacy" not in target.urls or "bridge" not in target.urls:
        done("n/a")
        return None
    # The same levels as the progressive ramp; quick: no bisection.
    setup = (compare.Plan(50, plan.stress_s, plan.ramp, plan.step_s, 1, plan.engine,
                          bisect=False) if plan.quick else
             compare.Plan(STRESS_CONNECTIONS, plan.stress_s / 3, plan.ramp, plan.step_s / 2, 1,
                          plan.engine))
    result = compare.run(target, setup, row, sampler=sampler, progress=progress,
                         reconcile_steps=False)
    done("pass" if result.ratios()["throughput"] is not None else "n/a")
    return result


def bridge_workers(pid: int | None) -> int:
    """uvicorn worker processes of the bridge (its multiprocessing children), at least 1."""
    if pid is None:
        return 1
    try:
        children = psutil.Process(pid).children()
        workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    except psutil.Error:
        return 1
    return max(1, len(workers))


def report_dir(base: Path) -> Path:
    return base / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_report(run: dict[str, Any], directory: Path) -> dict[str, Path]:
    return report.write(run, directory)
