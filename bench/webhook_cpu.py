"""CPU per webhook inside the bridge application, without the network: a steady figure.

    python bench/webhook_cpu.py --runs 5 --webhooks 20000 [--tree DIR ...] [--json out.json]

``bridge_throughput.py`` measures what a client sees, against a hello-world served the same
way; on a small shared machine its figures move by a fifth from one minute to the next, because
wrk's hundred threads, the server and its commit thread compete for two cores. This bench
measures the part that is the application's alone, and that noise hardly touches: it builds
the bridge with ``create_app`` exactly as ``auren serve bridge`` does (embedded store in a fresh
temporary ``AUREN_DATA_DIR``, group commit, its log written to a file as a served bridge's
stderr would be), runs its lifespan, and calls it as an ASGI application with unique signed
webhooks, ``--concurrency`` at a time (the default, 50, is ``MAX_CONCURRENT_WEBHOOKS``'s). It
reports the CPU time of the whole process (every thread: the event loop, the commit thread)
per webhook, and the webhooks per second of one process with no HTTP server in front. Every
answer must be 202 and every event must be stored, counted in the store afterwards.

``--tree DIR`` runs the same measurement against another checkout of AUREN (e.g. a
``git worktree`` of an earlier commit) in a child process with that tree first on
``sys.path``; with several trees the runs alternate (A, B, A, B, ...), so that each
comparison is taken minutes apart at most, and medians are reported per tree. Whatever a tree
cannot do (an older ``create_app``) fails its runs and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 50
WEBHOOKS = 20_000
WARMUP = 2_000


def reference_unit_us(rounds: int = 20_000) -> float:
    """CPU time of one unit of a fixed, pure-Python workload (a hash, a small JSON document,
    dict and string work: the kinds of work a webhook does), in microseconds.

    This machine's speed moves by a tenth from one second to the next (shared cores), so each
    run is also given in these units, measured just before and just after it: a ratio taken
    within the run, like ``bridge_throughput.py``'s bridge/ceiling.
    """
    import hashlib

    import orjson

    started = _cpu_s()
    table: dict[int, str] = {}
    for i in range(rounds):
        text = orjson.dumps({"id": i, "metric": "heart_rate", "value": i * 0.5}).decode()
        table[i % 512] = hashlib.sha256(text.encode()).hexdigest()[:16] + text.split(":")[0]
    return (_cpu_s() - started) / rounds * 1e6


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(webhooks: int, concurrency: int, events: int, settings_env: dict[str, str],
                   log_path: Path) -> dict[str, Any]:
    """One run in this process: the figures of ``webhooks`` webhooks after a warm-up."""
    # Imported here: with --tree, the child process has that tree first on sys.path.
    from auren.observability import configure_logging
    from auren.services.bridge import create_app
    from auren.settings import Settings
    from auren.sim.load import render_unique_native

    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            del os.environ[name]
    os.environ.update(settings_env)
    settings = Settings()
    log_file = log_path.open("a", encoding="utf-8")
    saved_stderr, sys.stderr = sys.stderr, log_file
    try:
        configure_logging(settings.log_level)
    finally:
        sys.stderr = saved_stderr
    app = create_app(settings)
    secret = settings_env["STANDARD_WEBHOOK_SECRET"]
    deliveries = render_unique_native(WARMUP + webhooks, secret, events_per_webhook=events)
    statuses: dict[int, int] = {}

    async def call(delivery: Any) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(delivery.body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in delivery.headers.items()]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": delivery.path, "raw_path": delivery.path.encode(),
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8889),
                 "extensions": {}, "state": {}}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a disconnect that never comes
            sent = True
            return {"type": "http.request", "body": delivery.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def drive(batch: list[Any]) -> None:
        queue = iter(batch)

        async def worker() -> None:
            for delivery in queue:
                await call(delivery)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async with app.api.router.lifespan_context(app.api):
        await drive(deliveries[:WARMUP])
        statuses.clear()
        unit_before = reference_unit_us()
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        await drive(deliveries[WARMUP:])
        wall = time.perf_counter() - wall0
        cpu = _cpu_s() - cpu0
        unit = (unit_before + reference_unit_us()) / 2
    log_file.close()
    return {"webhooks": webhooks, "events_per_webhook": events, "statuses": statuses,
            "expected_events": (WARMUP + webhooks) * events,
            "cpu_us_per_webhook": round(cpu / webhooks * 1e6, 1),
            "reference_unit_us": round(unit, 3),
            "webhook_in_units": round(cpu / webhooks * 1e6 / unit, 2),
            "webhooks_per_s": round(webhooks / wall, 1),
            "cpu_pct": round(100 * cpu / wall, 1)}


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="auren-webhook-cpu-") as tmp:
        from auren.sim.credentials import SECRET_GENERATORS

        env = {"AUREN_DATA_DIR": tmp,
               "STANDARD_WEBHOOK_SECRET": SECRET_GENERATORS["STANDARD_WEBHOOK_SECRET"](),
               **dict(args.setting)}
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"bridge-{os.getpid()}.log"
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                result = runner.run(_measure(args.webhooks, args.concurrency,
                                             args.events_per_webhook, env, log_path))
            # Counted after the bridge closed its store: what a restart would find.
            with contextlib.closing(sqlite3.connect(next(Path(tmp).glob("*.sqlite3")))) as db:
                result["stored_events"] = db.execute(
                    "SELECT count(*) FROM biometric_events").fetchone()[0]
            return result
        finally:
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()


def _loop_factory() -> Any:
    """uvloop's loop, as ``auren serve`` runs on (asyncio's own when it is not installed)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--expect-tree", str(tree),
           "--webhooks", str(args.webhooks), "--concurrency", str(args.concurrency),
           "--events-per-webhook", str(args.events_per_webhook)]
    for name, value in args.setting:
        cmd += ["--setting", f"{name}={value}"]
    if args.log_dir is not None:
        cmd += ["--log-dir", str(args.log_dir)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of an AUREN setting, as ``bridge_throughput.py --setting`` takes it.

    Not imported from there: that module imports the toolkit at load time, and a child
    measuring an earlier ``--tree`` must load nothing but that tree's ``auren.settings``."""
    from auren.settings import Settings

    name, sep, value = text.partition("=")
    if not sep or name.lower() not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE of an AUREN setting")
    return name.upper(), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--webhooks", type=int, default=WEBHOOKS, help="measured per run")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--events-per-webhook", type=int, default=1)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to measure, alternating; repeatable")
    parser.add_argument("--setting", action="append", default=[], type=_setting,
                        metavar="NAME=VALUE", help="a bridge setting, repeatable")
    parser.add_argument("--log-dir", type=Path,
                        help="write the bridge's log here rather than beside its database "
                             "(e.g. a tmpfs, to see what the log's writes cost)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--expect-tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child measuring one run for --tree
        import auren

        imported = Path(auren.__file__).resolve()
        if args.expect_tree is not None and not imported.is_relative_to(
                args.expect_tree.resolve()):
            print(f"auren was imported from {imported.parent}, not from {args.expect_tree}",
                  file=sys.stderr)
            return 1
        print(json.dumps(run_once(args)))
        return 0

    trees = [ROOT, *(t.resolve() for t in args.tree)]
    results: dict[str, list[dict[str, Any]]] = {str(t): [] for t in trees}
    for number in range(1, args.runs + 1):
        for tree in trees:
            result = _child(tree, args)
            results[str(tree)].append(result)
            shown = result.get("error") or (
                f"{result['cpu_us_per_webhook']:7.1f} us CPU/webhook "
                f"= {result['webhook_in_units']:5.2f} units, "
                f"{result['webhooks_per_s']:8.1f} webhooks/s, CPU {result['cpu_pct']:5.1f}%, "
                f"answers {result['statuses']}, events stored "
                f"{result['stored_events']}/{result['expected_events']}")
            print(f"run {number} {tree.name or tree}: {shown}", flush=True)

    print(f"\nCPU per webhook inside the bridge application (no HTTP server, no network), "
          f"{args.webhooks} webhooks of {args.events_per_webhook} event(s) per run, "
          f"{args.concurrency} at a time; medians of {args.runs} alternating run(s):")
    verdict = 0
    summary: dict[str, Any] = {}
    for tree, runs in results.items():
        good = [r for r in runs if "error" not in r]
        # Each run came back as JSON from its child: status codes are strings.
        complete = all(r["statuses"] == {"202": args.webhooks} and
                       r["stored_events"] == r["expected_events"] for r in good)
        if not good or len(good) < len(runs) or not complete:
            verdict = 1
        cpu = statistics.median([r["cpu_us_per_webhook"] for r in good]) if good else None
        rate = statistics.median([r["webhooks_per_s"] for r in good]) if good else None
        units = statistics.median([r["webhook_in_units"] for r in good]) if good else None
        summary[tree] = {"cpu_us_per_webhook": cpu, "webhook_in_units": units,
                         "webhooks_per_s": rate, "runs": runs,
                         "all_202_and_stored": complete and len(good) == len(runs)}
        print(f"  {tree}: " + (f"{cpu:.1f} us CPU per webhook ({units:.2f} reference units), "
                               f"{rate:.0f} webhooks/s in one "
                               f"process; every answer 202 and every event stored: "
                               f"{'yes' if summary[tree]['all_202_and_stored'] else 'NO'}"
                               if good else "no run succeeded"))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
