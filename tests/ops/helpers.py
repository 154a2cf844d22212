"""Helpers of the toolkit's tests: CLI options and secrets for a target, helper processes (a
fake service, the lossy proxy) and what the lossy proxy dropped."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from auren.ops.target import Target
from tests.helpers import free_port


def url_options(target: Target) -> list[str]:
    """The CLI options that point a toolkit command at ``target``."""
    options = []
    for name in ("neuros", "legacy", "bridge", "gateway"):
        options += [f"--{name}", target.urls[name]]
    return [*options, "--data-dir", str(target.data_dir)]


def env_of(target: Target) -> dict[str, str]:
    """Secrets the embedded services verify with, for a toolkit command run as a subprocess."""
    out = {}
    for name, value in target.settings.model_dump().items():
        if isinstance(value, tuple) and value:
            out[name.upper()] = ",".join(v.get_secret_value() if hasattr(v, "get_secret_value")
                                         else str(v) for v in value)
        elif hasattr(value, "get_secret_value"):
            out[name.upper()] = value.get_secret_value()
        elif name == "withings_enabled" and value:
            out[name.upper()] = "true"
    return out


ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def fake_service(*args: str) -> Iterator[str]:
    """Run ``tests/ops/fakes.py`` with ``args`` on a free port; stopped by its pid."""
    with _helper_process("tests.ops.fakes", *args) as url:
        yield url


@contextlib.contextmanager
def lossy_proxy(upstream: str, secret: str, log: Path, every: int = 1000) -> Iterator[str]:
    """``tests/ops/lossy_proxy.py`` in front of ``upstream``: every ``every``-th signed
    webhook is answered 202 and dropped, its ids appended to ``log``."""
    with _helper_process("tests.ops.lossy_proxy", "--upstream", upstream, "--secret", secret,
                         "--every", str(every), "--log", str(log)) as url:
        yield url


def dropped(log: Path, offset: int = 0) -> list[dict[str, Any]]:
    """The deliveries the lossy proxy dropped (log lines from byte ``offset`` on)."""
    with log.open("rb") as lines:
        lines.seek(offset)
        return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def _helper_process(module: str, *args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                               cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"{module} exited"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{module} did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def auren_db(*args: str, env: dict[str, str], timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    """``auren db ARGS`` as a process with ``env``."""
    return subprocess.run([sys.executable, "-m", "auren", "db", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
