"""Full-stack throughput: signed webhooks through bridge → Kafka → sink → PostgreSQL (+ Redis),
every accepted event reconciled in PostgreSQL afterwards.

    python bench/fullstack_throughput.py --runs 3 --duration 10 --connections 100 [--json out]

The stack is real: Kafka (KRaft), PostgreSQL and Redis started by ``auren infra`` on free
loopback ports in a temporary data dir (or, with ``--data-dir DIR``, the stack ``auren infra up
--data-dir DIR`` already runs, ports from ``AUREN_*_PORT``), all on this machine beside the
bridge, the sink and wrk. Each run gets a fresh database, topics, consumer group and Redis
prefix, then:

1. ``auren sink`` and ``auren serve bridge`` start in full mode;
2. wrk sends *unique* native webhooks signed moments before (the toolkit's wrk script, the
   same requests as ``bridge_throughput.py``) at ``--connections`` for ``--duration`` s, while
   the CPU of every process involved is sampled from /proc;
3. the bridge is stopped gracefully (it drains what it admitted), the sink catches up, and
   PostgreSQL is reconciled **by identity** (``auren.ops.reconcile``): every id of every event
   of every request whose 2xx was read must be stored, exactly once, and no id stored that no
   request sent; requests whose answer was never read (in flight when wrk stopped) are counted
   apart and offset nothing. Comparing totals (accepted vs stored) cannot prove "0 lost": a
   request stored without its answer read would hide one that was lost.

Target of the full-stack issue: ≥ 3,000 webhooks/s sustained, 0 errors, p99 < 100 ms, 0 lost.
Figures are medians over ``--runs``. Every process listens on 127.0.0.1 only and is stopped by
its pid.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from auren import infra
from auren.infra import InfraConfig
from auren.infra.base import PG_USER, run_async
from auren.ops import reconcile as by_identity
from auren.settings import Settings

try:
    from bench import bridge_throughput as base
except ImportError:  # run as a script: bench/ itself is on sys.path
    import bridge_throughput as base  # type: ignore[no-redef]

HOST = base.HOST
TARGET_RPS = 3000.0
TARGET_P99_MS = 100.0
# The performance step's targets: the whole stack's CPU per accepted event (every process of
# the stack, from /proc; not wrk, not the rest of the machine), and latency at 100 connections.
TARGET_CPU_US_PER_EVENT = 35.0
TARGET_STEP_P50_MS = 10.0
TARGET_STEP_P99_MS = 30.0
NOT_THE_STACK = ("wrk", "other")
# From this many connections on, the run is an overload test: more webhooks than the bridge
# admits (MAX_CONCURRENT_WEBHOOKS in flight, MAX_QUEUED_WEBHOOKS waiting). Then the only
# answer allowed besides 2xx is 503 (which the bridge's admission sends with Retry-After),
# and the admitted requests' p99 must stay below OVERLOAD_P99_MS.
OVERLOAD_CONNECTIONS = 1000
OVERLOAD_P99_MS = 250.0
DRAIN_TIMEOUT_S = 180.0


# --- the stack --------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            ports.add(int(sock.getsockname()[1]))
    return sorted(ports)


@contextmanager
def stack(data_dir: Path | None, log: Any) -> Iterator[InfraConfig]:
    if data_dir is not None:
        cfg = InfraConfig.from_settings(Settings(), data_dir=data_dir)
        infra.up(cfg, timeout=180, write_env=False)
        yield cfg
        return
    root = Path(tempfile.mkdtemp(prefix="auren-bench-stack-", dir="/var/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as another user and must reach its data dir
    kafka, controller, postgres, redis = _free_ports(4)
    cfg = InfraConfig(data_dir=root / "data", kafka_port=kafka, kafka_controller_port=controller,
                      postgres_port=postgres, redis_port=redis)
    print(f"starting Kafka, PostgreSQL and Redis in {root} ...", file=log, flush=True)
    try:
        infra.up(cfg, timeout=300, write_env=False)
        yield cfg
    finally:
        infra.down(cfg, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _admin(cfg: InfraConfig, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(host=str(infra.postgres_admin_socket(cfg)),
                                     port=cfg.postgres_port, user="postgres",
                                     database="postgres", timeout=10)
        try:
            await conn.execute(statement, timeout=60)
        finally:
            await conn.close(timeout=10)

    run_async(run, 90)


# --- CPU of every process involved ---------------------------------------------------------------


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def _roles(cfg: InfraConfig, bridge: int, sink: int) -> dict[int, str]:
    """pid -> role for every process whose CPU the bench attributes."""
    roles = {bridge: "bridge", sink: "sink"}
    for name in ("kafka", "redis"):
        pid = infra.running_pid(cfg, name)
        if pid:
            roles[pid] = name
    pg_data = cfg.server_dir("postgres") / "data"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres" and \
                    (entry / "cwd").readlink() == pg_data:
                roles[int(entry.name)] = "postgres"
            elif int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == bridge:
                roles[int(entry.name)] = "bridge"  # uvicorn worker processes
        except (OSError, ValueError, IndexError):
            continue
    return roles


def _total_ticks() -> int:
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    return sum(int(v) for v in fields[:3] + fields[5:8])  # user nice system irq softirq steal


class CpuSampler:
    """CPU per role (and everything else on the machine) between start() and stop()."""

    def __init__(self, cfg: InfraConfig, bridge: int, sink: int) -> None:
        self._cfg, self._bridge, self._sink = cfg, bridge, sink
        self._before: dict[int, int] = {}
        self._machine = 0
        self._started = 0.0

    def start(self) -> None:
        self._roles = _roles(self._cfg, self._bridge, self._sink)
        self._before = {pid: t for pid in self._roles if (t := _ticks(pid)) is not None}
        self._machine = _total_ticks()
        self._started = time.monotonic()

    def stop(self, wrk_cpu_s: float) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        tck = os.sysconf("SC_CLK_TCK")
        usage: dict[str, float] = {}
        for pid, role in self._roles.items():
            after = _ticks(pid)
            if after is not None and pid in self._before:
                usage[role] = usage.get(role, 0.0) + (after - self._before[pid]) / tck
        usage["wrk"] = wrk_cpu_s
        machine = (_total_ticks() - self._machine) / tck
        usage["other"] = max(0.0, machine - sum(usage.values()))
        return {role: round(seconds / elapsed * 100, 1) for role, seconds in usage.items()}


# --- one run ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    wrk: base.WrkResult
    reconciliation: by_identity.Reconciliation
    cpu_pct: dict[str, float] = field(default_factory=dict)
    batch_deliveries_mean: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)  # of every answer read
    admitted_ms: dict[str, float] = field(default_factory=dict)  # the 2xx answers' latencies
    no_retry_after_503: int = 0


def _wrk(url: str, args: argparse.Namespace, prefix: Path, answers: Path
         ) -> tuple[base.WrkResult, float, str]:
    # One wrk thread per connection, so that each answer is attributed to its request.
    cmd = ["wrk", f"-t{args.connections}", f"-c{args.connections}", f"-d{args.duration}s",
           "--latency", "-s", str(base.lua_script(prefix.parent)), url, "--", str(prefix),
           str(answers)]
    before = os.times()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120,
                          check=False)
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    wrk_cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    return base.parse_wrk(done.stdout), wrk_cpu, done.stdout


def _batch_mean(bridge_url: str) -> float:
    import httpx

    total = count = 0.0
    for line in httpx.get(bridge_url + "/metrics", timeout=10, trust_env=False).text.splitlines():
        if line.startswith("auren_commit_batch_deliveries_sum "):
            total = float(line.split()[1])
        elif line.startswith("auren_commit_batch_deliveries_count "):
            count = float(line.split()[1])
    return round(total / count, 1) if count else 0.0


def one_run(number: int, cfg: InfraConfig, args: argparse.Namespace, work: Path,
            log: Any) -> RunResult:
    database = f"bench_{uuid.uuid4().hex[:10]}"
    _admin(cfg, f"CREATE DATABASE {database} OWNER {PG_USER}")
    urls = infra.connection_env(cfg)
    url = urls["POSTGRES_URL"].rsplit("/", 1)[0] + "/" + database
    tag = uuid.uuid4().hex[:8]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    data = Path(tempfile.mkdtemp(prefix=f"run-{number}-", dir=work))
    env = base.clean_env(
        AUREN_DATA_DIR=str(data), STANDARD_WEBHOOK_SECRET=secret, POSTGRES_URL=url,
        REDIS_URL=urls["REDIS_URL"], KAFKA_BOOTSTRAP_SERVERS=urls["KAFKA_BOOTSTRAP_SERVERS"],
        KAFKA_EVENTS_TOPIC=f"bench-events-{tag}",
        KAFKA_NOTIFICATIONS_TOPIC=f"bench-notifications-{tag}",
        KAFKA_SINK_GROUP=f"bench-sink-{tag}", KAFKA_PARTITIONS=str(args.partitions),
        REDIS_KEY_PREFIX=f"bench:{tag}:", LOG_LEVEL="WARNING",
        AUREN_ENCRYPTION_KEY=base64.b64encode(secrets.token_bytes(32)).decode())
    python = sys.executable
    with (work / f"sink-{number}.log").open("wb") as sink_log:
        sink = subprocess.Popen([python, "-m", "auren", "sink"], cwd=base.ROOT, env=env,
                                stdout=sink_log, stderr=subprocess.STDOUT)
    try:
        port = base.free_port()
        cmd = [python, "-m", "auren", "serve", "bridge", "--host", HOST, "--port", str(port),
               "--workers", str(args.workers)]
        with base.server(cmd, env=env, ready_url=f"http://{HOST}:{port}/health",
                         log=work / f"bridge-{number}.log") as proc:
            count = args.rate_hint * args.duration
            prefix, answers = work / f"requests-{number}", work / f"answers-{number}"
            step = base.render_requests(prefix, f"http://{HOST}:{port}", secret, count,
                                        args.events_per_webhook, args.connections)
            print(f"run {number}: {args.duration} s of unique signed webhooks at "
                  f"{args.connections} connections ...", file=log, flush=True)
            sampler = CpuSampler(cfg, proc.pid, sink.pid)
            sampler.start()
            wrk, wrk_cpu, output = _wrk(f"http://{HOST}:{port}/webhooks/auren", args, prefix,
                                        answers)
            base.attribute(step, answers, args.connections, output)
            cpu = sampler.stop(wrk_cpu)
            statuses = Counter(o for o in step.ledger.outcomes if o >= 100)
            silent = re.search(r"^AUREN no_retry_after_503 (\d+)$", output, re.M)
            batch_mean = _batch_mean(f"http://{HOST}:{port}")
            base.stop(proc)  # graceful: whatever was admitted is published before the count
        for thread in range(args.connections):
            Path(f"{prefix}.{thread}").unlink(missing_ok=True)
            Path(f"{answers}.{thread}").unlink(missing_ok=True)
        print(f"run {number}: reconciling in PostgreSQL by identity ...", file=log, flush=True)
        # Until every acknowledged id is there and the store holds still (the sink drains).
        reconciliation = base.reconcile(
            step, Settings.model_construct(postgres_url=SecretStr(url)), None,
            wait_s=DRAIN_TIMEOUT_S)
    finally:
        if sink.poll() is None:
            sink.send_signal(signal.SIGTERM)
            try:
                sink.wait(30)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait(10)
        if not args.keep:
            _admin(cfg, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return RunResult(number, wrk, reconciliation, cpu, batch_mean, dict(statuses),
                     step.admitted_ms, int(silent[1]) if silent else -1)


# --- report -----------------------------------------------------------------------------------


def summarize(runs: list[RunResult], args: argparse.Namespace) -> dict[str, Any]:
    def cpu_us_per_event(r: RunResult) -> float:
        events_per_s = r.wrk.rps * args.events_per_webhook
        stack_cores = sum(pct for role, pct in r.cpu_pct.items()
                          if role not in NOT_THE_STACK) / 100
        return stack_cores / events_per_s * 1e6 if events_per_s else 0.0

    roles = sorted({role for r in runs for role in r.cpu_pct})
    median = {
        "cpu_us_per_event": med([cpu_us_per_event(r) for r in runs]),
        "webhooks_per_s": med([r.wrk.rps for r in runs]),
        "events_per_s": med([r.wrk.rps * args.events_per_webhook for r in runs]),
        "p50_ms": med([r.wrk.latency_ms.get("p50", 0.0) for r in runs]),
        "p99_ms": med([r.wrk.latency_ms.get("p99", 0.0) for r in runs]),
        "errors": med([float(r.wrk.errors) for r in runs]),
        "cpu_pct": {role: med([r.cpu_pct.get(role, 0.0) for r in runs]) for role in roles},
        "batch_deliveries_mean": med([r.batch_deliveries_mean for r in runs]),
    }
    median["shed_503"] = med([float(r.statuses.get(503, 0)) for r in runs])
    if args.connections >= OVERLOAD_CONNECTIONS:
        return _overload_report(runs, args, median)
    checks = {
        f">= {TARGET_RPS:,.0f} webhooks/s sustained": median["webhooks_per_s"] >= TARGET_RPS,
        "0 errors (socket errors and non-2xx, all runs)": all(r.wrk.errors == 0 for r in runs),
        f"p99 < {TARGET_P99_MS:.0f} ms at {args.connections} connections":
            median["p99_ms"] < TARGET_P99_MS,
        "0 lost, 0 duplicated by identity: every acknowledged event in PostgreSQL exactly "
        "once (all runs)": all(base.reconciled(r.reconciliation) for r in runs),
        "no request sent twice (all runs)": not any(r.wrk.wrapped for r in runs),
        f"stack CPU <= {TARGET_CPU_US_PER_EVENT:.0f} us per accepted event":
            0 < median["cpu_us_per_event"] <= TARGET_CPU_US_PER_EVENT,
        f"p50 <= {TARGET_STEP_P50_MS:.0f} ms and p99 <= {TARGET_STEP_P99_MS:.0f} ms":
            median["p50_ms"] <= TARGET_STEP_P50_MS and median["p99_ms"] <= TARGET_STEP_P99_MS,
    }
    return {
        "config": _config(args),
        "median": median,
        "runs": _runs(runs),
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {"runs": args.runs, "duration_s": args.duration, "threads": args.connections,
            "connections": args.connections, "workers": args.workers,
            "partitions": args.partitions, "events_per_webhook": args.events_per_webhook,
            "warmup_s": args.warmup, "cpus": os.cpu_count(), "cpu": base._cpu_model(),
            "python": platform.python_version()}


def _runs(runs: list[RunResult]) -> list[dict[str, Any]]:
    return [{"run": r.run, "wrk": asdict(r.wrk), "reconciliation": asdict(r.reconciliation),
             "cpu_pct": r.cpu_pct, "batch_deliveries_mean": r.batch_deliveries_mean,
             "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
             "admitted_ms": r.admitted_ms, "no_retry_after_503": r.no_retry_after_503}
            for r in runs]


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _overload_report(runs: list[RunResult], args: argparse.Namespace,
                     median: dict[str, Any]) -> dict[str, Any]:
    """The checks of an overload run (``OVERLOAD_CONNECTIONS`` or more)."""
    others = {code: n for r in runs for code, n in r.statuses.items()
              if not (200 <= code < 300 or code == 503)}
    # Of the 2xx answers alone, timed by the wrk script: the 503s admission sheds come back at
    # once and, mixed in, would flatter the admitted requests' tail.
    measured = all(r.admitted_ms.get("p99") is not None for r in runs)
    median["admitted_p50_ms"] = med([r.admitted_ms.get("p50", 0.0) for r in runs])
    median["admitted_p99_ms"] = med([r.admitted_ms.get("p99", 0.0) for r in runs]) \
        if measured else None
    checks = {
        "no socket error and no answer but 2xx or 503 (all runs)":
            not others and not any(sum(r.wrk.socket_errors.values()) for r in runs),
        "every 503 carries Retry-After (all runs)":
            all(r.no_retry_after_503 == 0 for r in runs),
        f"p99 of the admitted (2xx) requests < {OVERLOAD_P99_MS:.0f} ms at {args.connections} "
        "connections": measured and median["admitted_p99_ms"] < OVERLOAD_P99_MS,
        "0 lost, 0 duplicated by identity: every acknowledged event in PostgreSQL exactly "
        "once (all runs)": all(base.reconciled(r.reconciliation) for r in runs),
        "no request sent twice (all runs)": not any(r.wrk.wrapped for r in runs),
    }
    return {"config": _config(args), "median": median, "runs": _runs(runs), "checks": checks,
            "other_statuses": {str(k): v for k, v in sorted(others.items())},
            "verdict": "PASS" if all(checks.values()) else "FAIL"}


def print_report(report: dict[str, Any], runs: list[RunResult]) -> None:
    cfg, med = report["config"], report["median"]
    print()
    print(f"AUREN full stack: wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration_s']}s "
          f"--latency, unique signed webhooks of {cfg['events_per_webhook']} events; bridge "
          f"({cfg['workers']} worker(s)) -> Kafka ({cfg['partitions']} partitions) -> sink -> "
          f"PostgreSQL, Redis dedup; all on {cfg['cpus']} CPUs ({cfg['cpu']})")
    print(f"Medians of {cfg['runs']} run(s) after a {cfg['warmup_s']} s warm-up run (not "
          f"counted); CPU in % of one core while wrk ran ('other': the rest of the machine).")
    print()
    roles = list(med["cpu_pct"])
    header = (f"{'run':>3} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'errors':>6} "
              f"{'2xx':>7} {'lost ids':>9} {'batch':>5} " +
              " ".join(f"{role[:8]:>8}" for role in roles) + "  reconciliation")
    print(header)
    print("-" * len(header))
    for r in runs:
        w = r.wrk
        print(f"{r.run:>3} {w.rps:>7.0f} {w.latency_ms.get('p50', 0):>7.2f} "
              f"{w.latency_ms.get('p99', 0):>7.2f} {w.latency_ms.get('p99.9', 0):>7.2f} "
              f"{w.errors:>6} {w.answered_2xx:>7} {base.lost_ids(r.reconciliation):>9} "
              f"{r.batch_deliveries_mean:>5.1f} " +
              " ".join(f"{r.cpu_pct.get(role, 0):>8.0f}" for role in roles) +
              f"  {r.reconciliation.status.upper()}: {r.reconciliation.detail}")
    print("-" * len(header))
    print(f"median: {med['webhooks_per_s']:.0f} webhooks/s = {med['events_per_s']:.0f} events/s, "
          f"p50 {med['p50_ms']:.2f} ms, p99 {med['p99_ms']:.2f} ms, "
          f"{med['batch_deliveries_mean']:.1f} deliveries per Kafka publish")
    print("CPU (% of one core): " + ", ".join(f"{role} {pct:.0f}"
                                              for role, pct in med["cpu_pct"].items()))
    print(f"the stack's CPU per accepted event (all its processes, not wrk): "
          f"{med['cpu_us_per_event']:.1f} us")
    if med.get("admitted_p99_ms") is not None:
        print(f"the admitted (2xx) requests alone: p50 {med['admitted_p50_ms']:.2f} ms, "
              f"p99 {med['admitted_p99_ms']:.2f} ms")
    print("answers by status (all runs): " + ", ".join(
        f"{code} x {n}" for code, n in sorted(sum((Counter(r.statuses) for r in runs),
                                                  Counter()).items())))
    print()
    for check, passed in report["checks"].items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {check}")
    print(f"verdict: {report['verdict']}")


def main(argv: list[str] | None = None) -> int:
    # Five events per webhook, the simulator's typical delivery: the target is in
    # webhooks per second, and heavier webhooks are the harder test of the data plane.
    parser = base.load_parser(__doc__, events_per_webhook=5, rate_hint=12000)
    parser.add_argument("--workers", type=int, default=1, help="bridge worker processes")
    parser.add_argument("--partitions", type=int, default=Settings().kafka_partitions,
                        help="partitions of the bench's topics")
    parser.add_argument("--data-dir", type=Path,
                        help="use the stack `auren infra up --data-dir DIR` runs (ports from "
                             "AUREN_*_PORT) instead of a private one")
    parser.add_argument("--warmup", type=int, default=30,
                        help="seconds of an uncounted first run (0: none): a fresh Kafka JVM "
                             "spends its first seconds compiling, which is not throughput")
    parser.add_argument("--keep", action="store_true", help="keep each run's database")
    args = parser.parse_args(argv)
    base.check_load_args(parser, args)

    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="auren-bench-", dir="/var/tmp") as tmp, \
            stack(args.data_dir, sys.stderr) as cfg:
        if args.warmup:
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            print(f"warm-up: {args.warmup} s through the whole stack, not counted ...",
                  file=sys.stderr, flush=True)
            warmup = one_run(0, cfg, warm, Path(tmp), sys.stderr)
            verdict = warmup.reconciliation.status.upper()
            print(f"warm-up: {warmup.wrk.rps:.0f} webhooks/s, reconciliation {verdict}",
                  file=sys.stderr, flush=True)
        for number in range(1, args.runs + 1):
            runs.append(one_run(number, cfg, args, Path(tmp), sys.stderr))
    report = summarize(runs, args)
    print_report(report, runs)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
