"""Connections and fetching on the full stack: a real bridge, sink and two fetcher processes on
real Kafka, PostgreSQL and Redis, and the provider API simulator.

The bridge answers the connect flow and puts the history's jobs into PostgreSQL's queue; the
notifications go through Kafka (the fetchers' consumer group adds their jobs); the fetchers
claim jobs from PostgreSQL, count the providers' limits in Redis, refresh tokens single-flight
under a PostgreSQL row lock, and publish the events to Kafka, which the sink writes to
PostgreSQL, where the API reads them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from auren.events import iso
from tests.connections.kit import (
    System,
    end_date,
    environment,
    histories,
    record,
    revealed_day,
)
from tests.helpers import free_port, run_server
from tests.sim.api.kit import run_sim
from tests.stack import SinkProcess, service_env, start_sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Stack:
    world: System
    sink: SinkProcess
    fetchers: list[subprocess.Popen[bytes]]
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(full_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fullstack-connections")
    sim_port, bridge_port = free_port(), free_port()
    env = {**full_stack.isolated(), **environment(sim_port, bridge_port)}
    end = end_date()
    with run_server("bridge", tmp, env=env, port=bridge_port) as bridge, \
            run_sim(tmp, bridge=bridge.base_url, env=env, port=sim_port, end=end) as sim:
        sink = start_sink(service_env(env, tmp / "sink"), tmp)
        fetchers = []
        for n in range(2):
            with (tmp / f"fetcher-{n}.log").open("wb") as log:
                fetchers.append(subprocess.Popen(
                    [sys.executable, "-m", "auren", "fetcher"],
                    env=service_env({**env, "FETCH_POLL_S": "0.1"}, tmp / f"fetcher-{n}"),
                    stdout=log, stderr=subprocess.STDOUT))
        try:
            yield Stack(System(sim, bridge, env, end, tmp), sink, fetchers, env)
        finally:
            for process in fetchers:
                process.terminate()
            for process in fetchers:
                assert process.wait(30) == 0
            assert sink.stop() == 0, sink.log()


def wait_for_events(world: System, name: str, metric: str, start: str,
                    timeout_s: float = 60.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in world.events(name, metric) if e["start"] == start]
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {metric} at {start} for {name}")


def test_a_bridge_without_an_encryption_key_refuses_to_start(full_stack, tmp_path: Path):
    env = {k: v for k, v in full_stack.isolated().items() if k != "AUREN_ENCRYPTION_KEY"}
    process = subprocess.run(
        [sys.executable, "-m", "auren", "serve", "bridge", "--port", str(free_port())],
        env=service_env(env, tmp_path / "data"), capture_output=True, text=True, timeout=60,
        check=False)
    assert process.returncode != 0
    assert "AUREN_ENCRYPTION_KEY is required" in process.stdout + process.stderr


def test_notifications_through_kafka_become_fetched_events_in_postgres(stack: Stack):
    world = stack.world
    world.connect("oura", "fs-oura", 1)
    world.connect("whoop", "fs-whoop", 2)
    world.wait_idle(90)
    day = revealed_day(world.advance(1))
    world.advance(2)
    world.wait_idle(90)
    r = record(world.end, 1, day)
    (hrv,) = wait_for_events(world, "fs-oura", "hrv_rmssd", iso(r.sleep_start))
    assert hrv["value"] == round(r.hrv_rmssd_ms) and hrv["provenance"] == "fetch"
    w = record(world.end, 2, day)
    (skin,) = wait_for_events(world, "fs-whoop", "skin_temperature", iso(w.sleep_start))
    assert skin["value"] == pytest.approx(round(33.6 + w.temperature_deviation_c, 2))
    events = world.events("fs-oura")
    assert max(Counter(e["event_id"] for e in events).values()) == 1
    assert {e["provenance"] for e in events} == {"fetch", "backfill"}
    # The providers' limits were counted in Redis, shared by both fetchers.
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        keys = list(client.scan_iter(match=stack.env["REDIS_KEY_PREFIX"] + "window:oura:*"))
    finally:
        client.close()
    assert keys


def test_one_refresh_of_a_rotating_token_across_fetcher_processes(stack: Stack):
    world = stack.world
    world.connect("whoop", "fs-refresh", 3)
    world.wait_idle(90)
    before = Counter(world.sim.admin("GET", "/_sim/stats"))
    world.sim.fault(kind="expired_token", provider="whoop", user="3")
    world.sim.fault(kind="timeout", provider="whoop", target="token", delay_s=1.5)
    puid = world.api("GET", "/api/v1/users/fs-refresh/connections").json()["connections"][0][
        "provider_user_id"]
    notified = sum(1 for n in world.advance(3, days=2)["notifications"]
                   if n["provider"] == "whoop")
    assert notified == 4
    # The notifications reach the queue through Kafka: wait until their jobs ran.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        mine = [j for j in world.jobs() if j["provider_user_id"] == puid
                and j["kind"] != "history"]
        if len(mine) == notified and {j["state"] for j in mine} == {"done"}:
            break
        time.sleep(0.3)
    after = Counter(world.sim.admin("GET", "/_sim/stats"))
    assert after["whoop:token_refreshed"] == before["whoop:token_refreshed"] + 1
    assert after["whoop:refresh_refused"] == before["whoop:refresh_refused"]
    (connection,) = world.api("GET", "/api/v1/users/fs-refresh/connections").json()[
        "connections"]
    assert connection["status"] == "active"
    assert {j["state"] for j in world.jobs() if j["user_id"] == "fs-refresh"
            or j["provider_user_id"] == connection["provider_user_id"]} == {"done"}
    assert histories(world.end)  # the calendar the expectations above came from
