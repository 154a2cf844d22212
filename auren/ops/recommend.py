"""Recommendations derived from the measurements: rules over numbers, never canned text.

Each rule reads the validation run (``report.json``'s shape) and either says something with
the numbers that triggered it or stays silent. The rules, in order:

1. **Lost events** (reconciliation by identity ``lost > 0``, or duplicates): the one finding
   that outranks all others; a run that could not reconcile says that losses were not measured.
2. **First saturated resource** at the first step that broke the webhook SLA (or the heaviest
   step when none broke): the bridge's CPU at ≥ ``CPU_SATURATED_PCT`` of its cores → CPU-bound;
   otherwise 503s shed by admission → the admission limit came first; otherwise latency grew
   with CPU to spare → waiting on the store (commit/fsync), i.e. I/O-bound.
3. **MAX_CONCURRENT_WEBHOOKS** from the knee of the throughput curve: the lowest concurrency
   that reached ``KNEE`` of the best throughput. Beyond it concurrency only queues, so the
   limit should not exceed it; raise the configured one only if it shed 503s below the knee.
4. **Workers**: CPU-bound on one worker with more cores free → one worker per core but one.
5. **SLA row closest to its limit** (least headroom of the baselines).
6. **Tail latency**: p99 more than ``TAIL_RATIO`` x p50 at 100 connections.
7. **ERROR lines** the services logged under load.
8. **Generator limits**: invalid steps mean the ceiling was not measured.
9. **Breakers**: dependency faults not verifiable (embedded) or breakers that never opened.
10. **Health under load**: ``/health`` probed during the stress step with a p99 at or over
    its bound (a load balancer would take a busy, healthy bridge out of rotation), or probes
    that got no 200.
11. **Cost per webhook and sizing**: the CPU each webhook cost at the stress step (the
    bridge's, and every sampled service's together) and what one core takes at that cost.
"""

from __future__ import annotations

from typing import Any

CPU_SATURATED_PCT = 85.0
KNEE = 0.9  # within 10 % of the best throughput counts as "reached the plateau"
TAIL_RATIO = 10.0


def _bridge(step: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = step.get("server", {}).get("bridge", {})
    return found


def _pick_break_step(ramp: dict[str, Any] | None, stress: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
    steps = list(ramp["steps"]) if ramp else []
    if ramp and ramp.get("breaking_level") is not None:
        for step in steps:
            if step["connections"] == ramp["breaking_level"] and not step["invalid"]:
                return dict(step)
    valid = [s for s in steps if not s["invalid"]] + ([stress] if stress else [])
    return max(valid, key=lambda s: s["achieved_rate"], default=None)


def recommendations(run: dict[str, Any]) -> list[str]:
    out: list[str] = []
    perf = run.get("performance", {})
    ramp = run.get("ramp")
    stress = run.get("stress")
    cores = max(1, int(run.get("environment", {}).get("bridge_workers", 1)))
    recon = run.get("reconciliation") or {}

    # 1. lost events (by identity), or none measured
    if recon.get("lost"):
        out.append(f"**Data loss:** {recon['lost']} event ids of "
                   f"{recon.get('lost_requests', '?')} webhooks answered 2xx are not in the "
                   "store. Nothing else in this report matters until that is fixed.")
    if recon.get("duplicated"):
        out.append(f"**Duplicates:** {recon['duplicated']} event ids are stored more than once.")
    if recon.get("status") == "not reconciled":
        out.append("**Losses not measured:** the reconciliation did not run "
                   f"({recon.get('detail', '')}). Point the toolkit at the deployment's store "
                   "(--data-dir, or POSTGRES_URL) to prove that nothing acknowledged was lost.")

    # 2. first saturated resource
    step = _pick_break_step(ramp, stress)
    if step is not None:
        cpu = _bridge(step).get("cpu_peak_pct", 0.0)
        shed = int(step["statuses"].get("503", 0))
        where = f"at {step['connections']} connections ({step['achieved_rate']:.0f} req/s)"
        if cpu >= CPU_SATURATED_PCT * cores:
            out.append(f"**CPU saturated first:** the Enhanced Bridge used {cpu:.0f} % CPU "
                       f"{where} with {cores} worker(s) ({100 * cores} % is all of them).")
        elif shed:
            out.append(f"**Admission limit reached first:** {shed} requests were shed with "
                       f"503 + Retry-After {where} while the bridge's CPU peaked at "
                       f"{cpu:.0f} %: MAX_CONCURRENT_WEBHOOKS/MAX_QUEUED_WEBHOOKS, not the "
                       "machine, set the ceiling.")
        else:
            durable = ("the durable step (Kafka's acknowledgements)"
                       if run.get("mode") == "full stack" else
                       "the store's commit and fsync, i.e. the disk")
            out.append(f"**Latency grew before CPU saturated** {where}: the bridge's CPU "
                       f"peaked at {cpu:.0f} % of {100 * cores} %, so requests were waiting "
                       f"on {durable}: that is the first resource to look at.")

    # 3. MAX_CONCURRENT_WEBHOOKS from the knee of the throughput curve
    knee = _knee(ramp, stress)
    if knee is not None:
        out.append(_concurrency_advice(run, knee, _valid_steps(ramp, stress)))

    # 4. workers
    cpus = int(run.get("environment", {}).get("cpu_count", 1) or 1)
    if step is not None and _bridge(step).get("cpu_peak_pct", 0.0) >= CPU_SATURATED_PCT * cores:
        if cpus > cores:
            workers = cpus - 1 if cpus - 1 > cores else cpus
            why = ("one core left for the other services" if workers < cpus else
                   "every core; the other services and the load generator share them, so "
                   "expect less than a linear gain here")
            out.append(f"**Workers:** the bridge is CPU-bound on {cores} worker(s) and this "
                       f"machine has {cpus} cores: `auren serve bridge --workers {workers}` "
                       f"({why}), or more bridge replicas behind the gateway.")
        else:
            out.append(f"**Workers:** the bridge is CPU-bound and this machine has no core to "
                       f"spare ({cpus}): scale out with more machines, not more workers.")
    elif step is not None:
        out.append(f"**Workers:** the bridge never used a whole core "
                   f"({_bridge(step).get('cpu_peak_pct', 0.0):.0f} % peak), so more workers "
                   "would not help; one worker per service is enough for this load.")

    # 5. SLA closest to its limit
    verdicts = [v for v in run.get("sla", []) if v["status"] != "invalid"]
    if verdicts:
        tight = min(verdicts, key=lambda v: v["headroom"])
        row = tight["row"]
        used_latency = tight["observed_ms"] / row["latency_ms"]
        used_errors = tight["error_rate"] / row["error_rate"] if row["error_rate"] else 0.0
        which = ("latency" if used_latency >= used_errors else "error rate")
        out.append(f"**Closest SLA row:** {row['method']} {row['path']} — "
                   f"p{row['percentile']:g} {tight['observed_ms']:.1f} ms of "
                   f"{row['latency_ms']:g} ms ({used_latency:.0%} used), errors "
                   f"{tight['error_rate']:.3%} of {row['error_rate']:.3%}; its {which} is "
                   "what to watch." + (" It FAILED." if tight["status"] == "fail" else ""))

    # 6. tail latency at 100 connections
    if stress:
        p50, p99 = stress["latency_ms"].get("p50", 0.0), stress["latency_ms"].get("p99", 0.0)
        if p50 and p99 > TAIL_RATIO * p50:
            out.append(f"**Tail latency:** at {stress['connections']} connections p99 is "
                       f"{p99 / p50:.0f}x p50 ({p99:.1f} vs {p50:.1f} ms): look for stalls "
                       "(checkpoints, GC, lock waits) rather than average cost.")

    # 7. ERROR lines
    errors = perf.get("error_log_lines", 0)
    if errors:
        out.append(f"**Logged errors:** the services wrote {errors} ERROR lines during the "
                   "load phases; see the logs listed under Environment.")

    # 8. generator limits
    invalid = [s for s in (ramp or {}).get("steps", []) if s["invalid"]]
    if invalid:
        out.append(f"**Measurement limit:** {len(invalid)} step(s) were invalid "
                   f"({invalid[0]['invalid_reason']}): the server's real ceiling is higher "
                   "than measured; run the generator on another machine or install wrk.")

    # 9. breakers
    faults = run.get("faults") or {}
    for check in faults.get("checks", []):
        if check["status"] == "n/a" and "breaker" in check["name"].lower():
            out.append(f"**Circuit breakers not verified:** {check['detail']}.")
            break
        if check["status"] == "fail":
            out.append(f"**Fault handling:** {check['name']} failed: {check['detail']}.")
    # 10. health under load
    probe = perf.get("health_under_load") or {}
    bound = float(perf.get("health_under_load_bound_ms") or 10.0)
    if probe.get("count") and (probe["p99"] >= bound or probe.get("failures")):
        where = f"{stress['connections']} connections" if stress else "the stress step"
        out.append(f"**Health checks wait behind ingestion:** /health answered in p99 "
                   f"{probe['p99']:.1f} ms (max {probe['max']:.1f} ms, bound {bound:g} ms) at "
                   f"{where}, and {int(probe.get('failures', 0))} of {int(probe['count'])} "
                   "probes got no 200: a load balancer with a short timeout would take a busy "
                   "but healthy bridge out of rotation. Give the bridge headroom (workers, "
                   "replicas) or a longer check timeout.")

    # 11. cost per webhook and sizing
    cost = perf.get("cpu_per_webhook")
    if cost and cost.get("bridge_ms"):
        per_core = 1000.0 / cost["bridge_ms"]
        text = (f"**Cost per webhook:** the bridge used {cost['bridge_ms']:.3f} ms of CPU per "
                f"webhook in {cost['label']} ({cost['bridge_cpu_mean_pct']:.0f} % of a core "
                f"at {cost['achieved_rate']:.0f}/s)")
        if len(cost.get("services", [])) > 1:
            text += (f", and every service process sampled ({', '.join(cost['services'])}) "
                     f"{cost['stack_ms']:.3f} ms together")
        out.append(text + f". At that cost one bridge core takes about {per_core:.0f} "
                   f"webhooks/s ({per_core * 86_400 / 1e6:.0f} million a day if they came "
                   "evenly): size by the busiest minute, not the daily mean (docs/DESIGN.md, "
                   "\"Sizing a deployment\").")
    return out


def _concurrency_advice(run: dict[str, Any],
                        knee: tuple[dict[str, Any], float, dict[str, Any]],
                        steps: list[dict[str, Any]]) -> str:
    at, top, last = knee
    level = at["connections"]
    rate, mean_s = at["achieved_rate"], at["latency_ms"].get("mean", 0.0) / 1000
    if level >= last["connections"]:
        return (f"**MAX_CONCURRENT_WEBHOOKS:** throughput was still at its best ({rate:.0f} "
                f"req/s) at the highest concurrency tried, {level}: no knee yet, so the data "
                f"supports at least {level} concurrent webhooks; extend --ramp to find the "
                "limit.")
    current = run.get("environment", {}).get("max_concurrent_webhooks")
    shed = sum(int(s["statuses"].get("503", 0)) for s in steps if s["connections"] <= level)
    text = (f"**MAX_CONCURRENT_WEBHOOKS:** throughput reached {rate:.0f} req/s ({rate / top:.0%} "
            f"of the best, {top:.0f} req/s) at {level} concurrent webhooks, with "
            f"{rate * mean_s:.0f} in flight by Little's law; beyond that, concurrency only "
            f"queued (p95 {at['latency_ms']['p95']:.0f} ms → {last['latency_ms']['p95']:.0f} ms "
            f"at {last['connections']}). The data supports a limit of at most {level}")
    if current:
        if shed and current < level:
            text += (f"; {shed} requests were shed with 503 at or below that concurrency with "
                     f"the configured {current}: raise it towards {level}")
        elif current > level:
            text += (f"; the configured {current} is above that: {level} would lose no "
                     "throughput and bound the work in flight (the rest waits in the "
                     "admission queue, then gets 503 + Retry-After)")
        else:
            text += (f"; the configured {current} shed nothing up to there: keep it (a higher "
                     "limit only lengthens the queue in front of the durable step)")
    return text + "."


def _valid_steps(ramp: dict[str, Any] | None, stress: dict[str, Any] | None
                 ) -> list[dict[str, Any]]:
    steps = [*(ramp or {}).get("steps", []), *([stress] if stress else [])]
    return sorted((s for s in steps if not s["invalid"] and s["model"] == "closed"),
                  key=lambda s: s["connections"])


def _knee(ramp: dict[str, Any] | None, stress: dict[str, Any] | None
          ) -> tuple[dict[str, Any], float, dict[str, Any]] | None:
    """The first closed-model step within ``KNEE`` of the best throughput, the best
    throughput, and the heaviest step (for the latency it cost to go beyond the knee)."""
    steps = _valid_steps(ramp, stress)
    if len(steps) < 2:
        return None
    top = max(s["achieved_rate"] for s in steps)
    if top <= 0:
        return None
    knee = next(s for s in steps if s["achieved_rate"] >= KNEE * top)
    return dict(knee), float(top), dict(steps[-1])
