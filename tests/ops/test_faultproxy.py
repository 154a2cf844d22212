"""The fault proxy as a real process (``auren faultproxy``) in front of a real HTTP server:
every toxic measured on the wire, the control API's errors, and what a reset does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from auren.ops import faultproxy
from tests.helpers import free_port
from tests.ops.helpers import fake_service


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[faultproxy.Client, str]]:
    with fake_service() as upstream:
        port = urlsplit(upstream).port
        placement = faultproxy.Placement(free_port(), {"web": (free_port(),
                                                               f"127.0.0.1:{port}")})
        process = faultproxy.start(placement, tmp_path_factory.mktemp("fp") / "proxy.log")
        client = faultproxy.Client(placement.url)
        try:
            yield client, placement.route_url("web")
        finally:
            client.close()
            process.stop()
            assert not process.alive()


@pytest.fixture(autouse=True)
def clean(proxy: tuple[faultproxy.Client, str]) -> Iterator[None]:
    proxy[0].reset()
    yield
    proxy[0].reset()


def _timed(fn: object, *args: object, **kwargs: object) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - started, response


def test_latency_and_jitter_delay_every_answer_and_reset_undoes_them(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    with httpx.Client(base_url=url, trust_env=False, timeout=5) as http:
        base, response = _timed(http.get, "/health")
        assert response.status_code == 200 and base < 0.2
        # Added while the pooled connection is open: it acts on that connection too.
        control.add_toxic("web", "latency", latency=300, jitter=50)
        slow = [_timed(http.get, "/health")[0] for _ in range(4)]
        assert all(0.24 <= s <= 1.0 for s in slow), slow
        assert control.routes()["web"]["toxics"][0]["attributes"]["latency"] == 300
        control.reset()
        fast, _ = _timed(http.get, "/health")
        assert fast < 0.2


def test_upstream_latency_only_delays_requests(proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    control.add_toxic("web", "latency", stream="upstream", latency=200)
    elapsed, response = _timed(httpx.get, url + "/health", trust_env=False)
    assert response.status_code == 200 and elapsed >= 0.19


def test_bandwidth_and_slicer_pace_the_bytes_and_keep_them_intact(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    body = bytes(range(256)) * 400  # 100 KiB
    control.add_toxic("web", "bandwidth", stream="downstream", rate=100)  # KB/s
    elapsed, response = _timed(httpx.post, url + "/echo", content=body, trust_env=False,
                               timeout=10)
    assert response.content == body
    assert elapsed >= 0.8, elapsed  # 100 KiB at 100 KiB/s, less what one chunk takes
    control.reset()
    control.add_toxic("web", "slicer", stream="upstream", average_size=1000,
                      size_variation=200, delay=20_000)
    elapsed, response = _timed(httpx.post, url + "/echo", content=body[:10_000],
                               trust_env=False, timeout=10)
    assert response.content == body[:10_000]
    assert elapsed >= 0.15, elapsed  # ~10 slices, 20 ms apart


def _raw_get(sock: socket.socket) -> None:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and body may come in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_timeout_holds_the_bytes_until_removed_like_a_partition(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    port = urlsplit(url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        _raw_get(sock)
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")
        control.add_toxic("web", "timeout", stream="upstream", timeout=0)
        _raw_get(sock)
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # nothing passes: a partition
        control.reset()
        sock.settimeout(5.0)
        answer = _read_answer(sock)  # the held request went through intact afterwards
        assert answer.startswith(b"HTTP/1.1 200"), answer


def test_timeout_with_a_bound_closes_and_reset_peer_resets(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    port = urlsplit(url).port
    control.add_toxic("web", "timeout", stream="upstream", timeout=300)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the proxy, nothing answered
        assert 0.25 <= time.monotonic() - started < 3
    control.reset()
    control.add_toxic("web", "reset_peer", timeout=200)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            pytest.raises(ConnectionResetError):
        sock.recv(4096)


def test_a_disabled_route_refuses_and_toxicity_zero_does_nothing(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, url = proxy
    control.set_enabled("web", False)
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", trust_env=False, timeout=2)
    control.set_enabled("web", True)
    assert httpx.get(url + "/health", trust_env=False, timeout=2).status_code == 200
    control.add_toxic("web", "latency", latency=1000, toxicity=0.0)
    elapsed, response = _timed(httpx.get, url + "/health", trust_env=False, timeout=5)
    assert response.status_code == 200 and elapsed < 0.5


def test_control_api_answers_bad_requests_with_problem_json(
        proxy: tuple[faultproxy.Client, str]) -> None:
    control, _ = proxy
    api = control.url
    bad = httpx.post(api + "/proxies/web/toxics", json={"type": "gremlins"}, trust_env=False)
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert httpx.post(api + "/proxies/nope/toxics", json={"type": "latency"},
                      trust_env=False).status_code == 404
    assert httpx.post(api + "/proxies/web/toxics", json={"type": "latency",
                                                         "attributes": {"latency": -1}},
                      trust_env=False).status_code == 400
    control.add_toxic("web", "latency", latency=1, name="once")
    with pytest.raises(faultproxy.FaultProxyError) as exc:
        control.add_toxic("web", "latency", latency=1, name="once")
    assert exc.value.status == 409
    with pytest.raises(faultproxy.FaultProxyError):
        control.remove_toxic("web", "never")


def test_route_syntax_is_checked(tmp_path: Path) -> None:
    assert faultproxy.parse_route("redis=16379=127.0.0.1:6379") == \
        ("redis", 16379, "127.0.0.1:6379")
    for bad in ("redis=x=127.0.0.1:6379", "redis=16379", "=1=h:2", "r=1=nohost"):
        with pytest.raises(faultproxy.FaultProxyError):
            faultproxy.parse_route(bad)
