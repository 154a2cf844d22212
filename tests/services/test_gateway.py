"""The gateway against real upstream processes: proxying, streaming caps, upstream failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    ServerProcess,
    free_port,
    hrv_event,
    native_body,
    native_headers,
    run_server,
)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("gw")
    with run_server("bridge", tmp) as bridge, run_server(
            "neuros", tmp, {"AUREN_DATA_DIR": str(bridge.data_dir)}) as neuros:
        yield {"bridge": bridge, "neuros": neuros}


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """A listener that accepts connections and never answers: an upstream that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    sock.close()


@pytest.fixture(scope="module")
def gateway(upstreams: dict[str, ServerProcess], black_hole: int,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"AUREN_BRIDGE_URL": upstreams["bridge"].base_url,
           "AUREN_NEUROS_URL": upstreams["neuros"].base_url,
           # The legacy route points at a port that hangs: the 504 path.
           "AUREN_LEGACY_URL": f"http://127.0.0.1:{black_hole}",
           "GATEWAY_TIMEOUT_S": "1", "GATEWAY_MAX_BODY_BYTES": "4096"}
    # /metrics for readiness: /health waits for the hanging upstream's probe to time out.
    with run_server("gateway", tmp_path_factory.mktemp("gw-own"), env,
                    ready_path="/metrics") as server:
        yield server


def test_proxies_a_signed_webhook_and_reads_it_back(gateway: ServerProcess) -> None:
    body = native_body("gw-user", [hrv_event(3)])
    response = httpx.post(gateway.base_url + "/api/bridge/webhooks/auren", content=body,
                          headers=native_headers(body), timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    events = httpx.get(gateway.base_url + "/api/bridge/api/v1/users/gw-user/events",
                       params={"metric": "hrv_rmssd"}, timeout=10).json()["events"]
    assert [e["value"] for e in events] == [55.0]
    chat = httpx.post(gateway.base_url + "/api/neuros/chat",
                      json={"message": "confirm you are operational", "user_id": "gw-user"},
                      timeout=10)
    assert chat.status_code == 200 and chat.json()["reply"]


def test_tampered_webhook_is_rejected_through_the_proxy(gateway: ServerProcess) -> None:
    body = native_body("gw-user", [hrv_event(4)])
    headers = native_headers(body)
    response = httpx.post(gateway.base_url + "/api/bridge/webhooks/auren", content=body + b" ",
                          headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_body_cap_is_enforced_while_streaming(gateway: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    response = httpx.post(gateway.base_url + "/api/bridge/webhooks/auren", content=chunks(),
                          timeout=10)
    assert response.status_code == 413


def test_hanging_upstream_is_a_504_and_a_dead_one_a_502(gateway: ServerProcess,
                                                        tmp_path: Path) -> None:
    response = httpx.get(gateway.base_url + "/api/legacy/health", timeout=10)
    assert response.status_code == 504
    assert response.json()["upstream"] == "legacy"
    dead = free_port()
    with run_server("gateway", tmp_path, {"AUREN_NEUROS_URL": f"http://127.0.0.1:{dead}"},
                    ready_path="/metrics") as gw:
        response = httpx.get(gw.base_url + "/api/neuros/health", timeout=10)
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("application/problem+json")


def test_health_aggregates_upstreams_and_dashboard_renders(gateway: ServerProcess) -> None:
    response = httpx.get(gateway.base_url + "/health", timeout=10)
    body = response.json()
    assert response.headers["content-type"].startswith("application/health+json")
    # Two upstreams answer, the legacy one hangs: degraded, not down.
    assert body["status"] == "warn"
    assert body["checks"]["bridge:responseTime"][0]["status"] == "pass"
    assert body["checks"]["legacy:responseTime"][0]["status"] == "fail"
    page = httpx.get(gateway.base_url + "/", timeout=10)
    assert page.status_code == 200 and "AUREN operations" in page.text
    assert "Enhanced Bridge v2" in page.text and "FAIL" in page.text
    metrics = httpx.get(gateway.base_url + "/metrics", timeout=10).text
    assert 'auren_gateway_requests_total{status="202",upstream="bridge"}' in metrics
