"""auren serve all: four processes on the default ports, stopped gracefully by SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from auren.ops.procs import DEFAULT_PORTS
from tests.ops.helpers import ROOT


def _free(port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn binds: connections in TIME_WAIT from an earlier run do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_all_starts_four_services_and_stops_them_on_sigint(tmp_path: Path) -> None:
    if not all(_free(port) for port in DEFAULT_PORTS.values()):
        pytest.skip("a default port (8000/8888/8889/9000) is taken on this machine")
    with (tmp_path / "serve-all.log").open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "auren", "serve", "all",
                                    "--data-dir", str(tmp_path)], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get("http://127.0.0.1:9000/health", timeout=2).json()["status"] == \
                        "pass":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert process.poll() is None, (tmp_path / "serve-all.log").read_text()
            assert time.monotonic() < deadline, "serve all did not become healthy"
            time.sleep(0.2)
        children = psutil.Process(process.pid).children()
        assert len(children) == 4
        checks = httpx.get("http://127.0.0.1:9000/health", timeout=5).json()["checks"]
        assert [c[0]["status"] for c in checks.values() if c[0].get("componentId")] == \
            ["pass"] * 3  # NEUROS and both bridges, through the gateway
        assert "AUREN operations" in httpx.get("http://127.0.0.1:9000/", timeout=5).text
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                       for child in children)
        assert (tmp_path / "logs" / "bridge.log").stat().st_size > 0
    finally:
        if process.poll() is None:
            # Its services first (by pid), or they would outlive it on the default ports.
            for child in psutil.Process(process.pid).children():
                child.terminate()
            process.kill()
            process.wait(10)
