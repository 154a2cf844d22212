"""A TCP fault proxy on Toxiproxy's model, for drills in which dependencies get slow, lossy or
cut off rather than killed.

Each *route* listens on a loopback port and forwards every connection to its upstream (a
PostgreSQL, Redis or Kafka server, or a service behind the gateway). *Toxics* added to a route
act on the bytes of its connections, also of those already open (pooled connections are what
real clients hold):

==============  ==========================================  ===================================
toxic           attributes                                  effect
==============  ==========================================  ===================================
``latency``     ``latency`` ms, ``jitter`` ms               each chunk is delayed; order kept
``bandwidth``   ``rate`` KB/s                               bytes are paced to the rate
``slicer``      ``average_size``, ``size_variation`` bytes, chunks are cut in small slices
                ``delay`` µs                                written apart
``timeout``     ``timeout`` ms (0: until removed)           nothing passes; closed after timeout
``reset_peer``  ``timeout`` ms                              the connection is reset (RST) after
==============  ==========================================  ===================================

Every toxic has a ``stream`` (``upstream``: client to server, ``downstream``: server to client;
``timeout`` and ``reset_peer`` act on the whole connection) and a ``toxicity``: the probability
that it applies to a given connection, drawn once per connection. A route can also be disabled
(``enabled: false``): its connections are reset and new ones refused, like a server that is gone.

One difference from Toxiproxy, on purpose: ``timeout`` *holds* the bytes instead of discarding
them. The proxy stops reading, so TCP's flow control stops the sender, and when the toxic is
removed the stream resumes intact: that is what a network partition does to a TCP connection
(retransmission), where discarding bytes would corrupt the protocol stream, which no network
does. A partition drill is a ``timeout`` toxic of 0 ms.

The control API is JSON over HTTP (a subset of Toxiproxy's): ``GET /proxies``,
``POST /proxies/{name}`` (``{"enabled": false}``), ``POST /proxies/{name}/toxics``,
``DELETE /proxies/{name}/toxics/{toxic}``, ``POST /reset`` (every route enabled, every toxic
removed) and ``GET /health``. :class:`Client` speaks it; ``auren faultproxy`` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TOXIC_TYPES = {
    "latency": {"latency": 0.0, "jitter": 0.0},
    "bandwidth": {"rate": 0.0},
    "slicer": {"average_size": 0.0, "size_variation": 0.0, "delay": 0.0},
    "timeout": {"timeout": 0.0},
    "reset_peer": {"timeout": 0.0},
}
STREAMS = ("upstream", "downstream")
CHUNK = 65_536
QUEUED_CHUNKS = 64  # per direction: beyond it the proxy stops reading (TCP backpressure)
CONNECT_TIMEOUT_S = 5.0


class FaultProxyError(ValueError):
    """A bad route or toxic definition (400), or an unknown name (404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Toxic:
        kind = data.get("type")
        if kind not in TOXIC_TYPES:
            raise FaultProxyError(f"toxic type must be one of {', '.join(TOXIC_TYPES)}")
        stream = data.get("stream", "downstream")
        if stream not in STREAMS:
            raise FaultProxyError("stream must be upstream or downstream")
        toxicity = data.get("toxicity", 1.0)
        if not isinstance(toxicity, int | float) or not 0.0 <= toxicity <= 1.0:
            raise FaultProxyError("toxicity must be a number from 0 to 1")
        given = data.get("attributes") or {}
        if not isinstance(given, dict) or set(given) - set(TOXIC_TYPES[kind]):
            raise FaultProxyError(f"{kind} takes the attributes "
                                  f"{', '.join(TOXIC_TYPES[kind])}")
        attributes = dict(TOXIC_TYPES[kind])
        for key, value in given.items():
            if not isinstance(value, int | float) or value < 0:
                raise FaultProxyError(f"attribute {key} must be a number >= 0")
            attributes[key] = float(value)
        if kind == "bandwidth" and attributes["rate"] <= 0:
            raise FaultProxyError("bandwidth needs a rate > 0 (KB/s)")
        name = str(data.get("name") or f"{kind}_{stream}")
        return cls(name, kind, stream, float(toxicity), attributes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def whole_connection(self) -> bool:
        return self.type in ("timeout", "reset_peer")


# --- one proxied connection -------------------------------------------------------------------


class _Link:
    """A client connection and its upstream connection, pumped both ways through the toxics."""

    def __init__(self, route: Route, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 server: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.route = route
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.applies: dict[str, bool] = {}  # toxic name -> drawn for this connection
        self.timers: dict[str, asyncio.Task[None]] = {}
        self.released = asyncio.Event()  # set while no timeout toxic holds this connection
        self.released.set()
        self.tasks: list[asyncio.Task[bool]] = []
        self.closed = False

    def draw(self, toxic: Toxic) -> None:
        applies = random.random() < toxic.toxicity  # noqa: S311 - a fault's odds, not a secret
        self.applies[toxic.name] = applies
        if applies and toxic.whole_connection:
            self.timers[toxic.name] = asyncio.create_task(self._whole(toxic))
        self._update_hold()

    def forget(self, name: str) -> None:
        self.applies.pop(name, None)
        timer = self.timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._update_hold()

    def _update_hold(self) -> None:
        held = any(t.type == "timeout" and self.applies.get(t.name)
                   for t in self.route.toxics.values())
        if held:
            self.released.clear()
        else:
            self.released.set()

    async def _whole(self, toxic: Toxic) -> None:
        delay = toxic.attributes["timeout"] / 1000
        if toxic.type == "timeout" and delay <= 0:
            return  # held until the toxic is removed
        await asyncio.sleep(delay)
        self.close(reset=toxic.type == "reset_peer")

    def active(self, stream: str) -> list[Toxic]:
        return [t for t in self.route.toxics.values()
                if t.stream == stream and not t.whole_connection and self.applies.get(t.name)]

    async def run(self) -> None:
        """Until both directions ended (each half-closes the other side at its end of
        stream), or one failed: then the whole connection is closed."""
        self.tasks = [asyncio.create_task(self._pump(self.client_reader, self.server_writer,
                                                     "upstream")),
                      asyncio.create_task(self._pump(self.server_reader, self.client_writer,
                                                     "downstream"))]
        try:
            pending = set(self.tasks)
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if any(task.cancelled() or not task.result() for task in done):
                    break
        finally:
            self.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    stream: str) -> bool:
        """Bytes from ``reader`` to ``writer`` through the toxics; True at a clean end of
        stream, False when either side failed."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUED_CHUNKS)
        sender = asyncio.create_task(self._send(queue, writer, stream))
        last_due = 0.0
        try:
            while True:
                await self.released.wait()
                data = await reader.read(CHUNK)
                await self.released.wait()  # arrived while held: kept until released
                if not data:
                    break
                delay = 0.0
                for toxic in self.active(stream):
                    if toxic.type == "latency":
                        jitter = toxic.attributes["jitter"]
                        delay += (toxic.attributes["latency"]
                                  + random.uniform(-jitter, jitter)) / 1000  # noqa: S311
                due = max(time.monotonic() + max(delay, 0.0), last_due)
                last_due = due
                await queue.put((due, data))
                if sender.done():
                    return False
            await queue.put(None)
            await sender
            return True
        except (ConnectionError, OSError):
            return False
        finally:
            sender.cancel()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes] | None],
                    writer: asyncio.StreamWriter, stream: str) -> None:
        """Each chunk once it is due, sliced and paced as the toxics say."""
        try:
            await self._send_all(queue, writer, stream)
        except (ConnectionError, OSError):
            self.close()

    async def _send_all(self, queue: asyncio.Queue[tuple[float, bytes] | None],
                        writer: asyncio.StreamWriter, stream: str) -> None:
        while True:
            item = await queue.get()
            if item is None:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.released.wait()
            toxics = self.active(stream)
            slicer = next((t for t in toxics if t.type == "slicer"), None)
            bandwidth = next((t for t in toxics if t.type == "bandwidth"), None)
            for piece in _slices(data, slicer):
                if bandwidth is None:
                    writer.write(piece)
                    await writer.drain()
                else:
                    # In pieces of 50 ms worth at the rate, each followed by its time.
                    rate = bandwidth.attributes["rate"] * 1024
                    step = max(1, int(rate / 20))
                    for at in range(0, len(piece), step):
                        writer.write(piece[at:at + step])
                        await writer.drain()
                        await asyncio.sleep(len(piece[at:at + step]) / rate)
                if slicer is not None and slicer.attributes["delay"]:
                    await asyncio.sleep(slicer.attributes["delay"] / 1_000_000)

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for timer in self.timers.values():
            timer.cancel()
        for task in self.tasks:
            task.cancel()
        for writer in (self.client_writer, self.server_writer):
            if reset:
                _reset(writer)
            else:
                writer.close()
        self.route.links.discard(self)


def _slices(data: bytes, slicer: Toxic | None) -> Iterator[bytes]:
    if slicer is None or slicer.attributes["average_size"] < 1:
        yield data
        return
    average = int(slicer.attributes["average_size"])
    variation = int(slicer.attributes["size_variation"])
    offset = 0
    while offset < len(data):
        size = max(1, average + random.randint(-variation, variation))  # noqa: S311
        yield data[offset:offset + size]
        offset += size


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a peer that resets the connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- a route ----------------------------------------------------------------------------------


@dataclass
class Route:
    """One listening port forwarding to one upstream, with its toxics."""

    name: str
    listen_port: int
    upstream: str  # host:port
    enabled: bool = True
    toxics: dict[str, Toxic] = field(default_factory=dict)
    links: set[_Link] = field(default_factory=set)
    server: asyncio.Server | None = None

    def __hash__(self) -> int:
        return id(self)

    @property
    def upstream_address(self) -> tuple[str, int]:
        host, _, port = self.upstream.rpartition(":")
        return host or HOST, int(port)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, HOST, self.listen_port,
                                                 reuse_address=True, backlog=512)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for link in list(self.links):
            link.close()
        if server is not None:
            await server.wait_closed()

    async def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled:
            await self.start()
        else:
            if self.server is not None:
                self.server.close()
                self.server = None
            for link in list(self.links):
                link.close(reset=True)

    def add(self, toxic: Toxic) -> None:
        if toxic.name in self.toxics:
            raise FaultProxyError(f"toxic {toxic.name} already exists on {self.name}", 409)
        self.toxics[toxic.name] = toxic
        for link in list(self.links):
            link.draw(toxic)

    def remove(self, name: str) -> None:
        if self.toxics.pop(name, None) is None:
            raise FaultProxyError(f"no toxic {name} on {self.name}", 404)
        for link in list(self.links):
            link.forget(name)

    async def reset(self) -> None:
        for name in list(self.toxics):
            self.remove(name)
        await self.set_enabled(True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if not self.enabled:
            _reset(writer)
            return
        host, port = self.upstream_address
        try:
            server = await asyncio.wait_for(asyncio.open_connection(host, port),
                                            CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            _reset(writer)  # as the upstream refused: the client sees a reset
            return
        link = _Link(self, (reader, writer), server)
        self.links.add(link)
        for toxic in self.toxics.values():
            link.draw(toxic)
        await link.run()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "listen": f"{HOST}:{self.listen_port}",
                "upstream": self.upstream, "enabled": self.enabled,
                "connections": len(self.links),
                "toxics": [t.as_dict() for t in self.toxics.values()]}


# --- the control API --------------------------------------------------------------------------


def control_app(routes: dict[str, Route]) -> Any:
    """The JSON control API (Starlette)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route as Endpoint

    def problem(exc: FaultProxyError) -> JSONResponse:
        return JSONResponse({"title": "fault proxy", "status": exc.status, "detail": str(exc)},
                            exc.status, media_type="application/problem+json")

    def route_of(request: Request) -> Route:
        name = request.path_params["name"]
        if name not in routes:
            raise FaultProxyError(f"no route {name}", 404)
        return routes[name]

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise FaultProxyError("the body is not JSON") from None
        if not isinstance(data, dict):
            raise FaultProxyError("the body must be a JSON object")
        return data

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "pass", "routes": len(routes)})

    async def proxies(request: Request) -> Response:
        return JSONResponse({name: r.as_dict() for name, r in routes.items()})

    async def proxy(request: Request) -> Response:
        try:
            route = route_of(request)
            if request.method == "POST":
                enabled = (await body(request)).get("enabled")
                if not isinstance(enabled, bool):
                    raise FaultProxyError("enabled must be true or false")
                await route.set_enabled(enabled)
        except FaultProxyError as exc:
            return problem(exc)
        return JSONResponse(route.as_dict())

    async def toxics(request: Request) -> Response:
        try:
            route = route_of(request)
            if request.method == "GET":
                return JSONResponse([t.as_dict() for t in route.toxics.values()])
            toxic = Toxic.parse(await body(request))
            route.add(toxic)
        except FaultProxyError as exc:
            return problem(exc)
        log.warning("toxic added", extra={"detail": f"{route.name}: {toxic.as_dict()}"})
        return JSONResponse(toxic.as_dict())

    async def toxic(request: Request) -> Response:
        try:
            route = route_of(request)
            route.remove(request.path_params["toxic"])
        except FaultProxyError as exc:
            return problem(exc)
        return Response(status_code=204)

    async def reset(request: Request) -> Response:
        for route in routes.values():
            await route.reset()
        return Response(status_code=204)

    return Starlette(routes=[
        Endpoint("/health", health),
        Endpoint("/proxies", proxies),
        Endpoint("/proxies/{name}", proxy, methods=["GET", "POST"]),
        Endpoint("/proxies/{name}/toxics", toxics, methods=["GET", "POST"]),
        Endpoint("/proxies/{name}/toxics/{toxic}", toxic, methods=["DELETE"]),
        Endpoint("/reset", reset, methods=["POST"]),
    ])


def parse_route(text: str) -> tuple[str, int, str]:
    """``NAME=LISTEN_PORT=UPSTREAM_HOST:PORT`` → (name, listen port, upstream)."""
    parts = text.split("=")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or ":" not in parts[2]:
        raise FaultProxyError(f"a route is NAME=LISTEN_PORT=UPSTREAM_HOST:PORT, got {text!r}")
    return parts[0], int(parts[1]), parts[2]


async def serve(control_port: int, routes: list[tuple[str, int, str]]) -> None:
    """Run the routes and the control API until cancelled (SIGTERM/SIGINT: gracefully)."""
    import uvicorn

    table = {name: Route(name, port, upstream) for name, port, upstream in routes}
    for route in table.values():
        await route.start()
    config = uvicorn.Config(control_app(table), host=HOST, port=control_port,
                            log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        for route in table.values():
            await route.stop()


# --- client ------------------------------------------------------------------------------------


class Client:
    """The control API, synchronously (the drills run it between load steps)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            detail = response.json().get("detail", response.text) \
                if response.headers.get("content-type", "").endswith("json") else response.text
            raise FaultProxyError(f"fault proxy: {detail}", response.status_code)
        return response

    def routes(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = self._check(self._http.get("/proxies")).json()
        return data

    def add_toxic(self, route: str, kind: str, *, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None,
                  **attributes: float) -> str:
        toxic = {"type": kind, "stream": stream, "toxicity": toxicity,
                 "attributes": attributes, "name": name or f"{kind}_{stream}"}
        return str(self._check(self._http.post(f"/proxies/{route}/toxics",
                                               json=toxic)).json()["name"])

    def remove_toxic(self, route: str, name: str) -> None:
        self._check(self._http.delete(f"/proxies/{route}/toxics/{name}"))

    def set_enabled(self, route: str, enabled: bool) -> None:
        self._check(self._http.post(f"/proxies/{route}", json={"enabled": enabled}))

    def reset(self) -> None:
        self._check(self._http.post("/reset"))


# --- the proxy as a process of its own ---------------------------------------------------------


@dataclass
class Placement:
    """Where a fault proxy process listens: its control port and its routes."""

    control_port: int
    routes: dict[str, tuple[int, str]]  # name -> (listen port, upstream host:port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.control_port}"

    def route_url(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{self.routes[name][0]}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "auren", "faultproxy", "--port", str(self.control_port),
                *(arg for name, (port, upstream) in self.routes.items()
                  for arg in ("--route", f"{name}={port}={upstream}"))]

    def as_dict(self) -> dict[str, Any]:
        return {"control_port": self.control_port,
                "routes": {k: list(v) for k, v in self.routes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        return cls(int(data["control_port"]),
                   {k: (int(v[0]), str(v[1])) for k, v in data["routes"].items()})


def _starttime(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return int(raw[raw.rfind(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ProxyProcess:
    """A running ``auren faultproxy``: started here, or found by its state file."""

    placement: Placement
    pid: int
    starttime: int
    process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _starttime(self.pid) == self.starttime

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout_s``; only this process (pid and start time)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(0.1)
            else:
                time.sleep(0.1)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait(5)

    def save(self, state: Path) -> None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"pid": self.pid, "starttime": self.starttime,
                                     **self.placement.as_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, state: Path) -> ProxyProcess | None:
        try:
            data = json.loads(state.read_text())
            return cls(Placement.from_dict(data), int(data["pid"]), int(data["starttime"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def start(placement: Placement, log_path: Path, *, timeout_s: float = 30.0,
          env: Mapping[str, str] | None = None) -> ProxyProcess:
    """Start ``auren faultproxy`` for ``placement`` and wait until its control API answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        child = subprocess.Popen(placement.argv(), stdout=out,  # noqa: S603 - our own CLI
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(env) if env is not None else None,
                                 start_new_session=True)
    proc = ProxyProcess(placement, child.pid, _starttime(child.pid) or 0, child)
    deadline = time.monotonic() + timeout_s
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the fault proxy exited at start with {child.returncode}; "
                               f"see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(placement.url + "/health", timeout=1.0,
                         trust_env=False).status_code == 200:
                return proc
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the fault proxy did not answer in {timeout_s:g} s; "
                               f"see {log_path}")
        time.sleep(0.1)
