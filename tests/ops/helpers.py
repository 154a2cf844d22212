"""Helpers of the toolkit's tests: CLI options and secrets for a target, a fake service."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.ops.fakes", "--port", str(port),
                                *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "the fake service exited"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the fake service did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
