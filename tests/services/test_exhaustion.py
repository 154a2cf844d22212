"""Slow and idle clients do not hold a service: real bridge, NEUROS and gateway processes on the
loopback, attacked by 1,000 slow bodies, 500 slow headers and 2,000 idle connections (half
straight at the bridge, half at the gateway's ``/api/bridge``) while legitimate traffic is
measured:

- signed webhooks straight to the bridge and through the gateway, and ``GET
  /api/neuros/health`` through the gateway (the prefix not attacked): 0 errors, p99 < 100 ms;
- every attacking connection is closed within its bound (the header deadline for those that
  never speak or send their headers a byte a second, the body deadline for bodies sent a byte a
  second) plus a scheduling slack, none is held past it, and the services' file descriptors
  come back to where they were.

The bounds are small (2 s, the body deadline 4 s) so the test is quick. The attacker is a
process of its own (``tests/services/slow_clients.py``), each of its connections starting again
once closed, so the pressure holds for the whole measurement.

The attacker shares this machine with the services, which it would not in life, and its CPU
(and that of the servers it keeps busy) lengthens every process's wait for a core: on a 2-core
machine shared with other work, that alone was measured to take the same traffic's p99 from
~40 ms to ~185 ms with the attack aimed at other processes. So the same traffic is also
measured while the identical attack is aimed at *decoys* (a second bridge and gateway): same
load on the machine, the services themselves untouched. Windows alternate (decoys, services,
decoys, services) and are pooled per condition, because the load other work puts on a shared
machine swings by more than the effect looked for. The p99 under attack must be under 100 ms
or, when the decoy windows show the machine cannot give that even with the services
unattacked, under 1.5 times their p99: attacking the services costs no more than the attack's
own load. The figures are printed (``-s``) and written to ``exhaustion.json`` in the test's
temporary directory.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.helpers import ServerProcess, hrv_event, native_body, native_headers, run_server

pytestmark = pytest.mark.slow

HEADER_S, BODY_S, KEEPALIVE_S = 2.0, 4.0, 2.0
BOUNDS = {"silent": HEADER_S, "slow_headers": HEADER_S, "slow_body": BODY_S}
SERVER_ENV = {"HTTP_HEADER_TIMEOUT_S": str(HEADER_S), "HTTP_BODY_IDLE_TIMEOUT_S": "2",
              "HTTP_BODY_TIMEOUT_S": str(BODY_S), "HTTP_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_S),
              "TRUSTED_PROXIES": "127.0.0.1", "LOG_LEVEL": "WARNING"}
# Per attacked service: the 1,000 slow bodies, 500 slow headers and 2,000 idle
# connections (connections that never send a request), split in two. (A kept-alive
# connection left idle after its answer is closed by the keep-alive bound: that is shown in
# test_connections.py.)
PER_TARGET = {"slow_body": 500, "slow_headers": 250, "silent": 1000}
# A close may come this much after its bound: timers on a loaded, shared 2-core machine.
SLACK_S = 1.0
MEASURE_S = 8.0
WINDOWS = 2
RATE_PER_S = 25
P99_MS = 100.0
DIRECT, THROUGH, OTHER_PREFIX = ("webhooks to the bridge", "webhooks through the gateway",
                                 "neuros health through the gateway")


def _scale() -> float:
    """The share of the planned connections this machine's open-file limit allows."""
    needed = 2 * sum(PER_TARGET.values()) + 500
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else needed
    return min(1.0, (ceiling - 500) / (needed - 500))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("exhaustion")
    with run_server("bridge", tmp, SERVER_ENV) as bridge, \
            run_server("neuros", tmp, {**SERVER_ENV,
                                       "AUREN_DATA_DIR": str(bridge.data_dir)}) as neuros, \
            run_server("gateway", tmp, {**SERVER_ENV, "AUREN_BRIDGE_URL": bridge.base_url,
                                        "AUREN_NEUROS_URL": neuros.base_url},
                       ready_path="/metrics") as gateway, \
            run_server("bridge", tmp, SERVER_ENV) as decoy_bridge, \
            run_server("gateway", tmp, {**SERVER_ENV, "AUREN_BRIDGE_URL": decoy_bridge.base_url},
                       ready_path="/metrics") as decoy_gateway:
        yield {"bridge": bridge, "neuros": neuros, "gateway": gateway,
               "decoy bridge": decoy_bridge, "decoy gateway": decoy_gateway}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _legitimate(name: str, url: str, webhook: bool, until: float,
                      results: dict[str, dict[str, Any]]) -> None:
    """Paced requests (RATE_PER_S) on one keep-alive client: latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = itertools.count()
    interval = 1 / RATE_PER_S
    async with httpx.AsyncClient(timeout=10) as client:
        due = time.perf_counter()
        while time.perf_counter() < until:
            due += interval
            began = time.perf_counter()
            try:
                if webhook:
                    body = native_body(f"legit-{name}", [hrv_event(
                        next(counter) % 28 + 1, record=uuid.uuid4().hex)])
                    headers = native_headers(body)
                    began = time.perf_counter()
                    response = await client.post(url, content=body, headers=headers)
                    ok = response.status_code == 202
                else:
                    response = await client.get(url)
                    ok = response.status_code == 200
                if not ok:
                    errors.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    results[name] = {"latencies": latencies, "errors": errors}


def _summary(windows: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each stream's latencies and errors pooled over ``windows``."""
    out = {}
    for name in windows[0]:
        latencies = [x for window in windows for x in window[name]["latencies"]]
        errors = [e for window in windows for e in window[name]["errors"]]
        out[name] = {"requests": len(latencies), "errors": errors,
                     "p50_ms": round(_percentile(latencies, 0.5), 1),
                     "p99_ms": round(_percentile(latencies, 0.99), 1),
                     "max_ms": round(max(latencies), 1)}
    return out


def _traffic(system: dict[str, ServerProcess], seconds: float) -> dict[str, dict[str, Any]]:
    """The three legitimate streams at once, for ``seconds``."""
    bridge, gateway = system["bridge"].base_url, system["gateway"].base_url
    results: dict[str, dict[str, Any]] = {}
    until = time.perf_counter() + seconds

    async def run() -> None:
        await asyncio.gather(
            _legitimate(DIRECT, bridge + "/webhooks/auren", True, until, results),
            _legitimate(THROUGH, gateway + "/api/bridge/webhooks/auren", True, until, results),
            _legitimate(OTHER_PREFIX, gateway + "/api/neuros/health", False, until, results))

    asyncio.run(run())
    return results


class FdSampler(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.stop = threading.Event()

    def now(self) -> dict[str, int]:
        return {name: p.num_fds() for name, p in self.processes.items()}

    def cpu_s(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                now = self.now()
            except psutil.NoSuchProcess:  # a service ended (the test failed and tore down)
                return
            for name, fds in now.items():
                self.peak[name] = max(self.peak[name], fds)


class Attack:
    """The slow-client process aimed at a bridge and a gateway, for ``duration_s``."""

    def __init__(self, bridge: ServerProcess, gateway: ServerProcess, counts: dict[str, int],
                 duration_s: float, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        plan = {"duration_s": duration_s, "spread_s": BOUNDS, "targets": [
            {"host": "127.0.0.1", "port": int(bridge.base_url.rsplit(":", 1)[1]),
             "path": "/webhooks/auren", "idle_path": "/idle", "counts": counts},
            {"host": "127.0.0.1", "port": int(gateway.base_url.rsplit(":", 1)[1]),
             "path": "/api/bridge/webhooks/auren", "idle_path": "/idle", "counts": counts}]}
        (workdir / "plan.json").write_bytes(orjson.dumps(plan))
        self.out = workdir / "attack.json"
        self.log = workdir / "attack.log"
        self.duration_s = duration_s
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.services.slow_clients", "--plan",
                 str(workdir / "plan.json"), "--out", str(self.out)], stdout=log, stderr=log)
        self.cpu = psutil.Process(self.process.pid)

    def wait_ready(self) -> None:
        ready = self.out.with_name(self.out.name + ".ready")
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the attack did not get its connections"
            time.sleep(0.1)
        time.sleep(1.0)  # every kind of connection is now open and misbehaving

    def cpu_s(self) -> float:
        return sum(self.cpu.cpu_times()[:2])

    def result(self) -> dict[str, Any]:
        try:
            self.process.wait(self.duration_s + 30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        return dict(orjson.loads(self.out.read_bytes()))


# Four windows of about 20 s each (an attack's duration), plus five servers' start-up.
@pytest.mark.timeout(300)
def test_slow_and_idle_clients_do_not_hold_the_services(
        system: dict[str, ServerProcess], tmp_path: Path) -> None:
    bridge, gateway = system["bridge"], system["gateway"]
    scale = _scale()
    counts = {kind: max(1, int(n * scale)) for kind, n in PER_TARGET.items()}
    duration_s = MEASURE_S + 2 * max(BOUNDS.values()) + 3
    sampler = FdSampler({"bridge": bridge.process.pid, "gateway": gateway.process.pid,
                         "neuros": system["neuros"].process.pid})
    fds_before = sampler.now()
    sampler.start()
    # Windows alternate, the attack on the decoys then on the services, twice: the load the
    # other work puts on a shared machine swings by more than the effect looked for, and
    # alternating and pooling gives both conditions the same share of it.
    decoy_windows: list[dict[str, dict[str, Any]]] = []
    attack_windows: list[dict[str, dict[str, Any]]] = []
    attacks: list[dict[str, Any]] = []
    cpu_share: dict[str, float] = {}
    for round_ in range(WINDOWS):
        decoy = Attack(system["decoy bridge"], system["decoy gateway"], counts, duration_s,
                       tmp_path / f"decoy-{round_}")
        decoy.wait_ready()
        decoy_windows.append(_traffic(system, MEASURE_S))
        decoy.result()
        attack = Attack(bridge, gateway, counts, duration_s, tmp_path / f"attack-{round_}")
        attack.wait_ready()
        cpu_before = {**sampler.cpu_s(), "attacker": attack.cpu_s()}
        attack_windows.append(_traffic(system, MEASURE_S))
        cpu = {**sampler.cpu_s(), "attacker": attack.cpu_s()}
        for name in cpu:
            cpu_share[name] = cpu_share.get(name, 0.0) + (cpu[name] - cpu_before[name]) / (
                WINDOWS * MEASURE_S) * 100
        attacks.append(attack.result())
    time.sleep(max(BOUNDS.values()) + SLACK_S)
    sampler.stop.set()
    sampler.join(2)
    fds_after = sampler.now()
    legit, control = _summary(attack_windows), _summary(decoy_windows)
    attacked: dict[str, Any] = {
        "closes": {kind: [t for a in attacks for t in a["closes"].get(kind, [])]
                   for kind in BOUNDS},
        "open_at_end": {kind: [t for a in attacks for t in a["open_at_end"].get(kind, [])]
                        for kind in BOUNDS},
        "answered_408": {kind: sum(a["answered_408"].get(kind, 0) for a in attacks)
                         for kind in BOUNDS},
        "connect_errors": [a["connect_errors"] for a in attacks if a["connect_errors"]],
        "errors": [a["errors"] for a in attacks if a["errors"]],
        "peak_open": min(a["peak_open"] for a in attacks),
        "nofile": attacks[0]["nofile"]}
    cpu_share = {name: round(value, 1) for name, value in cpu_share.items()}

    closes = {kind: {"closed": len(times), "p50_s": round(_percentile(times, 0.5), 2),
                     "p99_s": round(_percentile(times, 0.99), 2),
                     "max_s": round(max(times), 2), "bound_s": BOUNDS[kind],
                     "answered_408": attacked["answered_408"].get(kind, 0),
                     "open_at_end_max_s": round(max(attacked["open_at_end"].get(kind, [0])),
                                                2)}
              for kind, times in attacked["closes"].items() if times}
    report = {"scale": scale, "connections_per_target": counts,
              "attack_peak_open": attacked["peak_open"], "attacker_nofile": attacked["nofile"],
              "under_attack": {k: {**v, "errors": len(v["errors"])} for k, v in legit.items()},
              "attack_on_decoys": {k: {**v, "errors": len(v["errors"])}
                                   for k, v in control.items()},
              "closes": closes, "connect_errors": attacked["connect_errors"],
              "send_errors": attacked["errors"],
              "fds": {"before": fds_before, "peak": sampler.peak, "after": fds_after},
              "cpu_pct_of_a_core_under_attack": cpu_share,
              "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    (tmp_path / "exhaustion.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print("\n" + orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())

    # The attack was as large as planned, and all of it was there at once.
    assert attacked["peak_open"] >= 0.9 * 2 * sum(counts.values())
    assert not attacked["connect_errors"], attacked["connect_errors"]
    # Legitimate traffic never failed, and its tail stayed within budget (see the docstring).
    for name, result in legit.items():
        assert result["errors"] == [], (name, result["errors"][:5])
        assert control[name]["errors"] == [], (name, control[name]["errors"][:5])
        assert result["requests"] >= 0.8 * WINDOWS * MEASURE_S * RATE_PER_S, (name, result)
        budget = max(P99_MS, 1.5 * control[name]["p99_ms"])
        assert result["p99_ms"] < budget, (name, result, control[name])
    # Every kind of misbehaviour was closed, each within its bound, none held past it.
    assert set(closes) == set(BOUNDS)
    for kind, stats in closes.items():
        assert stats["closed"] >= 2 * WINDOWS * counts[kind], (kind, stats)
        assert stats["max_s"] <= BOUNDS[kind] + SLACK_S, (kind, stats)
        assert stats["open_at_end_max_s"] <= BOUNDS[kind] + SLACK_S, (kind, stats)
    # Those that had begun a request were told why (408); idle ones just closed.
    assert closes["slow_headers"]["answered_408"] >= 0.9 * closes["slow_headers"]["closed"]
    assert closes["slow_body"]["answered_408"] >= 0.9 * closes["slow_body"]["closed"]
    # And the services hold what they held before (file descriptors).
    for name, fds in fds_after.items():
        assert fds <= fds_before[name] + 30, (name, fds_before[name], fds)
