"""The wrk engine's script against real servers: which answer each request got, the 2xx
answers' own latencies, and 503s that come without ``Retry-After``."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auren.ops import workloads, wrk
from tests.helpers import NATIVE_SECRET, run_server

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="wrk is not installed (scripts/install-system)")


def test_admitted_latencies_stand_apart_from_the_503s_admission_sheds(tmp_path: Path) -> None:
    # One webhook in flight, none waiting: most of 16 connections' webhooks are shed at once.
    env = {"MAX_CONCURRENT_WEBHOOKS": "1", "MAX_QUEUED_WEBHOOKS": "0"}
    with run_server("bridge", tmp_path, env) as bridge:
        factory = workloads.webhooks(bridge.base_url, NATIVE_SECRET)
        result = wrk.run(bridge.base_url, factory, connections=16, duration_s=2,
                         pool_size=60_000)
    assert result.statuses[202] > 0 and result.statuses[503] > 0, result.statuses
    assert result.no_retry_after_503 == 0  # the bridge's 503s all say when to come back
    admitted = result.admitted_ms
    assert set(admitted) == {"p50", "p90", "p95", "p99", "p99.9", "max"}
    assert 0 < admitted["p50"] <= admitted["p99"] <= admitted["max"]
    # Timed by the script from request() to response(): within wrk's own range of latencies.
    assert admitted["max"] <= result.latency_ms["max"] * 1.05 + 1
    assert not result.wrapped


@contextmanager
def _shedding_without_retry_after() -> Iterator[str]:
    """A server answering every request 503 without ``Retry-After`` (keep-alive)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"

    def serve(conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffered += data
                # Each request is headers plus a content-length body.
                while b"\r\n\r\n" in buffered:
                    head, _, rest = buffered.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(rest) < length:
                        break
                    buffered = rest[length:]
                    conn.sendall(answer)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_503_without_retry_after_is_counted() -> None:
    with _shedding_without_retry_after() as url:
        factory = workloads.webhooks(url, NATIVE_SECRET)
        result = wrk.run(url, factory, connections=2, duration_s=1, pool_size=20_000)
    assert result.statuses[503] > 0
    assert result.no_retry_after_503 == result.statuses[503]
    assert result.admitted_ms == {}  # no 2xx: nothing to time
