"""A real bridge (or bridge, sink and fetcher) and a real provider API simulator, configured
alike: the same client credentials and webhook secrets, the bridge's provider URLs pointing at
the simulator and the simulator's notifications at the bridge.

Expected values come from ``generate_users`` with the simulator's seed and calendar and from
the providers' documented units (``histories``), never from the code under test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from auren.sim.api.app import provider_urls
from auren.sim.api.wearers import default_end_date
from auren.sim.wearers import DayRecord, UserHistory, generate_users
from tests.helpers import ServerProcess, free_port, run_server
from tests.sim.api.kit import DAYS, ENV, FUTURE, SEED, Sim, run_sim

USERS = 24
PROVIDERS = ("oura", "whoop", "fitbit", "polar", "withings", "garmin", "terra")

# The apps' credentials: the simulator registers them, the bridge uses them.
CLIENTS = {
    "OURA_CLIENT_ID": "oura-app", "WHOOP_CLIENT_ID": "whoop-app",
    "FITBIT_CLIENT_ID": "fitbit-app", "POLAR_CLIENT_ID": "polar-app",
    "POLAR_CLIENT_SECRET": "polar-client-secret", "WITHINGS_CLIENT_ID": "withings-app",
    "WITHINGS_CLIENT_SECRET": "withings-client-secret",
    "GARMIN_CLIENT_SECRET": "garmin-client-secret", "TERRA_DEV_ID": "terra-dev",
    "TERRA_API_KEY": "terra-api-key",
}
# Short waits and retries: a test must not wait for production's backoff.
FAST = {
    "FETCH_POLL_S": "0.2", "FETCH_RETRY_BASE_S": "0.4", "FETCH_RETRY_MAX_S": "1.5",
    "FETCH_TIMEOUT_S": "2", "FETCH_CONNECT_TIMEOUT_S": "2", "FETCH_MAX_INLINE_WAIT_S": "3",
    "FETCH_LEASE_S": "4", "FETCH_MAX_ATTEMPTS": "4", "BACKFILL_DAYS": "5",
}


def end_date() -> date:
    """The simulator's last visible day: two days ago, so that history falls inside the
    backfill window and an advance reveals yesterday."""
    return default_end_date()


def histories(end: date, users: int = USERS) -> list[UserHistory]:
    return generate_users(users, DAYS + FUTURE, SEED, end_date=end + timedelta(days=FUTURE))


def record(end: date, index: int, day: date) -> DayRecord:
    found = next((r for r in histories(end)[index].days if r.day == day), None)
    assert found is not None, day
    return found


def user_id(index: int) -> str:
    return f"sim-{SEED}-{index:04d}"


@dataclass
class System:
    sim: Sim
    bridge: ServerProcess
    env: dict[str, str]
    end: date
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.bridge.base_url

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=30, **kwargs)

    def create_user(self, name: str) -> None:
        answer = self.api("POST", "/api/v1/users", json={"user_id": name})
        assert answer.status_code in (200, 201), answer.text

    def connect(self, provider: str, name: str, wearer: int,
                **consent: str) -> dict[str, Any]:
        """The whole flow as a browser would follow it: AUREN's connect link, the provider's
        consent (the simulator approves at once, as ``wearer``), the callback."""
        self.create_user(name)
        start = self.api("GET", f"/api/v1/connect/{provider}", params={"user_id": name})
        assert start.status_code == 302, start.text
        location = start.headers["location"]
        params = {"sim_user": str(wearer), **consent}
        if provider == "terra":
            params.setdefault("resource", "OURA")
        # The link's own query is kept: httpx's params would replace it.
        consent_page = httpx.get(httpx.URL(location).copy_merge_params(params),
                                 follow_redirects=False, timeout=30)
        assert consent_page.status_code == 302, consent_page.text
        back = httpx.get(consent_page.headers["location"], timeout=30)
        assert back.status_code == 200, back.text
        answer: dict[str, Any] = back.json()
        return answer

    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        answer = self.api("GET", "/api/v1/jobs", params={"limit": 1000, **(
            {"state": state} if state else {})})
        assert answer.status_code == 200, answer.text
        jobs: list[dict[str, Any]] = answer.json()["jobs"]
        return jobs

    def wait_idle(self, timeout_s: float = 30.0, *, user: str | None = None) -> None:
        """Until no job is pending or running (of ``user``'s connections, when given)."""
        deadline = time.monotonic() + timeout_s
        busy: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            busy = [j for j in self.jobs() if j["state"] in ("pending", "running")
                    and (user is None or j["user_id"] == user
                         or j["provider_user_id"] in self.extra.get(user, ()))]
            if not busy:
                return
            time.sleep(0.2)
        raise AssertionError(f"jobs still busy after {timeout_s} s: {busy[:3]}")

    def events(self, name: str, metric: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"metric": metric} if metric else {})}
            if cursor:
                params["cursor"] = cursor
            answer = self.api("GET", f"/api/v1/users/{name}/events", params=params)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found += body["events"]
            cursor = body["next"]
            if not cursor:
                return found

    def advance(self, wearer: int, days: int = 1) -> dict[str, Any]:
        result: dict[str, Any] = self.sim.admin("POST", f"/_sim/users/{wearer}/advance",
                                                params={"days": days})
        return result


def environment(sim_port: int, bridge_port: int, **extra: str) -> dict[str, str]:
    env = {**ENV, **CLIENTS, **FAST, **provider_urls(f"http://127.0.0.1:{sim_port}"),
           "AUREN_PUBLIC_URL": f"http://127.0.0.1:{bridge_port}"}
    env.update(extra)
    return env


@contextlib.contextmanager
def system(tmp: Path, *, end: date | None = None, **extra: str) -> Iterator[System]:
    """The simulator and an embedded bridge (fetcher in process unless ``extra`` says
    otherwise), on fresh ports; ``end``: the simulator's last visible day."""
    sim_port, bridge_port = free_port(), free_port()
    env = environment(sim_port, bridge_port, **extra)
    end = end or end_date()
    with run_server("bridge", tmp, env=env, port=bridge_port) as bridge, \
            run_sim(tmp, bridge=bridge.base_url, env=env, port=sim_port, end=end,
                    users=USERS) as sim:
        yield System(sim, bridge, env, end, tmp)


def revealed_day(result: dict[str, Any]) -> date:
    (day,) = result["revealed"]
    return date.fromisoformat(day)


def by_metric(events: list[dict[str, Any]], metric: str, *, provider: str | None = None,
              since: datetime | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["metric"] == metric
            and (provider is None or e["provider"] == provider)
            and (since is None or datetime.fromisoformat(e["start"]) >= since)]


def now() -> datetime:
    return datetime.now(UTC)


def child_env(world: System, **extra: str) -> dict[str, str]:
    """The environment of another process on the world's bridge's store."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_SECRET"))}
    env.update(world.env)
    env["AUREN_DATA_DIR"] = str(world.bridge.data_dir)
    env.update(extra)
    return env


@contextlib.contextmanager
def fetcher_process(world: System, log: Path, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``auren fetcher`` on the world's store; stopped (SIGTERM, then SIGKILL) by its pid."""
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "auren", "fetcher"],
                                   env=child_env(world, **extra), stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
