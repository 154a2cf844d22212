"""Shared code of the console's tests: a private deployment (the four services as processes on
free ports, embedded or on the full stack), its console logins, signed webhooks, and Debian's
chromium driven by Playwright.

Screenshots go to the test's own directory and are copied to ``reports/console-screenshots/``
at the repository's root (ignored by git), so that a run leaves them where a person looks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from auren.events import iso
from auren.ops.procs import ServiceSet, free_port
from auren.services.console.auth import hash_password
from tests.helpers import native_body, native_headers

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "reports" / "console-screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
OPERATOR, OPERATOR_PASSWORD = "ops", "operator-password-1"
VIEWER, VIEWER_PASSWORD = "watcher", "viewer-password-1"
SERVICE_KEY = "console-test-service-key-0123456789"
_USERS = " ".join([f"{OPERATOR}:operator:{hash_password(OPERATOR_PASSWORD)}",
                   f"{VIEWER}:viewer:{hash_password(VIEWER_PASSWORD)}"])


def needs(path: str | Path, what: str) -> None:
    """Skip without ``path``, except in CI (``CI`` set), where its absence is a failure."""
    if Path(path).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing: {what}")
    pytest.skip(f"{path} is missing: {what}")


def console_env(reports: Path, **extra: str) -> dict[str, str]:
    from tests.helpers import NATIVE_SECRET

    env = {"STANDARD_WEBHOOK_SECRET": NATIVE_SECRET, "GATEWAY_CONSOLE_USERS": _USERS,
           "AUREN_API_KEYS": SERVICE_KEY,
           "AUREN_REPORTS_DIR": str(reports), "LOG_LEVEL": "INFO"}
    env.update(extra)
    return env


@contextlib.contextmanager
def deployment(data_dir: Path, env: dict[str, str]) -> Iterator[ServiceSet]:
    """The four services (and the sink, on the full stack) on free ports, stopped after."""
    base = {k: v for k, v in os.environ.items()
            if not k.endswith(("_SECRET", "_URL", "_KEYS", "_SERVERS", "_TOKEN", "_CODE",
                               "_CLIENT_ID", "_IPS", "_USERS"))}
    ports = {name: free_port() for name in ("neuros", "legacy", "bridge", "gateway")}
    with ServiceSet(data_dir, {**base, **env}, ports) as services:
        yield services


@dataclass
class Session:
    """A signed-in console client over plain HTTP (what the page's script does)."""

    client: httpx.Client
    csrf: str

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post(path, json=body, headers={"x-csrf-token": self.csrf})


def sign_in(base_url: str, user: str = OPERATOR, password: str = OPERATOR_PASSWORD
            ) -> Session:
    client = httpx.Client(base_url=base_url, timeout=30, trust_env=False)
    answer = client.post("/console/api/login", json={"user": user, "password": password})
    assert answer.status_code == 200, answer.text
    return Session(client, answer.json()["csrf"])


def post_webhooks(bridge_url: str, user: str, count: int, *, prefix: str = "rec") -> int:
    """``count`` signed deliveries of one HRV measurement for ``user`` (this morning, then
    the 27 days before in turn); how many were accepted (2xx)."""
    accepted = 0
    today = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    with httpx.Client(timeout=10, trust_env=False) as client:
        for n in range(count):
            start = today - timedelta(days=n % 28)
            body = native_body(user, [{"metric": "hrv_rmssd", "value": 50.0 + n % 7,
                                       "unit": "ms", "start": iso(start),
                                       "id": f"{prefix}-{user}-{n}"}])
            answer = client.post(bridge_url + "/webhooks/auren", content=body,
                                 headers=native_headers(body))
            accepted += 200 <= answer.status_code < 300
    return accepted


class Screens:
    """Screenshots of one test: in its tmp dir, copied to reports/console-screenshots/."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        directory.mkdir(parents=True, exist_ok=True)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str, *, full_page: bool = True) -> Path:
        path = self.directory / f"{self.prefix}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        shutil.copy2(path, SCREENSHOTS / path.name)
        return path


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> float:
    """Seconds until ``predicate()`` was true; AssertionError after ``timeout_s``."""
    began = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - began
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(interval_s)
