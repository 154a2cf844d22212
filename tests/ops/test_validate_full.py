"""``auren validate --stack full`` as a user runs it: a private Kafka/PostgreSQL/Redis stack, the
services, the sink and the fault proxy come up, every phase and drill runs, the reconciliation
reads PostgreSQL, and afterwards nothing it started is left, also after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests.ops.helpers import ROOT

pytestmark = pytest.mark.slow

SLA = """\
sla:
  - {name: chat, service: neuros, method: POST, path: /chat, latency_ms: 2000,
     percentile: 95, error_rate: 0.001, rate: 10, duration_s: 3}
  - {name: webhooks, service: bridge, method: POST, path: /webhooks/auren, latency_ms: 500,
     percentile: 95, error_rate: 0.01, rate: 50, duration_s: 3}
"""
# The drills wait for breakers to close and for the gateway's timeout: short ones here.
ENV = {"GATEWAY_TIMEOUT_S": "2", "BREAKER_OPEN_S": "2"}


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # PostgreSQL runs as another user and must reach the directory: pytest's are 0700.
    path = Path(tempfile.mkdtemp(prefix="auren-vfull-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Family:
    """Every process the command started, sampled while it runs (they outlive no sample)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.root = psutil.Process(process.pid)
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for child in self.root.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def alive(self) -> list[str]:
        left = []
        for proc in list(self.seen.values()):
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.Error:
                continue
        return left


def _validate(stack_dir: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes],
                                                                     Path, Path]:
    sla = tmp_path / "sla.yaml"
    sla.write_text(SLA)
    env = {**{k: v for k, v in os.environ.items()
              if not k.endswith(("_URL", "_SECRET", "_SERVERS"))}, **ENV}
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "auren", "validate", "--stack", "full", "--quick", "--json",
             "--sla", str(sla), "--ramp", "10,40", "--data-dir", str(stack_dir), "--reports",
             str(tmp_path / "reports"), *extra], cwd=ROOT, env=env, stdout=stdout,
            stderr=stderr)
    return process, out, err


def _nothing_left(family: Family, stack_dir: Path, ports: list[int]) -> None:
    family.stop()
    assert len(family.seen) >= 8, family.seen  # services, sink, proxy, Kafka, PostgreSQL...
    deadline = time.monotonic() + 15
    while family.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not family.alive(), family.alive()
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with_dir = str(stack_dir) in " ".join(proc.info["cmdline"] or []) or \
            str(proc.info["cwd"] or "").startswith(str(stack_dir))
        assert not with_dir, (proc.pid, proc.info)
    listening = {c.laddr.port for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr}
    assert not listening & set(ports), listening & set(ports)


@pytest.mark.timeout(900)
def test_full_stack_validation_passes_reconciles_in_postgres_and_leaves_nothing(
        stack_dir: Path, tmp_path: Path) -> None:
    process, out, err = _validate(stack_dir, tmp_path)
    family = Family(process)
    try:
        code = process.wait(840)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(120)
    summary = json.loads(out.read_text())
    report = Path(summary["report"]["json"])
    run = json.loads(report.read_text())
    urls = [item.partition("=")[2] for item in run["environment"]["urls"].split(", ")]
    ports = [urlsplit(url).port or 0 for url in urls]
    _nothing_left(family, stack_dir, ports)
    assert code == 0, (summary, err.read_text()[-3000:])
    assert summary["verdict"] == "PASS" and run["mode"] == "full stack"
    recon = run["reconciliation"]
    assert recon["status"] == "pass" and recon["lost"] == 0 and recon["duplicated"] == 0
    assert recon["store"].startswith("PostgreSQL") and recon["acknowledged"] > 1000
    # Every webhook the Enhanced Bridge acknowledged went through Kafka (the Original Bridge
    # of the comparison writes PostgreSQL directly).
    assert recon["acknowledged_by_service"]["legacy"] > 0
    enhanced = recon["acknowledged_by_service"]["bridge"]
    assert recon["kafka_records"] and recon["kafka_records"] >= enhanced > 1000
    checks = {c["name"].split(":")[0]: c for c in run["faults"]["checks"]}
    for dependency in ("kafka", "postgres", "redis"):
        for drill in ("kill", "slow", "partition"):
            check = checks[f"{dependency} {drill}"]
            assert check["status"] == "pass", check
    for dependency in ("kafka", "redis"):  # on the webhook path: their breakers must trip
        assert "→ open" in checks[f"{dependency} slow"]["detail"]
        assert "→ open" in checks[f"{dependency} partition"]["detail"]
    upstream = checks["gateway upstream slow"]
    assert upstream["status"] == "pass" and "504" in upstream["detail"], upstream
    assert [p["name"] for p in run["phases"]][-2:] == ["faults", "reconciliation"]
    assert (report.parent / "logs" / "bridge.log").stat().st_size > 0
    assert (report.parent / "logs" / "faultproxy.log").exists()


@pytest.mark.timeout(600)
def test_ctrl_c_tears_the_full_stack_down(stack_dir: Path, tmp_path: Path) -> None:
    process, _, err = _validate(stack_dir, tmp_path)
    family = Family(process)
    try:
        deadline = time.monotonic() + 420
        while "phase: SLA baselines" not in err.read_text():
            assert process.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.5)
        ports = []
        for proc in list(family.seen.values()):
            with contextlib.suppress(psutil.Error):
                ports += [c.laddr.port for c in proc.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN]
        assert len(ports) >= 8, ports  # services, proxy routes, Kafka, PostgreSQL, Redis
        process.send_signal(signal.SIGINT)
        code = process.wait(180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert code != 0
    assert "tearing the full stack down" in err.read_text()
    _nothing_left(family, stack_dir, ports)
