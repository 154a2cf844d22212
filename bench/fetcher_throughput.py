"""Fetcher throughput against the provider API simulator, every job and day reconciled.

    python bench/fetcher_throughput.py --runs 3 --users 20 --days 3 [--concurrency 8]
                                       [--providers oura,whoop,fitbit,withings,garmin,polar]
                                       [--json out.json]

Each run, on a fresh embedded data dir and free loopback ports:

1. ``auren sim providers`` and ``auren serve bridge`` with ``FETCHER_IN_BRIDGE=false`` (nothing
   is fetched yet), configured alike; the simulator's limits and AUREN's count of them raised
   a thousandfold, so that what is measured is the fetcher, not a provider's quota;
2. ``--users`` simulated people connect every one of ``--providers`` (``BACKFILL_DAYS=0``: no
   history jobs), then ``--days`` new days are revealed: every provider's signed notification
   reaches the bridge and becomes a fetch job in the SQLite file;
3. ``auren fetcher --once`` runs them all and exits when idle. Throughput is counted between
   the first and the last job's finish (the process's start-up is not the fetcher's speed):
   jobs/s and events/s (events newly stored, counted in the file).

Reconciled by identity: every queued job id must be done (``lost`` = queued and not done,
``dead`` listed apart), and every (person, provider, revealed day) must have events stored
from that provider with a start on that day or the evening before (``days without events``);
``duplicated`` counts events whose identity (user, provider, metric, start, end, record) occurs
twice. A run passes with all three at 0. Figures are medians over ``--runs``; the machine may
be shared, so compare runs taken moments apart. Every process listens on 127.0.0.1 and is
stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from auren.sim.api.app import provider_urls
from auren.sim.credentials import fresh_secrets
from auren.sim.demo import DEMO_APPS

try:
    from bench import bridge_throughput as base
except ImportError:  # run as a script: bench/ itself is on sys.path
    import bridge_throughput as base  # type: ignore[no-redef]

HOST = base.HOST
PROVIDERS = ("oura", "whoop", "fitbit", "withings", "garmin", "polar")
SCALE = 1000


@dataclass
class RunResult:
    jobs_queued: int = 0
    jobs_done: int = 0
    lost: int = 0
    dead: int = 0
    days_without_events: int = 0
    duplicated: int = 0
    events: int = 0
    seconds: float = 0.0
    api_calls: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def jobs_per_s(self) -> float:
        return (self.jobs_done - 1) / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def passed(self) -> bool:
        return self.lost == self.dead == self.days_without_events == self.duplicated == 0 \
            and self.jobs_done > 0


def _connect(client: httpx.Client, bridge: str, person: str, provider: str, wearer: int) -> None:
    start = client.get(f"{bridge}/api/v1/connect/{provider}", params={"user_id": person})
    consent = {"sim_user": str(wearer), **({"resource": "OURA"} if provider == "terra" else {})}
    page = client.get(httpx.URL(start.headers["location"]).copy_merge_params(consent))
    back = client.get(page.headers["location"])
    if back.status_code != 200:
        raise RuntimeError(f"{provider} connect failed: {back.status_code} {back.text[:200]}")


def _jobs(client: httpx.Client, bridge: str, state: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000, **({"state": state} if state else {})}
    jobs: list[dict[str, Any]] = client.get(f"{bridge}/api/v1/jobs", params=params).json()[
        "jobs"]
    return jobs


def _store_facts(database: Path) -> tuple[int, int, set[tuple[str, str, str]]]:
    """Events, events sharing an identity, and (user, provider, UTC day) with events."""
    with sqlite3.connect(database) as conn:
        total = conn.execute("SELECT count(*) FROM biometric_events").fetchone()[0]
        twice = conn.execute(
            'SELECT count(*) FROM (SELECT 1 FROM biometric_events GROUP BY user_id, provider, '
            'metric, start, "end", source_record_id HAVING count(*) > 1)').fetchone()[0]
        days = {(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT DISTINCT user_id, provider, substr(start, 1, 10) FROM biometric_events")}
    return int(total), int(twice), days


def one_run(number: int, args: argparse.Namespace, work: Path) -> RunResult:
    data = Path(tempfile.mkdtemp(prefix=f"fetch-{number}-", dir=work))
    bridge_port, sim_port = base.free_port(), base.free_port()
    bridge = f"http://{HOST}:{bridge_port}"
    env = base.clean_env()
    env.update(fresh_secrets(env))
    env.update(DEMO_APPS)
    env.update(provider_urls(f"http://{HOST}:{sim_port}"))
    env.update({"AUREN_DATA_DIR": str(data), "AUREN_PUBLIC_URL": bridge,
                "FETCHER_IN_BRIDGE": "false", "BACKFILL_DAYS": "0",
                "FETCH_RATE_LIMIT_SCALE": str(SCALE), "FETCHER_CONCURRENCY":
                str(args.concurrency), "FETCH_POLL_S": "0.1", "LOG_LEVEL": "WARNING",
                "WITHINGS_ENABLED": "true"})
    python = sys.executable
    result = RunResult()
    with base.server([python, "-m", "auren", "serve", "bridge", "--port", str(bridge_port)],
                     env=env, ready_url=bridge + "/health", log=data / "bridge.log"), \
            base.server([python, "-m", "auren", "sim", "providers", "--port", str(sim_port),
                         "--bridge", bridge, "--users", str(args.users), "--days", "5",
                         "--future-days", str(args.days), "--seed", str(number)], env=env,
                        ready_url=f"http://{HOST}:{sim_port}/health", log=data / "sim.log"), \
            httpx.Client(timeout=60, trust_env=False) as client:
        sim = f"http://{HOST}:{sim_port}"
        for provider, facts in client.get(f"{sim}/_sim/config").json()["providers"].items():
            limits = [{**limit, "limit": limit["limit"] * SCALE} for limit in facts["limits"]]
            client.patch(f"{sim}/_sim/providers/{provider}", json={"limits": limits})
        people = [f"bench-{n}" for n in range(args.users)]
        for index, person in enumerate(people):
            client.post(f"{bridge}/api/v1/users", json={"user_id": person})
            for provider in args.providers:
                _connect(client, bridge, person, provider, index)
        expected: set[tuple[str, str, date]] = set()
        for index, person in enumerate(people):
            answer = client.post(f"{sim}/_sim/users/{index}/advance",
                                 params={"days": args.days}).json()
            for day in answer["revealed"]:
                expected |= {(person, p, date.fromisoformat(day)) for p in args.providers}
        time.sleep(1.0)  # the notifications' jobs are committed with their 2xx answers
        queued = {j["job_id"] for j in _jobs(client, bridge, "pending")}
        events_before, _, _ = _store_facts(data / "auren.sqlite3")
        calls_before = sum(v for k, v in client.get(f"{sim}/_sim/stats").json().items()
                           if ":http:" in k)
        done = subprocess.run([python, "-m", "auren", "fetcher", "--once", "--idle-exit", "2"],
                              env=env, capture_output=True, text=True, timeout=3600,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the fetcher failed:\n{done.stderr[-2000:]}")
        jobs = {j["job_id"]: j for j in _jobs(client, bridge) if j["job_id"] in queued}
        finished = sorted(datetime.fromisoformat(j["updated_at"]) for j in jobs.values()
                          if j["state"] == "done")
        result.jobs_queued, result.jobs_done = len(queued), len(finished)
        result.dead = sum(1 for j in jobs.values() if j["state"] == "dead")
        result.lost = len(queued) - len(finished) - result.dead
        if len(finished) > 1:
            result.seconds = (finished[-1] - finished[0]).total_seconds()
        result.api_calls = sum(v for k, v in client.get(f"{sim}/_sim/stats").json().items()
                               if ":http:" in k) - calls_before
    total, twice, days = _store_facts(data / "auren.sqlite3")
    result.events, result.duplicated = total - events_before, twice
    for person, provider, day in sorted(expected):
        if not {(person, provider, d.isoformat()) for d in (day, day - timedelta(days=1))} \
                & days:
            result.missing.append(f"{person} {provider} {day}")
    result.days_without_events = len(result.missing)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=20, help="simulated people")
    parser.add_argument("--days", type=int, default=3, help="new days each person uploads")
    parser.add_argument("--concurrency", type=int, default=8, help="FETCHER_CONCURRENCY")
    parser.add_argument("--providers", default=",".join(PROVIDERS),
                        help="comma-separated, of " + ", ".join(PROVIDERS))
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    args.providers = [p for p in args.providers.split(",") if p]
    if not set(args.providers) <= set(PROVIDERS) or args.runs < 1 or args.users < 1:
        parser.error("--providers must name the supported providers; --runs and --users >= 1")
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="auren-fetch-bench-") as tmp:
        for number in range(1, args.runs + 1):
            result = one_run(number, args, Path(tmp))
            runs.append(result)
            print(f"run {number}: {result.jobs_done}/{result.jobs_queued} jobs in "
                  f"{result.seconds:.2f} s = {result.jobs_per_s:.1f} jobs/s, "
                  f"{result.events_per_s:.0f} events/s ({result.events} events, "
                  f"{result.api_calls} provider calls); lost {result.lost}, dead "
                  f"{result.dead}, days without events {result.days_without_events}, "
                  f"duplicated {result.duplicated}", flush=True)
            for missing in result.missing[:10]:
                print(f"  no events: {missing}")
    report = {"users": args.users, "days": args.days, "providers": args.providers,
              "concurrency": args.concurrency, "runs": [asdict(r) | {
                  "jobs_per_s": r.jobs_per_s, "events_per_s": r.events_per_s} for r in runs],
              "median_jobs_per_s": statistics.median(r.jobs_per_s for r in runs),
              "median_events_per_s": statistics.median(r.events_per_s for r in runs),
              "passed": all(r.passed for r in runs)}
    print(f"median: {report['median_jobs_per_s']:.1f} jobs/s, "
          f"{report['median_events_per_s']:.0f} events/s; "
          f"{'PASS' if report['passed'] else 'FAIL'} (0 lost, 0 dead, 0 days without events, "
          "0 duplicated required)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
