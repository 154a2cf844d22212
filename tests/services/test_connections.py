"""The connection guard on a real uvicorn server (loopback, a thread of this process), driven by
raw sockets, urllib and httpx: every bound closes what it should, when it should, and nothing
that behaves.

The server runs with exactly the options every service runs with
(``auren.services.runtime.server_options``), small timeouts, and a small ASGI app whose paths
behave as the services do (read the body and answer, answer before reading, read late, send a
large response).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from auren.services.connections import LINGER_S, PEER_EXTENSION, GuardedProtocolFactory
from auren.services.runtime import server_options
from auren.settings import Settings
from tests.helpers import free_port

HEADER_S = 1.0
BODY_IDLE_S = 1.0
BODY_S = 3.0
KEEPALIVE_S = 1.0
# Timers fire on a shared 2-core machine: a close may come this much after its bound.
SLACK_S = 0.75
BIG_RESPONSE = 64 * 1_048_576


class App:
    """Paths that behave as the services do, and what the server did to them."""

    def __init__(self) -> None:
        self.disconnects: list[str] = []
        self.big_done: list[float] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/reject":  # a 413 before a byte of the body is read
            await self._answer(send, 413, b"too large")
            return
        if path == "/late":  # busy elsewhere before reading: the client is not the slow one
            await asyncio.sleep(2 * BODY_IDLE_S)
        if path == "/big":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(BIG_RESPONSE).encode())]})
            chunk = b"x" * 65536
            for _ in range(BIG_RESPONSE // len(chunk)):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.big_done.append(time.monotonic())
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(path)
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        peer = scope.get("extensions", {}).get(PEER_EXTENSION, {}).get("address")
        await self._answer(send, 200, orjson.dumps({
            "size": size, "client": scope["client"], "peer": peer}))

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class Server:
    def __init__(self, app: App, **settings: Any) -> None:
        self.port = free_port()
        options = server_options(Settings(
            _env_file=None, http_header_timeout_s=HEADER_S, http_body_idle_timeout_s=BODY_IDLE_S,
            http_body_timeout_s=BODY_S, http_keepalive_timeout_s=KEEPALIVE_S, **settings),
            host="127.0.0.1", port=self.port)
        options.pop("workers")
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="off", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture(scope="module")
def app() -> App:
    return App()


@pytest.fixture(scope="module")
def server(app: App) -> Iterator[Server]:
    with Server(app, trusted_proxies="127.0.0.1") as running:
        yield running


def until_closed(sock: socket.socket, started: float, *, keep_sending: bytes = b"",
                 limit_s: float = 15.0) -> tuple[bytes, float]:
    """Everything received until the server closes; the time from ``started`` to the close."""
    data = b""
    sock.settimeout(0.05 if keep_sending else limit_s)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if keep_sending:
                sock.send(keep_sending)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def test_a_connection_that_never_speaks_is_closed_at_the_header_deadline(
        server: Server) -> None:
    with server.connect() as sock:
        data, elapsed = until_closed(sock, time.monotonic())
        assert data == b""  # nothing was asked, nothing is answered
        assert HEADER_S - 0.05 <= elapsed <= HEADER_S + SLACK_S


def test_the_header_deadline_counts_from_the_opening_not_the_first_byte(
        server: Server) -> None:
    with server.connect() as sock:
        started = time.monotonic()
        time.sleep(HEADER_S * 0.6)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHo")  # late, and then nothing more
        data, elapsed = until_closed(sock, started)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert HEADER_S - 0.05 <= elapsed <= HEADER_S + SLACK_S


def test_a_connection_that_speaks_late_is_served(server: Server) -> None:
    with server.connect() as sock:
        time.sleep(HEADER_S * 0.6)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Then it is an ordinary kept-alive connection.
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_headers_sent_a_byte_at_a_time_get_a_408_at_the_deadline(server: Server) -> None:
    with server.connect() as sock:
        started = time.monotonic()
        request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        sock.settimeout(0.2)
        data = b""
        for byte in request:  # one byte every 0.2 s: never idle, never done
            try:
                sock.send(bytes([byte]))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
        elapsed = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in data
        assert HEADER_S - 0.05 <= elapsed <= HEADER_S + SLACK_S


def test_a_stalled_body_gets_a_408_and_the_app_a_disconnect(server: Server, app: App) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        started = time.monotonic()
        data, elapsed = until_closed(sock, started)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert BODY_IDLE_S - 0.05 <= elapsed <= BODY_IDLE_S + SLACK_S
        deadline = time.monotonic() + 2
        while "/stalled" not in app.disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "/stalled" in app.disconnects


def test_a_trickling_body_is_cut_at_the_body_deadline(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(BODY_IDLE_S / 2)
        data = b""
        while time.monotonic() - started < BODY_S + 5:
            try:
                sock.send(b"x")  # well inside the idle bound, forever
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
        elapsed = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 408 ")
        assert BODY_S - 0.05 <= elapsed <= BODY_S + SLACK_S


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_kept(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):  # requests closer together than the bound keep the connection
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(KEEPALIVE_S / 2)
        started = time.monotonic() - KEEPALIVE_S / 2
        data, elapsed = until_closed(sock, started)
        assert data == b""
        assert KEEPALIVE_S - 0.05 <= elapsed <= KEEPALIVE_S + SLACK_S


def test_an_application_that_reads_late_is_not_taken_for_a_slow_client(server: Server) -> None:
    # 4 MiB arrive at once; the app reads them only after twice the idle bound (flow control
    # pauses reading meanwhile). The client did nothing wrong: the request succeeds.
    body = b"y" * (4 * 1_048_576)
    response = httpx.post(server.url + "/late", content=body, timeout=15)
    assert response.status_code == 200
    assert response.json()["size"] == len(body)


def test_urllib_reads_the_413_of_a_body_it_is_still_sending(server: Server) -> None:
    # urllib sends the whole body before it reads a byte of the answer. Closing on the 413
    # with the rest of the body unread resets the connection under it (every time, measured
    # on plain uvicorn); the lingering close lets it finish sending and read the 413.
    outcomes = []
    for _ in range(10):
        request = urllib.request.Request(  # noqa: S310 - http to our own server
            server.url + "/reject", data=b"z" * (4 * 1_048_576),
                                         method="POST")
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
            outcomes.append("200")
        except urllib.error.HTTPError as exc:
            outcomes.append(str(exc.code))
        except OSError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["413"] * 10


def test_a_keep_alive_client_streaming_a_body_reads_the_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"c" * 65536

    with httpx.Client(timeout=10) as client:
        response = client.post(server.url + "/reject", content=chunks())
        assert response.status_code == 413
        # The connection the early answer came on is not reused for the next request.
        assert client.get(server.url + "/echo").status_code == 200


def test_a_client_that_keeps_sending_after_its_413_is_cut_off(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        started = time.monotonic()
        data, elapsed = until_closed(sock, started, keep_sending=b"k" * 65536, limit_s=30)
        assert data.startswith(b"HTTP/1.1 413 ")
        # Drained at most LINGER_BYTES or LINGER_S, whichever comes first: never a stream.
        assert elapsed <= LINGER_S + SLACK_S


def test_a_client_that_stops_reading_its_response_is_cut_off(server: Server, app: App) -> None:
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        deadline = started + BODY_IDLE_S + 5
        while not app.big_done and time.monotonic() < deadline:
            time.sleep(0.05)
        # The app's writes return once the server gives up on the client: the task holding
        # the 64 MiB response ended within the bound instead of waiting for the reader.
        assert app.big_done, "the response held its connection"
        assert app.big_done[-1] - started <= BODY_IDLE_S + SLACK_S + 1
        # And the connection was reset, not left to trickle the kernel's buffer out.
        sock.settimeout(5)
        received = 0
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(1_048_576):
                received += len(chunk)
        assert received < BIG_RESPONSE


def test_the_client_address_comes_from_trusted_proxies_only(server: Server) -> None:
    # The test's requests come from 127.0.0.1, which this server trusts as a proxy.
    direct = httpx.get(server.url + "/echo", timeout=5).json()
    assert direct["client"][0] == "127.0.0.1" and direct["peer"][0] == "127.0.0.1"
    relayed = httpx.get(server.url + "/echo", timeout=5,
                        headers={"x-forwarded-for": "6.6.6.6, 203.0.113.5"}).json()
    assert relayed["client"] == ["203.0.113.5", 0]
    assert relayed["peer"][0] == "127.0.0.1"


def test_without_trusted_proxies_a_local_relay_leaves_the_client_unknown(app: App) -> None:
    with Server(app) as untrusting:
        relayed = httpx.get(untrusting.url + "/echo", timeout=5,
                            headers={"x-forwarded-for": "203.0.113.5"}).json()
        assert relayed["client"] is None
        assert httpx.get(untrusting.url + "/echo", timeout=5).json()["client"][0] == (
            "127.0.0.1")


def test_the_protocol_factory_survives_the_trip_to_worker_processes() -> None:
    options = server_options(Settings(_env_file=None, trusted_proxies="10.0.0.0/8",
                                      http_header_timeout_s=7), host="127.0.0.1", port=1)
    # What --workers does (spawn): the options travel to each worker process pickled.
    factory = pickle.loads(pickle.dumps(options["http"]))  # noqa: S301 - our own bytes
    assert isinstance(factory, GuardedProtocolFactory)
    assert factory.limits.header_timeout_s == 7
    assert "10.1.2.3" in factory.trusted
    assert options["proxy_headers"] is False  # uvicorn's own X-Forwarded-For handling is off
