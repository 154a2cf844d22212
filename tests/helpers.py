"""Typed helpers for tests: free ports, real server processes, signed native webhooks,
deliveries built in memory.

Signatures here are computed with ``hmac`` directly from the Standard Webhooks definition, not
with the code under test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from auren.events import Delivery, FetchJob, fetch_job_id, make_event

NATIVE_KEY = b"auren-test-key-0123456789abcdef!"
NATIVE_SECRET = "whsec_" + base64.b64encode(NATIVE_KEY).decode()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def native_headers(body: bytes, *, key: bytes = NATIVE_KEY, msg_id: str | None = None,
                   timestamp: int | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
            "content-type": "application/json"}


def native_body(user_id: str, events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"type": "biometrics.recorded", "user_id": user_id, "events": events})


def hrv_event(day: int, value: float = 55.0, *, record: str | None = None) -> dict[str, Any]:
    return {"metric": "hrv_rmssd", "value": value, "unit": "ms",
            "start": f"2026-01-{day:02d}T06:00:00Z", "id": record or f"rec-{day}"}


@dataclass
class ServerProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_server(service: str, tmp_path: Path, env: dict[str, str] | None = None,
               *, workers: int = 1, ready_path: str = "/health", args: Sequence[str] = (),
               tls: ssl.SSLContext | None = None,
               port: int | None = None) -> Iterator[ServerProcess]:
    """Start ``auren serve <service>`` on a free loopback port (or ``port``); always stop it by
    its pid. ``args`` go on the command line; with ``tls`` (a client context trusting the
    server's CA) the server is reached over HTTPS."""
    port = port or free_port()
    data_dir = tmp_path / f"data-{port}"
    full_env = {k: v for k, v in os.environ.items()
                if not k.endswith(("_SECRET", "_URL", "_KEYS", "_SERVERS", "_TOKEN", "_CODE",
                                   "_CLIENT_ID", "_IPS"))}
    full_env.update({"AUREN_DATA_DIR": str(data_dir), "STANDARD_WEBHOOK_SECRET": NATIVE_SECRET,
                     "LOG_LEVEL": "INFO"})
    full_env.update(env or {})
    log_path = tmp_path / f"{service}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "auren", "serve", service, "--port", str(port),
             "--workers", str(workers), *args],
            stdout=log, stderr=subprocess.STDOUT, env=full_env)
    scheme = "https" if tls is not None else "http"
    server = ServerProcess(f"{scheme}://127.0.0.1:{port}", process, data_dir, log_path)
    try:
        # Start-up takes seconds; a busy machine, measuring coverage, can make it many more.
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()}")
            try:
                if httpx.get(server.base_url + ready_path, timeout=1,
                             verify=tls if tls is not None else True).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def delivery(key: str, user: str, days: range, *, jobs: int = 0) -> Delivery:
    """A parsed delivery: one HRV event per day of ``days`` after ``T0``, and ``jobs`` fetch
    jobs."""
    events = [make_event(provider="auren", user_id=user, provider_user_id=user,
                         metric="hrv_rmssd", value=40 + d, unit="ms",
                         start=T0 + timedelta(days=d), source_record_id=f"{user}-{d}",
                         received_at=T0 + timedelta(days=d)) for d in days]
    fetch = [FetchJob(job_id=fetch_job_id("oura", key, n), provider="oura", user_id=user,
                      provider_user_id=user, kind="sleep", object_id=str(n),
                      params={"n": n}) for n in range(jobs)]
    return Delivery(provider="auren", delivery_key=key, events=events, fetch_jobs=fetch)
