"""The embedded demo: a real bridge process, every provider's signed webhooks, a reconciliation.

``run_demo`` starts ``auren serve bridge`` as a child process over a fresh data directory
(SQLite, nothing else to install), generates a secret for every provider the environment does
not configure, sends simulated users' histories in each provider's own wire format, reads the
data back through the read API and checks that every accepted item is stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from auren.settings import Settings
from auren.sim.credentials import SECRET_GENERATORS, fresh_secrets
from auren.sim.render import PROVIDERS, render_deliveries, resolve_providers
from auren.sim.send import DeliverySummary, deliver
from auren.sim.wearers import generate_users


@dataclass
class DemoResult:
    data_dir: Path
    summary: DeliverySummary
    stored_events: int
    stored_jobs: int
    accepted: int = 0
    metrics_of_first_user: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def bridge_process(env: dict[str, str], log_path: Path, timeout_s: float = 30
                   ) -> Iterator[str]:
    """Run ``auren serve bridge`` on a free loopback port until the block ends (by its pid)."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "auren", "serve", "bridge", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the bridge exited at start-up; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge did not become healthy; see {log_path}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def run_demo(settings: Settings, *, users: int = 5, days: int = 30,
             concurrency: int = 16) -> DemoResult:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data_dir = settings.auren_data_dir / "demo" / stamp
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(fresh_secrets(env))
    env["AUREN_DATA_DIR"] = str(data_dir)
    # The simulator signs with the same secrets the child bridge verifies with.
    sim_settings = Settings.model_validate({k.lower(): v for k, v in env.items()
                                            if k in SECRET_GENERATORS or k == "AUREN_DATA_DIR"})
    targets, skipped = resolve_providers(sim_settings, list(PROVIDERS))
    histories = generate_users(users, days, seed=int(time.time()))
    with bridge_process(env, data_dir / "bridge.log") as url:
        summary = asyncio.run(deliver(
            url, render_deliveries(histories, targets), concurrency=concurrency,
            timeout_s=10.0, max_duration_s=600.0, keep_results=True))
        first_user = histories[0].user_id
        events = httpx.get(f"{url}/api/v1/users/{first_user}/events",
                           params={"limit": 1000}, timeout=10).json()["events"]
    with sqlite3.connect(data_dir / "auren.sqlite3") as conn:
        stored_events = conn.execute("SELECT count(*) FROM biometric_events").fetchone()[0]
        stored_jobs = conn.execute("SELECT count(*) FROM fetch_jobs").fetchone()[0]
    result = DemoResult(data_dir, summary, stored_events, stored_jobs)
    latest: dict[str, dict[str, Any]] = {}
    counts = Counter(e["metric"] for e in events)
    for event in events:  # ordered by start: the last one seen is the latest
        latest[event["metric"]] = {"value": event["value"], "unit": event["unit"],
                                   "start": event["start"], "count": counts[event["metric"]]}
    result.metrics_of_first_user = dict(sorted(latest.items()))
    if skipped:
        result.problems += [f"{name} skipped: {why}" for name, why in skipped.items()]
    if not summary.all_ok:
        result.problems.append(f"{summary.sent - summary.succeeded} deliveries were not 2xx")
    # Fitbit wants an empty 204, so its answers carry no counts: each of its notifications is
    # one fetch job (the run's data is fresh, so none is a duplicate).
    accepted = sum(r.delivery.items if r.status == 204 else r.accepted
                   for r in summary.results or ())
    if stored_events + stored_jobs != accepted:
        result.problems.append(
            f"reconciliation: the bridge accepted {accepted} items but the store holds "
            f"{stored_events} events + {stored_jobs} fetch jobs")
    result.accepted = accepted
    return result
