"""The embedded demo: simulated people connect every wearable, and NEUROS answers from the data
AUREN fetched.

``run_demo`` starts, over a fresh data directory (SQLite, nothing else to install), a bridge
(with its fetcher), the provider API simulator and NEUROS as child processes on free loopback
ports, configured alike: generated webhook secrets and app credentials, the bridge's provider
URLs pointing at the simulator, the simulator's notifications at the bridge. Each simulated
person is created, connected to Oura, WHOOP, Fitbit, Polar, Withings, Garmin and Terra through
the simulator's consent pages (Terra: its widget), their history is fetched, a new day arrives
as each provider's signed notification and is fetched, and NEUROS is asked about each person's
sleep and HRV. The check: every account connected, every job done (none dead), every provider
delivered events, no event stored twice, every question answered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
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
from auren.sim.api.app import provider_urls
from auren.sim.api.wearers import PROVIDERS
from auren.sim.credentials import fresh_secrets

QUESTIONS = ("How did I sleep last night?", "How is my HRV?")
# The apps the demo registers at the simulated providers (its own, made up).
DEMO_APPS = {
    "OURA_CLIENT_ID": "demo-oura", "WHOOP_CLIENT_ID": "demo-whoop",
    "FITBIT_CLIENT_ID": "demo-fitbit", "POLAR_CLIENT_ID": "demo-polar",
    "POLAR_CLIENT_SECRET": "demo-polar-secret", "WITHINGS_CLIENT_ID": "demo-withings",
    "WITHINGS_CLIENT_SECRET": "demo-withings-secret", "GARMIN_CLIENT_SECRET":
    "demo-garmin-secret", "TERRA_DEV_ID": "demo-terra", "TERRA_API_KEY": "demo-terra-key",
}
# The simulator's limits and AUREN's count of them, both raised: the documented limits (100
# calls a minute at Garmin) would make a demo wait minutes for nothing but the clock.
LIMIT_SCALE = 20


@dataclass
class DemoResult:
    data_dir: Path
    people: list[str]
    connected: dict[str, list[str]] = field(default_factory=dict)
    # person -> (provider, provenance) -> events
    events: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)
    answers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    jobs: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def child(args: list[str], env: dict[str, str], log_path: Path, ready_url: str,
          timeout_s: float = 60) -> Iterator[str]:
    """``python -m auren <args>`` until the block ends (SIGTERM, then SIGKILL, by its pid);
    yields once ``ready_url`` answers."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "auren", *args], stdout=log, stderr=subprocess.STDOUT,
            env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited at start-up; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not become ready; see {log_path}")
            time.sleep(0.1)
        yield ready_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class _Demo:
    def __init__(self, bridge: str, sim: str, neuros: str) -> None:
        self.bridge = bridge
        self.sim = sim
        self.neuros = neuros
        self.http = httpx.Client(timeout=30, trust_env=False, follow_redirects=False)

    def connect(self, person: str, provider: str, wearer: int) -> None:
        start = self.http.get(f"{self.bridge}/api/v1/connect/{provider}",
                              params={"user_id": person})
        if start.status_code != 302:
            raise RuntimeError(f"connect {provider}: {start.status_code} {start.text[:200]}")
        consent = {"sim_user": str(wearer)}
        if provider == "terra":
            consent["resource"] = "OURA"
        page = self.http.get(httpx.URL(start.headers["location"]).copy_merge_params(consent))
        back = self.http.get(page.headers["location"]) if page.status_code == 302 else page
        if back.status_code != 200:
            raise RuntimeError(f"{provider} callback: {back.status_code} {back.text[:200]}")

    def raise_limits(self) -> None:
        config = self.http.get(f"{self.sim}/_sim/config").json()["providers"]
        for provider, facts in config.items():
            limits = [{**limit, "limit": limit["limit"] * LIMIT_SCALE}
                      for limit in facts["limits"]]
            self.http.patch(f"{self.sim}/_sim/providers/{provider}", json={"limits": limits})

    def jobs(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"{self.bridge}/api/v1/jobs", params={"limit": 1000})
        jobs: list[dict[str, Any]] = answer.json()["jobs"]
        return jobs

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(j["state"] in ("pending", "running") for j in self.jobs()):
                return True
            time.sleep(0.5)
        return False

    def events(self, person: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            body = self.http.get(f"{self.bridge}/api/v1/users/{person}/events",
                                 params=params).json()
            found += body["events"]
            cursor = body["next"]
            if not cursor:
                return found

    def ask(self, person: str, question: str) -> str:
        answer = self.http.post(f"{self.neuros}/chat", json={"user_id": person,
                                                              "message": question})
        if answer.status_code != 200:
            raise RuntimeError(f"NEUROS answered {answer.status_code}: {answer.text[:200]}")
        return str(answer.json()["reply"])


def run_demo(settings: Settings, *, users: int = 3, days: int = 14,
             timeout_s: float = 600.0) -> DemoResult:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data_dir = settings.auren_data_dir / "demo" / stamp
    data_dir.mkdir(parents=True, exist_ok=True)
    bridge_port, sim_port, neuros_port = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items()
           # Embedded, whatever the shell says: the demo's own file, its own secrets.
           if k not in ("POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(fresh_secrets(env))
    env.update(DEMO_APPS)
    env.update(provider_urls(f"http://127.0.0.1:{sim_port}"))
    env.update({"AUREN_DATA_DIR": str(data_dir), "AUREN_PUBLIC_URL":
                f"http://127.0.0.1:{bridge_port}", "BACKFILL_DAYS": str(days),
                "FETCH_RATE_LIMIT_SCALE": str(LIMIT_SCALE), "FETCH_POLL_S": "0.2",
                "WITHINGS_ENABLED": "true"})
    people = [f"demo-person-{n + 1}" for n in range(users)]
    result = DemoResult(data_dir, people)
    bridge = f"http://127.0.0.1:{bridge_port}"
    with child(["serve", "bridge", "--port", str(bridge_port)], env, data_dir / "bridge.log",
               bridge + "/health"), \
            child(["sim", "providers", "--port", str(sim_port), "--bridge", bridge,
                   "--users", str(users), "--days", str(days), "--future-days", "2",
                   "--seed", str(int(time.time()) % 100_000)], env, data_dir / "sim.log",
                  f"http://127.0.0.1:{sim_port}/health") as sim_health, \
            child(["serve", "neuros", "--port", str(neuros_port)], env,
                  data_dir / "neuros.log", f"http://127.0.0.1:{neuros_port}/health"):
        demo = _Demo(bridge, sim_health.removesuffix("/health"),
                     f"http://127.0.0.1:{neuros_port}")
        demo.raise_limits()
        for index, person in enumerate(people):
            demo.http.post(f"{bridge}/api/v1/users", json={"user_id": person})
            result.connected[person] = []
            for provider in PROVIDERS:
                try:
                    demo.connect(person, provider, index)
                    result.connected[person].append(provider)
                except RuntimeError as exc:
                    result.problems.append(f"{person}: {exc}")
        if not demo.wait_idle(timeout_s):
            result.problems.append("the history was still being fetched at the time limit")
        # A new day: every provider notifies (Terra pushes it), AUREN fetches.
        demo.http.post(f"{demo.sim}/_sim/advance", params={"days": 1})
        if not demo.wait_idle(timeout_s):
            result.problems.append("the new day was still being fetched at the time limit")
        result.jobs = Counter(j["state"] for j in demo.jobs())
        if result.jobs.get("dead"):
            result.problems.append(f"{result.jobs['dead']} fetch job(s) dead")
        for person in people:
            events = demo.events(person)
            result.events[person] = Counter((e["provider"], e["provenance"]) for e in events)
            if len({e["event_id"] for e in events}) != len(events):
                result.problems.append(f"{person}: an event stored twice")
            silent = set(result.connected[person]) - {p for p, _ in result.events[person]}
            if silent:
                result.problems.append(f"{person}: no events from {', '.join(sorted(silent))}")
            result.answers[person] = [(q, demo.ask(person, q)) for q in QUESTIONS]
        demo.http.close()
    return result
