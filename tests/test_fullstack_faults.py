"""The proof: faults under load against the real servers (auren.infra), each ending with K9.

Every test runs a fresh bridge and sink (own database, topics, consumer group, Redis prefix)
under an open-model load of signed webhooks with known record ids, injects one fault while
the load runs, lets the system recover, and checks the invariant of DESIGN.md:

    every webhook answered 2xx is in PostgreSQL exactly once (by record id), no record is
    stored twice, and nothing is stored that was not sent.

Faults: kill -9 of the Kafka broker, SIGSTOP of the broker for longer than the producer's
request timeout, PostgreSQL restarted under the sink, Redis killed, the bridge killed -9 (also
while its spool holds records), the sink killed -9 and restarted. The breaker's passage
open -> half-open -> closed is read from the bridge's /metrics.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from auren import infra
from tests import load_client
from tests.stack import (
    BridgeProcess,
    FullStack,
    LoadResult,
    SinkProcess,
    check_exactly_once,
    send_load,
    service_env,
    start_sink,
    untraced,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]

# Short timeouts so that each fault plays out in seconds (production keeps the defaults).
FAST = {
    "bus_timeout_s": 1.0,
    "kafka_message_timeout_s": 5.0,
    "breaker_window_s": 5.0,
    "breaker_min_calls": 3,
    "breaker_open_s": 1.0,
    "breaker_half_open_probes": 2,
    "store_timeout_s": 3.0,
    "redis_timeout_s": 0.3,
}


@dataclass
class Plane:
    stack: FullStack
    env: dict[str, str]
    bridge: BridgeProcess
    sink: SinkProcess
    tmp: Path

    @property
    def url(self) -> str:
        return self.env["POSTGRES_URL"]

    def restart_sink(self) -> None:
        self.sink = start_sink(service_env(self.env, self.tmp / "sink-data"), self.tmp)


@pytest.fixture
def plane(full_stack: FullStack, tmp_path: Path) -> Iterator[Plane]:
    yield from _running_plane(full_stack, tmp_path, **FAST)


def _running_plane(full_stack: FullStack, tmp_path: Path, *, timed: bool = False,
                   **settings: object) -> Iterator[Plane]:
    """Bridge and sink on an isolated slice of the stack with ``settings``; stopped after.

    ``timed``: the test bounds the bridge's latencies, so its processes run without the
    suite's coverage tracer. Traced, the bridge, the sink and the load client share two cores
    at a fraction of their speed, and a bound met with room to spare untraced (p99 0.5 s
    against 2.5) failed by seconds: that measured the tracer, not the bridge. The same code
    is measured by every other test here."""
    full_stack.ensure_up()
    env = full_stack.isolated(**settings)
    if timed:
        env = untraced(env)
    bridge = BridgeProcess(env, tmp_path / "bridge-data", tmp_path)
    bridge.start()
    sink = start_sink(service_env(env, tmp_path / "sink-data"), tmp_path)
    p = Plane(full_stack, env, bridge, sink, tmp_path)
    try:
        # Started before any fault: a sink still opening its stores when a test restarts
        # PostgreSQL fails its start-up (by design: a supervisor restarts it), which is not
        # what the tests here are about.
        sink.wait_started()
        yield p
    finally:
        p.sink.stop()
        bridge.stop()
        full_stack.ensure_up()  # whatever the test did to the servers, the next one needs them


def run_load(plane: Plane, prefix: str, count: int, rate: float,
             faults: list[tuple[float, Callable[[], None]]], *,
             concurrency: int = 64) -> LoadResult:
    """Send the load from a process of its own (``tests.load_client``: the latencies are the
    bridge's, not this long-lived process's); run ``faults`` (seconds after the load's start,
    action) here."""
    # The spool's fsync (where webhooks go while a dependency is out) also waits for the
    # file system to write back what the whole suite left dirty before it (on ext4 a commit
    # takes everything pending with it): flushed first, the latencies measured are the
    # bridge's, not the host's backlog.
    os.sync()
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.load_client", plane.bridge.base_url, prefix, str(count),
         str(rate), str(concurrency)],
        cwd=REPO, env=untraced(dict(os.environ)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line == b"started\n", (line, client.stderr.read() if client.stderr else b"")
        started = time.monotonic()
        for at, action in faults:
            time.sleep(max(0.0, started + at - time.monotonic()))
            action()
        out, err = client.communicate(timeout=180)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err.decode(errors="replace")[-3000:]
    return load_client.decode(out.strip().splitlines()[-1])


def wait_drained(bridge: BridgeProcess, timeout: float = 90.0) -> dict[str, object]:
    """Until the spool is empty and the Kafka breaker closed; returns the last health."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = bridge.health()
            checks = health["checks"]
            if checks["spool:records"][0]["observedValue"] == 0 and \
                    checks["breaker:kafka"][0]["observedValue"] == "closed":
                return health
        except Exception:  # noqa: BLE001, S110 - a bridge restarting does not answer yet
            pass
        assert time.monotonic() < deadline, f"not drained:\n{bridge.log()[-3000:]}"
        time.sleep(0.5)


def assert_breaker_cycled(bridge: BridgeProcess, name: str = "kafka") -> None:
    transitions = bridge.metric("auren_breaker_transitions_total")

    def count(source: str, target: str) -> float:
        return transitions.get(f'{{breaker="{name}",from="{source}",to="{target}"}}', 0.0)

    assert count("closed", "open") >= 1, transitions
    assert count("open", "half_open") >= 1, transitions
    assert count("half_open", "closed") >= 1, transitions


def assert_all_answered(load: LoadResult, allowed: set[int | str]) -> None:
    unexpected = {k: v for k, v in load.statuses().items() if k not in allowed}
    assert not unexpected, f"unexpected answers: {unexpected} (all: {load.statuses()})"


def test_kafka_broker_killed_mid_load_then_restarted(plane):
    cfg = plane.stack.cfg
    load = run_load(plane, "kill9", 1500, 100, [
        (3.0, lambda: infra.kill_server(cfg, "kafka")),
        (8.0, lambda: infra.up(cfg, ["kafka"], timeout=120, write_env=False)),
    ])
    # Nothing durable is never answered 2xx: while the broker is gone the spool takes it.
    assert_all_answered(load, {202})
    wait_drained(plane.bridge)
    assert_breaker_cycled(plane.bridge)
    counts = check_exactly_once(plane.url, "kill9", load)
    assert len(counts) == 3000
    assert plane.bridge.metric("auren_spool_written_total")[""] > 0, "the spool was used"


def test_kafka_broker_paused_longer_than_the_request_timeout(plane):
    """SIGSTOP: a hang, not a refusal. Connections stay open and nothing answers for longer
    than the producer's request timeout (5 s here) and the bridge's bus timeout (1 s)."""
    cfg = plane.stack.cfg
    load = run_load(plane, "hang", 1200, 100, [
        (2.0, lambda: infra.pause_server(cfg, "kafka")),
        (10.0, lambda: infra.resume_server(cfg, "kafka")),
    ])
    assert_all_answered(load, {202})
    assert max(load.latencies) < 15, "a hung broker must not hang the webhooks"
    wait_drained(plane.bridge)
    assert_breaker_cycled(plane.bridge)
    check_exactly_once(plane.url, "hang", load)


def test_postgres_restarted_under_the_sink(plane):
    cfg = plane.stack.cfg
    load = run_load(plane, "pgrestart", 1000, 100, [
        (3.0, lambda: infra.restart_server(cfg, "postgres", timeout=120)),
    ])
    # Kafka is the durable step: a PostgreSQL restart costs the webhooks nothing.
    assert_all_answered(load, {202})
    check_exactly_once(plane.url, "pgrestart", load, timeout=120)
    assert plane.sink.process.poll() is None, "the sink rode out the restart"


def test_redis_killed_mid_load(plane):
    cfg = plane.stack.cfg
    health: list[str] = []

    def kill_redis() -> None:
        infra.kill_server(cfg, "redis")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            body = plane.bridge.health()
            health.append(body["status"])
            if body["checks"]["redis:responseTime"][0]["status"] == "warn":
                break
            time.sleep(0.2)

    load = run_load(plane, "redis", 1000, 100, [
        (2.0, kill_redis),
        (7.0, lambda: infra.up(cfg, ["redis"], timeout=60, write_env=False)),
    ])
    assert_all_answered(load, {202})
    assert "warn" in health and "fail" not in health, health
    check_exactly_once(plane.url, "redis", load)


def test_health_answers_at_once_while_kafka_hangs(plane):
    """/health reads the latest round trips, made in the background: a Kafka broker that
    stopped answering does not make a load balancer's check wait for the ping's timeout
    (1 s), and its check turns to warn once the background ping gave up."""
    cfg = plane.stack.cfg
    latencies: list[float] = []
    kafka: list[str] = []
    infra.pause_server(cfg, "kafka")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            started = time.perf_counter()
            body = plane.bridge.health()
            latencies.append(time.perf_counter() - started)
            kafka.append(body["checks"]["kafka:responseTime"][0]["status"])
            if kafka[-1] == "warn":
                break
            time.sleep(0.1)
    finally:
        infra.resume_server(cfg, "kafka")
    assert kafka[-1] == "warn", kafka  # the spool takes the writes: the broker's loss warns
    assert max(latencies) < 0.5, sorted(latencies)[-5:]
    deadline = time.monotonic() + 60
    while plane.bridge.health()["checks"]["kafka:responseTime"][0]["status"] != "pass":
        assert time.monotonic() < deadline, "the broker's check did not come back"
        time.sleep(0.2)


def test_bridge_killed_mid_load(plane):
    """What the bridge answered 2xx before dying is durable; its successor takes over."""
    # 15 s of load at 100/s: killed at 3 s, a successor started at 4 s (start() returns once
    # it answers). The last 2 s of webhooks leave the successor up to 9 s to come up, which a
    # busy machine needs; whatever it took, those must all be accepted.
    load = run_load(plane, "bridge9", 1500, 100, [
        (3.0, plane.bridge.kill),
        (4.0, plane.bridge.start),
    ])
    statuses = load.statuses()
    assert statuses.get(202, 0) >= 400, statuses
    late = {i: a for i, a in load.answers.items() if i >= 1300}
    assert set(late.values()) == {202}, {a: list(late.values()).count(a) for a in late.values()}
    # In flight at the kill: connection errors, never a 2xx without durability.
    assert_all_answered(load, {202, "RemoteProtocolError", "ReadError", "ConnectError",
                               "ReadTimeout", "WriteError"})
    check_exactly_once(plane.url, "bridge9", load)


def test_bridge_killed_with_a_full_spool_replays_it_after_restart(plane):
    """Kafka down, webhooks accepted into the spool, the bridge killed -9; then Kafka back and
    a new bridge on the same data dir: the spool is replayed, nothing answered 2xx is lost."""
    cfg = plane.stack.cfg
    infra.kill_server(cfg, "kafka")
    load = asyncio.run(send_load(plane.bridge.base_url, "spooled", 300, rate=150,
                                 concurrency=32))
    assert_all_answered(load, {202})
    spooled = plane.bridge.health()["checks"]["spool:records"][0]["observedValue"]
    assert spooled > 0
    plane.bridge.kill()
    infra.up(cfg, ["kafka"], timeout=120, write_env=False)
    plane.bridge.start()
    wait_drained(plane.bridge)
    check_exactly_once(plane.url, "spooled", load)


def test_sink_killed_and_restarted_mid_stream(plane):
    def kill_and_restart() -> None:
        plane.sink.kill()
        time.sleep(2.0)
        plane.restart_sink()

    load = run_load(plane, "sink9", 1200, 120, [(4.0, kill_and_restart)])
    assert_all_answered(load, {202})
    counts = check_exactly_once(plane.url, "sink9", load, timeout=120)
    assert len(counts) == 2400


# --- a hung dependency: slow calls open the breaker, webhooks never wait on it ----------------

# Slow-call thresholds well under the timeouts above, so a hang is seen while it lasts.
SLOW = {**FAST, "kafka_slow_call_s": 0.5, "redis_slow_call_s": 0.1}
PAUSE_S = 8.0


@pytest.fixture
def slow_plane(full_stack: FullStack, tmp_path: Path) -> Iterator[Plane]:
    yield from _running_plane(full_stack, tmp_path, timed=True, **SLOW)


class BreakerWatch:
    """Polls the bridge's /health on a thread: (monotonic time, state) of one breaker."""

    def __init__(self, bridge: BridgeProcess, name: str) -> None:
        self.path: list[tuple[float, str]] = []
        self.slow_calls = 0
        self._bridge, self._name = bridge, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breaker-watch", daemon=True)

    def __enter__(self) -> BreakerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        # One kept-alive connection, every 0.25 s: /health answers at once (its round trips
        # are made in the background), and this thread runs in pytest's traced process,
        # which shares the two cores with the untraced bridge whose latency is under test.
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    body = client.get(self._bridge.base_url + "/health").json()
                    check = body["checks"][f"breaker:{self._name}"][0]
                    state = str(check["observedValue"])
                    self.slow_calls = max(self.slow_calls, int(check["slowCalls"]))
                except Exception:  # noqa: BLE001 - a /health that does not answer is "?"
                    state = "?"
                if not self.path or self.path[-1][1] != state:
                    self.path.append((time.monotonic(), state))
                self._stop.wait(0.25)

    def wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.path and self.path[-1][1] == "closed":
                return
            time.sleep(0.2)
        raise AssertionError(f"{self._name} breaker did not close again: {self.path}")


def opened_after(bridge: BridgeProcess, name: str, since: float) -> float | None:
    """Seconds from ``since`` (wall clock) to the breaker's first closed -> open, from the
    bridge's log (a /health poller can miss an open period of one second)."""
    from datetime import datetime

    for line in bridge.full_log().splitlines():
        if f"circuit {name}: closed -> open" in line:
            at = datetime.fromisoformat(orjson.loads(line)["ts"].replace("Z", "+00:00"))
            if at.timestamp() >= since:
                return at.timestamp() - since
    return None


def _pause_under_load(plane: Plane, dependency: str, prefix: str
                      ) -> tuple[LoadResult, BreakerWatch, float]:
    cfg = plane.stack.cfg
    paused_at: list[float] = []

    def pause() -> None:
        paused_at.append(time.time())
        infra.pause_server(cfg, dependency)

    with BreakerWatch(plane.bridge, dependency) as watch:
        try:
            load = run_load(plane, prefix, 1400, 100, [
                (3.0, pause),
                (3.0 + PAUSE_S, lambda: infra.resume_server(cfg, dependency)),
            ])
        finally:
            infra.resume_server(cfg, dependency)  # whatever happened, never left stopped
        watch.wait_closed(60)
    return load, watch, paused_at[0]


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


def test_kafka_paused_slow_calls_open_the_breaker_and_webhooks_stay_fast(slow_plane):
    """SIGSTOP of the broker: its publishes do not fail, they hang. Reported slow while they
    hang, weighted by the webhooks they carry, they open the breaker within seconds; every
    webhook is answered within about the bus timeout (from the spool), none waits out the
    pause, and everything answered 2xx is in PostgreSQL exactly once after the resume."""
    load, watch, paused_at = _pause_under_load(slow_plane, "kafka", "slowbus")
    opened = opened_after(slow_plane.bridge, "kafka", paused_at)
    p99, worst = _p99(load.latencies), max(load.latencies)
    print(f"kafka pause: breaker open after {opened} s; p99 {p99:.3f} s, max {worst:.3f} s")
    assert opened is not None and opened < 4.0, slow_plane.bridge.log()[-3000:]
    assert watch.slow_calls > 0, "the breaker opened on slow calls"
    assert_all_answered(load, {202})
    assert p99 < 2.5 and worst < PAUSE_S / 2, (p99, worst, load.slowest())
    wait_drained(slow_plane.bridge)
    assert_breaker_cycled(slow_plane.bridge)
    counts = check_exactly_once(slow_plane.url, "slowbus", load)
    assert len(counts) == 2800
    assert slow_plane.bridge.metric("auren_spool_written_total")[""] > 0, "the spool was used"
    slow = slow_plane.bridge.metric("auren_breaker_slow_calls_total")
    assert slow['{breaker="kafka"}'] > 0, slow


def test_redis_paused_slow_calls_open_its_breaker_and_webhooks_do_not_wait(slow_plane):
    """SIGSTOP of Redis (a fast path only): each round trip is abandoned after its short
    timeout and counted; the breaker opens within seconds and webhooks skip Redis."""
    load, _, paused_at = _pause_under_load(slow_plane, "redis", "slowredis")
    opened = opened_after(slow_plane.bridge, "redis", paused_at)
    p99, worst = _p99(load.latencies), max(load.latencies)
    print(f"redis pause: breaker open after {opened} s; p99 {p99:.3f} s, max {worst:.3f} s")
    assert opened is not None and opened < 4.0, slow_plane.bridge.log()[-3000:]
    assert_all_answered(load, {202})
    assert p99 < 1.5 and worst < PAUSE_S / 2, (p99, worst, load.slowest())
    assert_breaker_cycled(slow_plane.bridge, "redis")
    counts = check_exactly_once(slow_plane.url, "slowredis", load)
    assert len(counts) == 2800


# --- default settings: a hang under closed-loop load is a stall --------------------------------


@pytest.fixture
def default_plane(full_stack: FullStack, tmp_path: Path) -> Iterator[Plane]:
    """The production breaker settings: 10 s window, 5 calls, 50 %, 1 s Kafka slow threshold,
    2 s bus timeout, 5 s open."""
    yield from _running_plane(full_stack, tmp_path, timed=True)


def test_kafka_paused_with_default_settings_the_stall_rule_opens_the_breaker(default_plane):
    """What `auren faults --mode pause` does, with default settings: the broker SIGSTOPped under
    150 webhooks/s over 32 connections. The hung publishes hold every connection, so almost
    nothing completes and the failure rate over the 10 s window (full of fast calls) never gets
    there; the stall rule opens the breaker about a slow threshold (1 s) after the pause, the
    waiting batch goes to the spool, and no webhook waits out a bus timeout, let alone the
    pause. Every 2xx is in PostgreSQL exactly once, and the breaker closes after the resume."""
    plane = default_plane
    cfg = plane.stack.cfg
    paused_at: list[float] = []
    pause_s = 4.0

    def pause() -> None:
        paused_at.append(time.time())
        infra.pause_server(cfg, "kafka")

    with BreakerWatch(plane.bridge, "kafka") as watch:
        try:
            # 9 s of load: it outlasts the open period (5 s), so webhooks are among the
            # half-open probes (3 needed) that close the breaker again.
            load = run_load(plane, "stall", 1350, 150, [
                (1.5, pause),
                (1.5 + pause_s, lambda: infra.resume_server(cfg, "kafka")),
            ], concurrency=32)
        finally:
            infra.resume_server(cfg, "kafka")
        watch.wait_closed(60)
    opened = opened_after(plane.bridge, "kafka", paused_at[0])
    p99, worst = _p99(load.latencies), max(load.latencies)
    print(f"kafka pause, default settings: breaker open after {opened} s; p99 {p99:.3f} s, "
          f"max {worst:.3f} s; path {[state for _, state in watch.path]}")
    log = plane.bridge.full_log()
    assert opened is not None and opened < 2.5, log[-3000:]
    assert "circuit kafka: closed -> open (stalled:" in log, log[-3000:]
    assert_all_answered(load, {202})
    # Bounded by the slow threshold (1 s) plus an fsync, not the bus timeout (2 s).
    assert p99 < 1.8 and worst < 2.0, (p99, worst)
    wait_drained(plane.bridge)
    assert_breaker_cycled(plane.bridge)
    counts = check_exactly_once(plane.url, "stall", load)
    assert len(counts) == 2700
    stalls = plane.bridge.metric("auren_breaker_stalls_total")
    assert stalls['{breaker="kafka"}'] >= 1, stalls
    health = plane.bridge.health()["checks"]["breaker:kafka"][0]
    assert health["stalls"] >= 1 and "inFlight" in health and "oldestInFlight_s" in health
