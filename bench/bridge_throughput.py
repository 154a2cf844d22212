"""Bridge throughput against the server's own ceiling, measured with wrk on loopback.

    python bench/bridge_throughput.py --runs 3 --duration 10 --connections 100 [--json out.json]

Each run measures, back to back on the same machine:

1. **ceiling**: a raw ASGI hello-world (``bench/hello_asgi.py``) served by uvicorn with exactly
   the options of ``auren serve bridge`` (uvloop, httptools, no access log, one worker);
2. **bridge**: ``auren serve bridge`` in a fresh temporary ``AUREN_DATA_DIR`` with a generated
   ``STANDARD_WEBHOOK_SECRET``, driven by wrk (with the toolkit's script, ``auren.ops.wrk``)
   with *unique* webhooks signed moments before wrk starts (so none is absorbed by
   deduplication), then stopped gracefully and reconciled against its SQLite store **by
   identity** (``auren.ops.reconcile``): the ids of the events of every request whose 2xx was
   read must be stored, each exactly once. Totals (accepted vs stored) prove nothing: a
   request wrk abandoned at the end may be stored and would hide a lost one.

wrk runs one thread per connection (``-t`` = ``-c``, for the ceiling too): with one connection
per Lua state the script can write which request each answer belongs to (``auren.ops.wrk``).

The ratio bridge/ceiling is computed within each run, and the reported figures are medians over
``--runs``: a small shared machine is noisy, and only a ratio of two measurements taken moments
apart says something about the application rather than about the machine's mood.

Needs ``wrk`` on PATH and AUREN installed (``pip install -e .``). Every server listens on
127.0.0.1 only; the bench stops exactly the processes it started, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from auren.ops import reconcile as by_identity
from auren.ops import workloads
from auren.ops import wrk as wrk_engine
from auren.ops.health import PROBE_INTERVAL_S, UNDER_LOAD_P99_MS, LoadBalancerProbe
from auren.ops.loadgen import StepResult, new_ledger
from auren.ops.target import Target
from auren.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, by construction: there is no option to change it
# Events in each benchmark webhook (--events-per-webhook); a module default for reconcile().
# One by default: request for request, the same unit of work as the hello-world it is compared
# with. Five events per webhook are five times the durable work per request; run them with
# --events-per-webhook 5 (the figures then say events/s as well).
EVENTS_PER_WEBHOOK = 1
TARGET_RATIO = 0.25
TARGET_P99_MS = 50.0
# /health while the webhooks saturate the bridge: what a load balancer's check waits.
TARGET_HEALTH_P99_MS = UNDER_LOAD_P99_MS
HEALTH_PROBE_INTERVAL_S = PROBE_INTERVAL_S
# Signatures are valid for ±300 s; wrk must finish sending well inside that window.
MAX_DURATION_S = 240
START_TIMEOUT_S = 30.0


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def server(cmd: list[str], *, env: dict[str, str], ready_url: str, log: Path
           ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until the block ends; always stopped (SIGTERM, then SIGKILL) by its pid."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[2:5]} exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=1.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} not ready in {START_TIMEOUT_S:.0f} s:\n"
                                   f"{_tail(log)}")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    # SIGTERM lets uvicorn drain: the bridge commits what it admitted, then closes the store.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def clean_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any AUREN setting, plus ``overrides``: a developer's
    POSTGRES_URL or provider secrets must not change what is measured."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(overrides)
    return env


# --- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50 p75 p90 p99 [p99.9]
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # from the Lua script only
    accepted_events: int = 0
    loaded: int = 0
    wrapped: int = 0
    # CPU the server process used while wrk ran, in % of one core (Linux /proc; else None).
    server_cpu_pct: float | None = None
    server_main_cpu_pct: float | None = None
    commit_batch_mean: float | None = None  # deliveries per group commit (bridge only)
    commit_ms_mean: float | None = None  # time to make one group commit durable

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx

    @property
    def answered_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= code < 300)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> WrkResult:
    """wrk's text report (``--latency``) plus the ``AUREN`` lines of the Lua ``done()``."""
    result = WrkResult()
    if match := re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.M):
        result.requests = int(match[1])
        result.duration_s = float(match[2]) * _UNITS_MS[match[3]] / 1000
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M):
        result.rps = float(match[1])
    distribution = output.partition("Latency Distribution")[2]
    for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", distribution, re.M):
        result.latency_ms[f"p{match[1]}"] = float(match[2]) * _UNITS_MS[match[3]]
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                          output):
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, match.groups()), strict=True))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result.non_2xx_3xx = int(match[1])
    for match in re.finditer(r"^AUREN (\w+) (\S+)(?: (\S+))?$", output, re.M):
        kind, a, b = match[1], match[2], match[3]
        if kind == "status":
            result.statuses[int(a)] = int(b)
        elif kind == "accepted":
            result.accepted_events = int(a)
        elif kind == "latency_us":
            # The --latency text report is the source; done() adds what it lacks (p99.9).
            result.latency_ms.setdefault(a, round(int(b) / 1000, 3))
        elif kind in ("loaded", "wrapped"):
            setattr(result, kind, int(a))
    return result


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float | None:
    """User + system CPU time of ``pid`` (all its threads, or its main thread) so far."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def server_pids(pid: int) -> list[int]:
    """The server process and its children: with ``--workers N`` uvicorn serves from N child
    processes and the parent only supervises them."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return [pid, *children]


def cpu_snapshot(pid: int) -> dict[int, tuple[float, float]]:
    """(all threads, main thread) CPU seconds of each process serving (see server_pids)."""
    out = {}
    for each in server_pids(pid):
        total, main = cpu_seconds(each), cpu_seconds(each, main_thread=True)
        if total is not None and main is not None:
            out[each] = (total, main)
    return out


def run_wrk(url: str, *, server_pid: int, threads: int, connections: int, duration: int,
            script: list[str] | None = None, workers: int = 1) -> tuple[WrkResult, str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", script[0], url, "--", *script[1:]]
    else:
        cmd.append(url)
    before, started = cpu_snapshot(server_pid), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120,
                          check=False)
    after, elapsed = cpu_snapshot(server_pid), time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    common = [pid for pid in after if pid in before]
    if common:
        # Every serving process (the workers too). Includes wrk's start-up and Lua loading,
        # when the server idles: a slight underestimate.
        used = sum(after[pid][0] - before[pid][0] for pid in common)
        result.server_cpu_pct = round(used / elapsed * 100, 1)
        # The busiest event loop thread (a worker's, with --workers): at 100 % that process
        # is CPU-bound on it. The supervising parent of several workers serves nothing.
        loops = [pid for pid in common if pid != server_pid] if workers > 1 else [server_pid]
        loops = loops or [server_pid]
        result.server_main_cpu_pct = round(
            max(after[pid][1] - before[pid][1] for pid in loops) / elapsed * 100, 1)
    return result, done.stdout


# --- requests -------------------------------------------------------------------------------


def lua_script(directory: Path) -> Path:
    """The toolkit's wrk script (``auren.ops.wrk.LUA``) as a file wrk can load."""
    path = directory / "webhooks.lua"
    path.write_text(wrk_engine.LUA)
    return path


def render_requests(prefix: Path, base_url: str, secret: str, count: int,
                    events_per_webhook: int, threads: int) -> StepResult:
    """``count`` unique signed webhooks in wrk's per-thread pool files, and the step whose
    ledger will say what became of each one (the workload knows every id it carries)."""
    factory = workloads.webhooks(base_url, secret, events_per_webhook=events_per_webhook)
    step = StepResult("bench", "closed", "wrk", threads, None, ledger=new_ledger(factory),
                      workload="webhooks")
    requests = factory(count)
    step.ledger.rendered(len(requests))
    wrk_engine.write_pools(prefix, [raw for raw, _items in requests], threads)
    return step


def attribute(step: StepResult, answers: Path, threads: int, output: str) -> None:
    """wrk's answers files into the step's ledger: each answer read, to its request."""
    wrk_engine.fill_ledger(step, answers, threads, len(step.ledger.outcomes), output)


def reconcile(step: StepResult, settings: Settings, data_dir: Path | None, *,
              wait_s: float) -> by_identity.Reconciliation:
    """Every id of every request answered 2xx looked up in the store (SQLite in ``data_dir``,
    or PostgreSQL when ``settings`` name one), by identity: lost, duplicated and unexpected
    ids, and the requests whose answer was never read apart. A store that cannot be read is
    ``not reconciled``, never "0 lost"."""
    target = Target({}, settings, data_dir)
    return asyncio.run(by_identity.reconcile(target, [step], wait_s=wait_s))


def reconciled(result: by_identity.Reconciliation) -> bool:
    return result.status == by_identity.PASS


@dataclass
class RunResult:
    run: int
    ceiling: WrkResult
    bridge: WrkResult
    reconciliation: by_identity.Reconciliation
    generated: int
    generate_s: float
    health_ms: dict[str, float] = field(default_factory=dict)
    floor_ms: dict[str, float] = field(default_factory=dict)  # the probe on the hello-world

    @property
    def ratio(self) -> float:
        return self.bridge.rps / self.ceiling.rps if self.ceiling.rps else 0.0


def commit_stats(metrics_url: str) -> tuple[float | None, float | None]:
    """Mean deliveries per group commit and mean ms per commit, from the bridge's /metrics."""
    try:
        text = httpx.get(metrics_url, timeout=10).text
    except httpx.HTTPError:
        return None, None
    values = dict(re.findall(r"^(auren_commit_\w+_(?:sum|count)) (\S+)$", text, re.M))

    def mean(name: str, scale: float = 1.0) -> float | None:
        count = float(values.get(f"{name}_count", 0))
        return round(float(values[f"{name}_sum"]) / count * scale, 2) if count else None

    return mean("auren_commit_batch_deliveries"), mean("auren_commit_seconds", 1000.0)


def start_profiler(pid: int, args: argparse.Namespace, number: int
                   ) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the bridge while wrk drives it (``--profile``): collapsed stacks.

    Sampling slows the server a little (a few per cent at 100 Hz), so a profiled run's figures
    are for reading the profile, not for quoting.
    """
    if args.profile is None:
        return None
    out = args.profile.with_name(f"{args.profile.stem}-{number}{args.profile.suffix or '.txt'}")
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration",
                             str(args.duration), "--rate", "100", "--format", "raw",
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(number: int, args: argparse.Namespace, work: Path, log: TextIO) -> RunResult:
    python = sys.executable
    # (a) the ceiling
    port = free_port()
    threads = args.connections  # one connection per wrk thread: answers are attributed
    with server([python, "-m", "bench.hello_asgi", "--port", str(port),
                 "--workers", str(args.workers)], env=clean_env(),
                ready_url=f"http://{HOST}:{port}/", log=work / f"hello-{number}.log") as hello:
        print(f"run {number}: ceiling (hello-world) for {args.duration} s ...", file=log,
              flush=True)
        # The same probe against the hello-world while wrk saturates it: the latency of an
        # answer that costs nothing, on this machine at this moment (the floor for /health).
        with LoadBalancerProbe(f"http://{HOST}:{port}/") as floor:
            ceiling, _ = run_wrk(f"http://{HOST}:{port}/", server_pid=hello.pid,
                                 threads=threads, connections=args.connections,
                                 duration=args.duration, workers=args.workers)

    # (b) the bridge, in its own fresh data directory
    data = Path(tempfile.mkdtemp(prefix=f"bridge-{number}-", dir=work))
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_port()
    env = clean_env(AUREN_DATA_DIR=str(data), STANDARD_WEBHOOK_SECRET=secret,
                    **dict(args.setting))
    cmd = [python, "-m", "auren", "serve", "bridge", "--host", HOST, "--port", str(port),
           "--workers", str(args.workers)]
    prefix, answers = work / f"requests-{number}", work / f"answers-{number}"
    with server(cmd, env=env, ready_url=f"http://{HOST}:{port}/health",
                log=(args.log_dir or work) / f"bridge-{number}.log") as proc:
        count = args.rate_hint * args.duration
        started = time.perf_counter()
        step = render_requests(prefix, f"http://{HOST}:{port}", secret, count,
                               args.events_per_webhook, threads)
        generate_s = time.perf_counter() - started
        print(f"run {number}: bridge for {args.duration} s with {count} unique webhooks "
              f"(signed {generate_s:.1f} s before) ...", file=log, flush=True)
        profiler = start_profiler(proc.pid, args, number)
        with LoadBalancerProbe(f"http://{HOST}:{port}/health") as probe:
            bridge, output = run_wrk(f"http://{HOST}:{port}/webhooks/auren",
                                     server_pid=proc.pid, threads=threads,
                                     connections=args.connections, duration=args.duration,
                                     script=[str(lua_script(work)), str(prefix),
                                             str(answers)], workers=args.workers)
        attribute(step, answers, threads, output)
        if profiler is not None:
            profiler.wait(timeout=args.duration + 60)
        bridge.commit_batch_mean, bridge.commit_ms_mean = commit_stats(
            f"http://{HOST}:{port}/metrics")
        stop(proc)  # graceful: whatever was admitted is committed before the count
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"warning: bridge exited with {proc.returncode}", file=log)
    for thread in range(threads):
        Path(f"{prefix}.{thread}").unlink(missing_ok=True)
        Path(f"{answers}.{thread}").unlink(missing_ok=True)
    # Built from nothing but the data dir: the bench's own environment must not choose the
    # store (model_validate would still read it).
    reconciliation = reconcile(step, Settings.model_construct(auren_data_dir=data), data,
                               wait_s=2.0)
    return RunResult(number, ceiling, bridge, reconciliation, count, generate_s,
                     probe.summary(), floor.summary())


# --- report ---------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def summarize(runs: list[RunResult], args: argparse.Namespace) -> dict[str, Any]:
    median = {
        "ceiling_rps": _median([r.ceiling.rps for r in runs]),
        "bridge_rps": _median([r.bridge.rps for r in runs]),
        "ratio": _median([r.ratio for r in runs]),
        "ceiling_p99_ms": _median([r.ceiling.latency_ms.get("p99", 0.0) for r in runs]),
        "bridge_p50_ms": _median([r.bridge.latency_ms.get("p50", 0.0) for r in runs]),
        "bridge_p99_ms": _median([r.bridge.latency_ms.get("p99", 0.0) for r in runs]),
        "bridge_errors": _median([float(r.bridge.errors) for r in runs]),
        "events_per_s": _median([r.bridge.rps * args.events_per_webhook for r in runs]),
        "ceiling_server_cpu_pct": _median([r.ceiling.server_cpu_pct or 0.0 for r in runs]),
        "bridge_server_cpu_pct": _median([r.bridge.server_cpu_pct or 0.0 for r in runs]),
        "bridge_main_thread_cpu_pct": _median([r.bridge.server_main_cpu_pct or 0.0
                                               for r in runs]),
        "commit_batch_mean": _median([r.bridge.commit_batch_mean or 0.0 for r in runs]),
        "commit_ms_mean": _median([r.bridge.commit_ms_mean or 0.0 for r in runs]),
        "health_p50_ms": _median([r.health_ms.get("p50", 0.0) for r in runs]),
        "health_p99_ms": _median([r.health_ms.get("p99", 0.0) for r in runs]),
        "floor_p50_ms": _median([r.floor_ms.get("p50", 0.0) for r in runs]),
        "floor_p99_ms": _median([r.floor_ms.get("p99", 0.0) for r in runs]),
    }
    probed = all(r.health_ms.get("count") for r in runs)
    errors = sum(r.bridge.errors for r in runs)
    checks = {
        f"bridge/ceiling >= {TARGET_RATIO:.0%}": median["ratio"] >= TARGET_RATIO,
        "0 socket errors and 0 non-2xx (all runs)": errors == 0,
        f"p99 < {TARGET_P99_MS:.0f} ms at {args.connections} connections":
            median["bridge_p99_ms"] < TARGET_P99_MS,
        "every 2xx's events stored exactly once, by identity (all runs)":
            all(reconciled(r.reconciliation) for r in runs),
        "no request sent twice (all runs)": not any(r.bridge.wrapped for r in runs),
        # A run without a single probe answered proves nothing: not a PASS.
        f"/health p99 < {TARGET_HEALTH_P99_MS:.0f} ms while saturated, every probe 200":
            probed and median["health_p99_ms"] < TARGET_HEALTH_P99_MS
            and not any(r.health_ms.get("failures") for r in runs),
    }
    return {
        "config": {"runs": args.runs, "duration_s": args.duration, "threads": args.connections,
                   "workers": args.workers, "settings": dict(args.setting),
                   "connections": args.connections, "rate_hint": args.rate_hint,
                   "events_per_webhook": args.events_per_webhook, "cpus": os.cpu_count(),
                   "cpu": _cpu_model(), "python": platform.python_version()},
        "median": median,
        "runs": [{"run": r.run, "ratio": r.ratio, "ceiling": asdict(r.ceiling),
                  "bridge": asdict(r.bridge), "reconciliation": asdict(r.reconciliation),
                  "generated_webhooks": r.generated, "generate_s": round(r.generate_s, 2),
                  "health_ms": r.health_ms}
                 for r in runs],
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def lost_ids(result: by_identity.Reconciliation) -> str:
    """Lost ids as measured, or "n/a" when the store could not be read: never a 0 by default."""
    return "n/a" if result.lost is None else str(result.lost)


def print_report(report: dict[str, Any], runs: list[RunResult]) -> None:
    cfg, med = report["config"], report["median"]
    print()
    print(f"AUREN bridge throughput: wrk -t{cfg['threads']} -c{cfg['connections']} "
          f"-d{cfg['duration_s']}s --latency, loopback, {cfg['cpus']} CPUs ({cfg['cpu']}), "
          f"{cfg['workers']} server worker(s) for both apps")
    print(f"Figures are medians of {cfg['runs']} run(s); each ratio is bridge/ceiling within "
          f"one run (measured back to back). Server, wrk and bench share the machine.")
    print()
    header = (f"{'run':>3} {'ceiling rps':>12} {'ceil p99':>9} {'bridge rps':>11} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'cpu%':>5} {'ratio':>6} {'errors':>6} "
              f"{'non2xx':>6} {'2xx':>7} {'lost ids':>9}  reconciliation by identity")
    print(header)
    print("-" * len(header))
    for r in runs:
        b, c = r.bridge, r.ceiling
        print(f"{r.run:>3} {c.rps:>12.0f} {c.latency_ms.get('p99', 0):>9.2f} {b.rps:>11.0f} "
              f"{b.latency_ms.get('p50', 0):>7.2f} {b.latency_ms.get('p99', 0):>7.2f} "
              f"{b.latency_ms.get('p99.9', 0):>7.2f} {b.server_cpu_pct or 0:>5.0f} {r.ratio:>6.1%} "
              f"{sum(b.socket_errors.values()):>6} {b.non_2xx_3xx:>6} {b.answered_2xx:>7} "
              f"{lost_ids(r.reconciliation):>9}  "
              f"{r.reconciliation.status.upper()}: {r.reconciliation.detail}")
    print("-" * len(header))
    print(f"median: ceiling {med['ceiling_rps']:.0f} req/s (p99 {med['ceiling_p99_ms']:.2f} ms); "
          f"bridge {med['bridge_rps']:.0f} req/s = {med['events_per_s']:.0f} events/s, "
          f"p50 {med['bridge_p50_ms']:.2f} ms, p99 {med['bridge_p99_ms']:.2f} ms; "
          f"ratio {med['ratio']:.1%}")
    print(f"server process CPU while measured, % of one core: "
          f"ceiling {med['ceiling_server_cpu_pct']:.0f}, bridge {med['bridge_server_cpu_pct']:.0f} "
          f"(its event loop thread {med['bridge_main_thread_cpu_pct']:.0f}); "
          f"group commits: {med['commit_batch_mean']:.1f} deliveries in "
          f"{med['commit_ms_mean']:.2f} ms (means)")
    probes = [r.health_ms for r in runs]
    if all(h.get("count") for h in probes):
        print(f"/health every {HEALTH_PROBE_INTERVAL_S:.1f} s while saturated: "
              f"p50 {med['health_p50_ms']:.2f} ms, p99 {med['health_p99_ms']:.2f} ms "
              f"(medians); worst {max(h['max'] for h in probes):.2f} ms; "
              f"{sum(int(h['failures']) for h in probes)} not 200 "
              f"of {sum(int(h['count']) for h in probes)}")
    else:
        print("/health while saturated: n/a (no probe answered in some run)")
    if all(r.floor_ms.get("count") for r in runs):
        print(f"the same probe on the hello-world while wrk saturates it (the machine's floor): "
              f"p50 {med['floor_p50_ms']:.2f} ms, p99 {med['floor_p99_ms']:.2f} ms (medians)")
    print()
    for check, passed in report["checks"].items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {check}")
    print(f"verdict: {report['verdict']}")


def load_parser(doc: str, *, events_per_webhook: int, rate_hint: int
                ) -> argparse.ArgumentParser:
    """The options every wrk bench of signed webhooks shares (this one and the full stack's)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk measurement")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--events-per-webhook", type=int, default=events_per_webhook,
                        help="canonical events in each webhook")
    parser.add_argument("--rate-hint", type=int, default=rate_hint,
                        help="unique webhooks generated per second of --duration")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def check_load_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.runs <= 50 or not 1 <= args.duration <= MAX_DURATION_S:
        parser.error(f"--runs must be 1..50 and --duration 1..{MAX_DURATION_S} (signatures "
                     "expire after 300 s)")
    if not 1 <= args.connections <= 1000 or args.rate_hint < 1:
        parser.error("need --connections 1..1000 (one wrk thread each) and --rate-hint >= 1")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name.lower() not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE of an AUREN setting")
    return name.upper(), value


def main(argv: list[str] | None = None) -> int:
    parser = load_parser(__doc__, events_per_webhook=EVENTS_PER_WEBHOOK, rate_hint=16000)
    parser.add_argument("--workers", type=int, default=1,
                        help="server worker processes, the same for the ceiling and the bridge")
    parser.add_argument("--profile", type=Path,
                        help="sample the bridge with py-spy into PROFILE-<run>.txt "
                             "(collapsed stacks; figures of a profiled run are not for quoting)")
    parser.add_argument("--setting", action="append", default=[], type=_setting,
                        metavar="NAME=VALUE",
                        help="a bridge setting for this measurement (e.g. ACCESS_LOG=false), "
                             "repeatable; the ceiling is unaffected")
    parser.add_argument("--log-dir", type=Path,
                        help="write the bridge's log (a JSON line per request) here rather "
                             "than beside its database, e.g. on another disk or a tmpfs")
    args = parser.parse_args(argv)
    check_load_args(parser, args)
    if args.profile is not None and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy (pip install py-spy)")

    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="auren-bench-") as tmp:
        for number in range(1, args.runs + 1):
            runs.append(one_run(number, args, Path(tmp), sys.stderr))
    report = summarize(runs, args)
    print_report(report, runs)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
