"""``auren fetcher`` as its own process beside a bridge that runs none (FETCHER_IN_BRIDGE=false):
nothing is fetched until it runs, ``--once`` stops when idle, and a fetcher killed in the middle
of a job loses nothing: the job's lease runs out, another fetcher claims it and finishes it, and
no event is stored twice."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.connections.kit import System, child_env, fetcher_process, system

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # A call may take 10 s (the held answer below is not a timeout); leases last 3 s.
    with system(tmp_path_factory.mktemp("process"), FETCHER_IN_BRIDGE="false",
                FETCH_TIMEOUT_S="10", FETCH_LEASE_S="3") as found:
        yield found


def states(world: System, name: str) -> Counter[str]:
    return Counter(j["state"] for j in world.jobs() if j["user_id"] == name
                   or j["provider_user_id"] in world.extra.get(name, ()))


def test_without_a_fetcher_jobs_wait_and_fetcher_once_runs_them(world):
    answer = world.connect("oura", "waiting", 1)
    world.extra["waiting"] = {answer["provider_user_id"]}
    time.sleep(1.0)
    assert states(world, "waiting") == {"pending": answer["history_jobs"]}
    once = subprocess.run([sys.executable, "-m", "auren", "fetcher", "--once", "--idle-exit",
                           "1"], env=child_env(world), capture_output=True, text=True,
                          timeout=120, check=False)
    assert once.returncode == 0, once.stderr
    assert "job run(s) finished" in once.stdout
    assert set(states(world, "waiting")) == {"done"}
    assert world.events("waiting")


def test_a_fetcher_killed_mid_job_leaves_the_job_to_the_next(world, tmp_path):
    answer = world.connect("oura", "killed", 2)
    world.extra["killed"] = {answer["provider_user_id"]}
    log = tmp_path / "fetchers.log"
    with fetcher_process(world, log) as first:
        world.wait_idle(60, user="killed")
        before = {e["event_id"] for e in world.events("killed")}
        # One answer of the new day is held for 8 s: its job is running when the fetcher dies.
        world.sim.fault(kind="timeout", provider="oura", user="2", delay_s=8)
        world.advance(2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = states(world, "killed")
            if found.get("running") == 1 and not found.get("pending"):
                break
            time.sleep(0.1)
        assert states(world, "killed")["running"] == 1
        first.kill()
        first.wait(10)
    running = [j for j in world.jobs() if j["state"] == "running"
               and j["provider_user_id"] in world.extra["killed"]]
    assert len(running) == 1
    with fetcher_process(world, log):
        world.wait_idle(60, user="killed")
    job = next(j for j in world.jobs() if j["job_id"] == running[0]["job_id"])
    assert job["state"] == "done" and job["attempts"] == 2  # claimed again, once
    events = world.events("killed")
    assert len({e["event_id"] for e in events}) == len(events)
    new = [e for e in events if e["event_id"] not in before]
    keys = Counter((e["metric"], e["start"]) for e in new)
    assert keys and max(keys.values()) == 1
    assert {"sleep_duration", "hrv_rmssd", "steps"} <= {m for m, _ in keys}
