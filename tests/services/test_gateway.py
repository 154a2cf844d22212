"""The gateway against real upstream processes: proxying, streaming caps, upstream failures,
and what a proxy on the internet must hold (routing by prefix only, headers as bytes, hop-by-hop
headers, X-Forwarded-For, one pool per upstream, hostile input never a 5xx)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import uvicorn

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
    # The gateway in front is their proxy: its X-Forwarded-For tells them who the client is.
    trust = {"TRUSTED_PROXIES": "127.0.0.1"}
    with run_server("bridge", tmp, trust) as bridge, run_server(
            "neuros", tmp, {"AUREN_DATA_DIR": str(bridge.data_dir), **trust}) as neuros:
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
    assert page.status_code == 200 and "AUREN operations" in page.text  # the console's page
    metrics = httpx.get(gateway.base_url + "/metrics", timeout=10).text
    assert 'auren_gateway_requests_total{status="202",upstream="bridge"}' in metrics


class EchoUpstream:
    """A plain HTTP server standing where an upstream would, that shows what the gateway sent
    it (``/echo``), holds a request (``/slow?s=``), and answers with hop-by-hop headers, a
    large body (``/big``) or a stream of unknown length (``/stream``)."""

    BIG = 1_048_576

    def __init__(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off",
                                interface="asgi3",
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/slow":
            await asyncio.sleep(float(parse_qs(scope["query_string"].decode())["s"][0]))
        if path == "/big":
            body = bytes(range(256)) * (self.BIG // 256)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(5):
                await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(),
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        payload = orjson.dumps({
            "method": scope["method"], "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"), "size": size,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]})
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"x-upstream-hop"), (b"x-upstream-hop", b"1"),
            (b"keep-alive", b"timeout=5"), (b"proxy-authenticate", b"Basic"),
            (b"x-upstream-end", b"caf\xc3\xa9"),
            (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"), (b"server", b"echo")]})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> EchoUpstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def edge(upstreams: dict[str, ServerProcess], echo: EchoUpstream,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway whose bridge and legacy prefixes lead to the echo upstream, with pools of two
    connections, and which trusts no proxy (its own clients are the test, on 127.0.0.1)."""
    env = {"AUREN_BRIDGE_URL": echo.url, "AUREN_LEGACY_URL": echo.url,
           "AUREN_NEUROS_URL": upstreams["neuros"].base_url,
           "GATEWAY_POOL_CONNECTIONS": "2", "GATEWAY_POOL_TIMEOUT_S": "0.5",
           "GATEWAY_TIMEOUT_S": "10"}
    with run_server("gateway", tmp_path_factory.mktemp("edge"), env) as server:
        yield server


def _port(server: ServerProcess) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def _raw(server: ServerProcess, request: bytes) -> tuple[int, bytes]:
    """Send exact bytes; the status and the whole response (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def _errors(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if '"level":"ERROR"' in line]


def test_the_path_prefix_alone_chooses_the_upstream(gateway: ServerProcess) -> None:
    for query in ("_name=neuros", "_name=unknown", "name=neuros&upstream=legacy"):
        response = httpx.get(f"{gateway.base_url}/api/bridge/health?{query}", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["serviceId"] == "auren-bridge"
    for path in ("/api/unknown/health", "/api/bridge", "/api/%62ridge/health", "/apix/x"):
        response = httpx.get(gateway.base_url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
    assert _errors(gateway) == []


def test_hostile_bytes_get_a_4xx_through_the_gateway(gateway: ServerProcess) -> None:
    body = native_body("gw-hostile", [hrv_event(5)])
    signed = native_headers(body)

    def webhook(timestamp: bytes, extra: bytes = b"") -> bytes:
        return (b"POST /api/bridge/webhooks/auren HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nConnection: close\r\n"
                b"webhook-id: " + signed["webhook-id"].encode() + b"\r\n"
                b"webhook-timestamp: " + timestamp + b"\r\n"
                b"webhook-signature: " + signed["webhook-signature"].encode() + b"\r\n"
                + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    cases = {
        "non-ASCII header value": (b"GET /api/bridge/health HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n"),
        "%00 in the path": b"GET /api/bridge/webhooks/%00 HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n",
        "%00 in a user id": b"GET /api/bridge/api/v1/users/a%00b/events HTTP/1.1\r\n"
                            b"Host: x\r\nConnection: close\r\n\r\n",
        "non-ASCII query": b"GET /api/bridge/health?q=\xc3\xa9%ff HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n",
        "superscript digit timestamp": webhook("\u00b2\u00b3".encode("latin-1")),
        "Arabic-Indic digit timestamp": webhook("\u0661\u0662\u0663".encode()),
        "fullwidth digit timestamp": webhook("\uff11\uff12".encode()),
        "DEL in a header": webhook(signed["webhook-timestamp"].encode(), b"X-Odd: a\x7fb\r\n"),
    }
    for name, request in cases.items():
        status, response = _raw(gateway, request)
        assert 400 <= status < 500 or status == 200, (name, response[:300])
    assert _errors(gateway) == []


def test_headers_cross_as_bytes_without_hop_by_hop_ones(edge: ServerProcess) -> None:
    status, response = _raw(edge, (
        b"GET /api/legacy/echo%00/a%2Fb?x=%ff&y=1 HTTP/1.1\r\nHost: edge\r\n"
        b"Connection: close, X-Client-Hop\r\nX-Client-Hop: secret\r\nKeep-Alive: 300\r\n"
        b"TE: trailers\r\nProxy-Authorization: Basic eA==\r\nUpgrade: h2c\r\n"
        b"X-Name: caf\xc3\xa9\r\nX-Forwarded-Host: evil\r\nX-Real-IP: 6.6.6.6\r\n\r\n"))
    assert status == 200, response
    head, _, body = response.partition(b"\r\n\r\n")
    seen = orjson.loads(body)
    # The raw path and query go on byte for byte; the prefix is gone.
    assert seen["raw_path"] == "/echo%00/a%2Fb" and seen["query"] == "x=%ff&y=1"
    sent = dict(seen["headers"])
    for hop in ("connection", "x-client-hop", "keep-alive", "te", "proxy-authorization",
                "upgrade", "x-forwarded-host", "x-real-ip"):
        assert hop not in sent, hop
    assert sent["x-name"].encode("latin-1") == b"caf\xc3\xa9"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-prefix"] == "/api/legacy"
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]
    # The upstream's hop-by-hop headers stop here too; one date, one server: the gateway's.
    for hop in (b"x-upstream-hop", b"keep-alive", b"proxy-authenticate"):
        assert hop not in names
    assert names.count(b"date") == 1 and names.count(b"server") == 1
    assert b"\r\nx-upstream-end: caf\xc3\xa9\r\n" in head


def test_x_forwarded_for_is_the_peer_unless_the_peer_is_a_trusted_proxy(
        edge: ServerProcess, echo: EchoUpstream, tmp_path: Path) -> None:
    def forwarded(server: ServerProcess, claim: str | None) -> str:
        headers = {"x-forwarded-for": claim} if claim else {}
        sent = httpx.get(server.base_url + "/api/legacy/echo", headers=headers,
                         timeout=10).json()["headers"]
        return dict(sent)["x-forwarded-for"]

    # edge trusts nobody: a claim from its loopback client makes the client unknown, and the
    # next hop is told so rather than handed the loopback address or the claim.
    assert forwarded(edge, None) == "127.0.0.1"
    assert forwarded(edge, "203.0.113.5") == "unknown, 127.0.0.1"
    env = {"AUREN_LEGACY_URL": echo.url, "TRUSTED_PROXIES": "127.0.0.0/8"}
    with run_server("gateway", tmp_path, env, ready_path="/metrics") as trusting:
        assert forwarded(trusting, "203.0.113.5") == "203.0.113.5, 127.0.0.1"


def test_one_upstream_out_of_connections_does_not_slow_another(edge: ServerProcess) -> None:
    def call(path: str) -> tuple[int, float, httpx.Headers]:
        began = time.perf_counter()
        response = httpx.get(edge.base_url + path, timeout=15)
        return response.status_code, time.perf_counter() - began, response.headers

    with ThreadPoolExecutor(4) as pool:
        holders = [pool.submit(call, "/api/bridge/slow?s=3") for _ in range(2)]
        time.sleep(0.5)  # both of the bridge pool's connections are now held
        busy = pool.submit(call, "/api/bridge/echo")
        neuros = [call("/api/neuros/health") for _ in range(5)]
        status, elapsed, headers = busy.result()
        # The third bridge request waits at most the pool timeout, then 503 + Retry-After.
        assert status == 503 and headers["retry-after"] == "1"
        assert elapsed < 2.5
        assert [h.result()[0] for h in holders] == [200, 200]
    assert all(status == 200 for status, _, _ in neuros)
    assert max(elapsed for _, elapsed, _ in neuros) < 1.0


def test_a_client_that_goes_away_is_logged_at_info(edge: ServerProcess) -> None:
    # Gone in the middle of its body, and gone while the upstream works on its request.
    with socket.create_connection(("127.0.0.1", _port(edge)), timeout=10) as sock:
        sock.sendall(b"POST /api/legacy/echo HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\npartial")
        time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", _port(edge)), timeout=10) as sock:
        sock.sendall(b"GET /api/legacy/slow?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
    time.sleep(1.5)
    assert '"msg":"client went away"' in edge.log()
    assert _errors(edge) == []


def test_large_and_streamed_responses_pass_whole(edge: ServerProcess) -> None:
    big = httpx.get(edge.base_url + "/api/legacy/big", timeout=10)
    assert big.status_code == 200
    assert big.content == bytes(range(256)) * (EchoUpstream.BIG // 256)
    stream = httpx.get(edge.base_url + "/api/legacy/stream", timeout=10)
    assert stream.text == "".join(f"data: {i}\n\n" for i in range(5))
    assert stream.headers["content-type"] == "text/event-stream"


def test_methods_the_proxy_does_not_carry_are_405_with_allow(edge: ServerProcess) -> None:
    status, response = _raw(edge, b"TRACE /api/legacy/echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
    assert status == 405
    allow = re.search(rb"\r\nallow: ([^\r]*)\r\n", response, re.IGNORECASE)
    assert allow is not None and b"POST" in allow.group(1)


def test_urllib_reads_the_413_of_a_body_over_the_cap(gateway: ServerProcess,
                                                    upstreams: dict[str, ServerProcess]) -> None:
    # Through the gateway (cap 4 KiB here) and straight to the bridge (cap 1 MiB): urllib sends
    # its whole body before reading a byte of the answer, and must still read the 413.
    for url, size in ((gateway.base_url + "/api/bridge/webhooks/auren", 1_048_576),
                      (upstreams["bridge"].base_url + "/webhooks/auren", 3 * 1_048_576)):
        outcomes = []
        for _ in range(5):
            request = urllib.request.Request(  # noqa: S310 - http to our own server
                url, data=b"{" * size, method="POST",
                headers={"content-type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=10)  # noqa: S310
                outcomes.append("2xx")
            except urllib.error.HTTPError as exc:
                outcomes.append(str(exc.code))
            except OSError as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes == ["413"] * 5, url


def test_the_console_page_allows_only_its_own_scripts_and_no_framing(
        gateway: ServerProcess) -> None:
    page = httpx.get(gateway.base_url + "/", timeout=10)
    headers = page.headers
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # No inline script or style (every <script> has a src), no style attribute, nothing
    # loaded from elsewhere.
    assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
    assert "<style" not in page.text and "style=" not in page.text
    assert re.findall(r'(?:src|href)="(?!/|#)', page.text) == []
    assert httpx.get(gateway.base_url + "/metrics", timeout=10).headers[
        "x-content-type-options"] == "nosniff"


def test_the_gateway_documents_its_answers(gateway: ServerProcess) -> None:
    schema = httpx.get(gateway.base_url + "/openapi.json", timeout=10).json()
    health = schema["paths"]["/health"]["get"]["responses"]
    assert set(health["200"]["content"]) == {"application/health+json"}
    assert set(health["503"]["content"]) == {"application/health+json"}
    proxy = schema["paths"]["/api/bridge/{path}"]
    assert {"get", "post", "put", "patch", "delete", "head", "options"} <= set(proxy)
    assert "Allow" in proxy["post"]["responses"]["405"]["headers"]
    assert "application/problem+json" in proxy["post"]["responses"]["504"]["content"]
