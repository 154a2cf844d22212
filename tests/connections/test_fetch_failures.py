"""What goes wrong between the fetcher and a provider, with real processes: a real simulator
injecting the fault, a real embedded bridge fetching. Each case ends with every job finished
(no job lost, none looping) and every event stored once.

The bridge runs with short timeouts and retries (``tests.connections.kit.FAST``): a call times
out after 2 s, a job is tried 4 times with 0.4 to 1.5 s between tries, and rate-limit waits up
to 3 s are waited inline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.connections.kit import (
    System,
    child_env,
    fetcher_process,
    revealed_day,
    system,
    user_id,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system(tmp_path_factory.mktemp("failures")) as found:
        yield found


@pytest.fixture(autouse=True)
def _clear_faults(world: System) -> Iterator[None]:
    yield
    if world.sim.admin("GET", "/_sim/faults"):
        world.sim.admin("DELETE", "/_sim/faults")


def stats(world: System) -> Counter[str]:
    return Counter(world.sim.admin("GET", "/_sim/stats"))


def jobs_of(world: System, name: str) -> list[dict[str, Any]]:
    return [j for j in world.jobs() if j["user_id"] == name
            or j["provider_user_id"] in world.extra.get(name, ())]


def connected(world: System, provider: str, wearer: int) -> str:
    name = f"{provider}-f{wearer}"
    answer = world.connect(provider, name, wearer)
    world.extra[name] = {answer["provider_user_id"]}
    world.wait_idle(60)
    return name


def metric_value(world: System, name: str, labels: str = "") -> float:
    for line in world.api("GET", "/metrics").text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def exactly_once(events: list[dict[str, Any]]) -> None:
    ids = Counter(e["event_id"] for e in events)
    assert max(ids.values()) == 1
    keys = Counter((e["metric"], e["start"], e["source_record_id"]) for e in events)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]


def new_events(world: System, name: str, before: set[str]) -> list[dict[str, Any]]:
    return [e for e in world.events(name) if e["event_id"] not in before]


def known(world: System, name: str) -> set[str]:
    return {e["event_id"] for e in world.events(name)}


def advance_and_settle(world: System, wearer: int, name: str, timeout_s: float = 60) -> str:
    day = revealed_day(world.advance(wearer)).isoformat()
    world.wait_idle(timeout_s, user=name)
    return day


@pytest.mark.parametrize(("fault", "wearer"), [
    ({"kind": "rate_limit", "retry_after_s": 1}, 1),  # waited inline
    ({"kind": "server_error", "status": 502, "count": 2}, 2),  # retried inside the call
    ({"kind": "server_error", "status": 503, "count": 4}, 3),  # the job is retried later
    ({"kind": "timeout", "delay_s": 4}, 4),  # past FETCH_TIMEOUT_S
    ({"kind": "malformed"}, 5),  # a body cut off half-way
], ids=["429-inline", "5xx-call", "5xx-job", "timeout", "malformed"])
def test_transient_faults_are_retried_until_every_job_is_done(world, fault, wearer):
    name = connected(world, "oura", wearer)
    before = known(world, name)
    world.sim.fault(provider="oura", user=str(wearer), **fault)
    advance_and_settle(world, wearer, name)
    states = Counter(j["state"] for j in jobs_of(world, name))
    assert set(states) == {"done"}, states
    events = new_events(world, name, before)
    assert {"sleep_duration", "hrv_rmssd", "readiness_score", "steps", "spo2"} <= {
        e["metric"] for e in events}
    exactly_once(world.events(name))
    assert world.sim.admin("GET", "/_sim/faults")[0]["hits"] >= 1


def test_a_long_retry_after_reschedules_the_job_and_counts_the_wait(world):
    name = connected(world, "oura", 6)
    waits = metric_value(world, "auren_fetch_rate_limit_waits_total",
                         '{provider="oura",source="provider"}')
    world.sim.fault(provider="oura", user="6", kind="rate_limit", retry_after_s=4)
    advance_and_settle(world, 6, name)
    jobs = jobs_of(world, name)
    assert {j["state"] for j in jobs} == {"done"}
    waited = [j for j in jobs if j["rate_limit_waits"]]
    assert len(waited) == 1 and waited[0]["attempts"] == 1  # a wait, not a failed attempt
    assert metric_value(world, "auren_fetch_rate_limit_waits_total",
                        '{provider="oura",source="provider"}') > waits
    exactly_once(world.events(name))


def run_cli(world: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auren", *args], capture_output=True,
                          text=True, env=child_env(world), timeout=60, check=False)


def test_a_job_that_keeps_failing_is_a_dead_letter_that_can_be_retried(world):
    name = connected(world, "oura", 7)
    before = known(world, name)
    world.sim.fault(provider="oura", user="7", kind="server_error", status=500, count=None)
    world.advance(7)
    world.wait_idle(60, user=name)  # nothing loops: every job ended
    dead = [j for j in jobs_of(world, name) if j["state"] == "dead"]
    assert len(dead) == 5 and all(j["attempts"] == 4 for j in dead)
    assert all("HTTP 500" in j["last_error"] for j in dead)
    listed = world.api("GET", "/api/v1/jobs", params={"state": "dead"}).json()["jobs"]
    assert {j["job_id"] for j in dead} <= {j["job_id"] for j in listed}
    assert new_events(world, name, before) == []
    deadline = time.monotonic() + 15
    while metric_value(world, "auren_fetch_jobs_dead") < 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric_value(world, "auren_fetch_jobs_dead") >= 5
    # The operator's view and retry, from the command line against the data directory.
    shown = run_cli(world, "jobs", "list", "--state", "dead", "--provider", "oura", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {orjson.loads(line)["job_id"] for line in shown.stdout.splitlines()} >= {
        j["job_id"] for j in dead}
    world.sim.admin("DELETE", "/_sim/faults")
    retried = run_cli(world, "jobs", "retry", *[j["job_id"] for j in dead])
    assert retried.returncode == 0 and "5 job(s)" in retried.stdout, retried.stderr
    world.wait_idle(30, user=name)
    assert {j["state"] for j in jobs_of(world, name)} == {"done"}
    assert {"sleep_duration", "hrv_rmssd"} <= {e["metric"]
                                               for e in new_events(world, name, before)}
    exactly_once(world.events(name))


def test_an_expired_access_token_is_refreshed_and_the_job_done(world):
    name = connected(world, "oura", 8)
    before, ids = stats(world), known(world, name)
    world.sim.fault(kind="expired_token", provider="oura", user="8")
    advance_and_settle(world, 8, name)
    assert stats(world)["oura:token_refreshed"] == before["oura:token_refreshed"] + 1
    assert {j["state"] for j in jobs_of(world, name)} == {"done"}
    assert new_events(world, name, ids)


def test_concurrent_refreshes_of_a_rotating_token_happen_once(world, tmp_path):
    """WHOOP's refresh token dies once used: the two jobs of a day (and a second fetcher
    process on the same store) all need a fresh token at once; one refresh serves them."""
    name = connected(world, "whoop", 9)
    with fetcher_process(world, tmp_path / "fetcher.log", FETCH_POLL_S="0.05"):
        time.sleep(2.5)  # both fetchers polling
        before = stats(world)
        world.sim.fault(kind="expired_token", provider="whoop", user="9")
        # A slow token endpoint: every job that needs a token arrives while it refreshes.
        world.sim.fault(kind="timeout", provider="whoop", target="token", delay_s=1.5)
        advance_and_settle(world, 9, name)
        advance_and_settle(world, 9, name)
        after = stats(world)
        assert after["whoop:token_refreshed"] == before["whoop:token_refreshed"] + 1
        assert after["whoop:refresh_refused"] == before["whoop:refresh_refused"]
        (connection,) = world.api("GET", f"/api/v1/users/{name}/connections").json()[
            "connections"]
        assert connection["status"] == "active"
        assert {j["state"] for j in jobs_of(world, name)} == {"done"}
        exactly_once(world.events(name))


def test_a_revoked_grant_needs_reauthorization_and_a_reconnect_resumes(world):
    name = connected(world, "fitbit", 10)
    world.sim.fault(kind="revoked", provider="fitbit", user="10")
    synced = world.api("POST", f"/api/v1/users/{name}/connections/fitbit/sync")
    assert synced.status_code == 202, synced.text
    world.wait_idle(30, user=name)
    (connection,) = world.api("GET", f"/api/v1/users/{name}/connections").json()["connections"]
    assert connection["status"] == "reauthorization_required"
    assert connection["last_error"]
    blocked = [j for j in jobs_of(world, name) if j["state"] == "blocked"]
    assert blocked and all(j["attempts"] == 1 for j in blocked)  # tried once, not forever
    assert metric_value(world, "auren_connections",
                        '{provider="fitbit",status="reauthorization_required"}') >= 1 or \
        _eventually_metric(world, '{provider="fitbit",status="reauthorization_required"}')
    again = world.connect("fitbit", name, 10)
    assert again["status"] == "active" and again["released_jobs"] == len(blocked)
    world.wait_idle(30, user=name)
    assert {j["state"] for j in jobs_of(world, name)} == {"done"}


def _eventually_metric(world: System, labels: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if metric_value(world, "auren_connections", labels) >= 1:
            return True
        time.sleep(0.5)
    return False


def test_the_providers_revocation_notice_marks_the_connection(world):
    name = connected(world, "fitbit", 11)
    world.sim.admin("POST", f"/_sim/users/{user_id(11)}/revoke", params={"provider": "fitbit"})
    world.wait_idle(30, user=name)
    (connection,) = world.api("GET", f"/api/v1/users/{name}/connections").json()["connections"]
    assert connection["status"] == "reauthorization_required"
