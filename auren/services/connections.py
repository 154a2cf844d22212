"""Connection guard: uvicorn's httptools protocol with the bounds uvicorn lacks.

uvicorn closes a keep-alive connection after ``timeout_keep_alive`` and nothing else: a client
that sends its headers a byte at a time, stops in the middle of a body, or connects and never
speaks holds its connection (a file descriptor, buffers, a task waiting on the body) for as
long as it likes, and a few thousand such clients exhaust a server. This protocol, selected
through uvicorn's ``http=`` option, adds per connection:

- a **header deadline**: from the connection's opening, or a request's first byte on a
  keep-alive connection, to the end of its headers (``HTTP_HEADER_TIMEOUT_S``). Until its first
  byte a connection is only that deadline (``_Silent``): uvicorn's protocol is built when there
  is something to parse;
- a **body idle bound** between two bytes of a request body and a **body deadline** for the
  whole body (``HTTP_BODY_IDLE_TIMEOUT_S``, ``HTTP_BODY_TIMEOUT_S``). They only run while the
  server reads: when the application is behind and reading is paused (flow control), the
  client is not the one stalling;
- a **send bound**: a client that stops reading its response for longer than the body idle
  bound is cut off, so a response cannot be held hostage either;
- a **lingering close**: when a response ends before its request body did (a 413 for a body
  over the cap, any early error), the connection is half-closed after the response and the
  rest of the body is read and discarded, bounded by ``LINGER_S`` and ``LINGER_BYTES``, before
  the socket is closed. Closing a socket with unread data makes the kernel send a reset, and a
  client still sending its body (Python's urllib sends all of it before reading) then sees
  "connection reset" instead of the 413;
- the **client address** (``scope["client"]``) resolved from ``X-Forwarded-For`` by the
  rules of :mod:`auren.services.forwarding` (only from ``TRUSTED_PROXIES``), in place of
  uvicorn's proxy-headers middleware; the TCP peer stays in ``scope["extensions"]``.

A connection past its header or body deadline is answered ``408`` (when part of a request
had arrived) and closed. The timers are lazy: a request that arrives in one read (nearly all)
arms none beyond what uvicorn arms itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from auren.services.forwarding import Address, TrustedProxies, resolve_client
from auren.settings import Settings

log = logging.getLogger("auren.http.connections")

# After an early response: read and discard at most this much of the rest of the body, for at
# most this long, then close whatever the client does. Generous enough for a client sending a
# body several times the cap over a fast link, small enough that nobody can make a stream of it.
LINGER_S = 5.0
LINGER_BYTES = 16 * 1_048_576
PEER_EXTENSION = "auren.peer"

# What a connection is waiting for.
_IDLE = 0  # nothing: a request is being answered, or uvicorn's keep-alive timer runs
_HEADERS = 1  # the end of a request's headers
_BODY = 2  # the rest of a request's body
_LINGER = 3  # the client's end of a connection we half-closed after an early response
_CLOSED = 4

_408_BODY = b"Request Timeout: the request did not arrive in time"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.http_header_timeout_s, settings.http_body_idle_timeout_s,
                   settings.http_body_timeout_s, tuple(settings.trusted_proxies))


class GuardedProtocolFactory:
    """What uvicorn's ``http=`` option is given: called like a protocol class, once per
    connection. An instance rather than a class so that it carries the limits and still
    pickles into uvicorn's worker processes (``--workers``)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.trusted = TrustedProxies(limits.trusted_proxies)

    def __call__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        return _Silent(self, config, server_state, app_state,
                       _loop or asyncio.get_event_loop())

    def protocol(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> GuardedHttpToolsProtocol:
        return GuardedHttpToolsProtocol(config, server_state, app_state, loop,
                                        limits=self.limits, trusted=self.trusted)


class _Silent(asyncio.Protocol):
    """A connection that has not sent a byte yet: a header deadline and nothing else.

    uvicorn's protocol (a parser, flow control, addresses read from the socket) is built on the
    first byte, and takes the deadline over. A connection that never speaks, the cheapest way
    to hold a server, then costs the accept and the close and little more: measured, about 90
    instead of 180 µs of CPU per connection.
    """

    __slots__ = ("_app_state", "_config", "_deadline", "_factory", "_loop", "_state",
                 "_timer", "_transport")

    def __init__(self, factory: GuardedProtocolFactory, config: Config,
                 server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._factory = factory
        self._config = config
        self._state = server_state
        self._app_state = app_state
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport (uvloop's does not derive from asyncio's classes).
        self._transport = transport = cast(asyncio.Transport, transport)
        self._deadline = self._loop.time() + self._factory.limits.header_timeout_s
        self._timer = self._loop.call_at(self._deadline, transport.close)
        # uvicorn closes what is in this set at shutdown (through ``shutdown``).
        self._state.connections.add(self)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._forget()
        protocol = self._factory.protocol(self._config, self._state, self._app_state,
                                          self._loop)
        transport.set_protocol(protocol)
        protocol.adopt(transport, self._deadline)
        protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state.connections.discard(self)


class _Lost:
    """What a transport wrapper refers to once its connection is gone."""

    closing = True

    def close_transport(self) -> None:
        pass


_LOST = _Lost()


class _GuardedTransport(asyncio.Transport):
    """The transport as uvicorn sees it: every call goes to the real one, except ``close``,
    which lets the protocol choose between closing now and a lingering close."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol: GuardedHttpToolsProtocol | _Lost = protocol

    def close(self) -> None:
        self._protocol.close_transport()

    def is_closing(self) -> bool:
        return self._protocol.closing or self._transport.is_closing()

    def release(self) -> None:
        """The connection is lost: forget the protocol (what a request still running may ask
        of this transport is answered as for a closed one)."""
        self._protocol = _LOST

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 limits: ConnectionLimits, trusted: TrustedProxies) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._trusted = trusted
        self._raw: asyncio.Transport | None = None
        self._phase = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # of the headers, or of the whole body
        self._last_body_at = 0.0
        self._partial = False  # part of a request arrived in the header phase
        self._drained = 0

    # --- state the transport wrapper asks for -----------------------------------------------

    @property
    def closing(self) -> bool:
        return self._phase >= _LINGER

    def close_transport(self) -> None:
        """Every close uvicorn asks for: lingering when a request body is still arriving."""
        raw = self._raw
        if raw is None or self._phase == _LINGER:
            return
        if self._phase == _BODY and raw.can_write_eof() and not raw.is_closing():
            self._linger(raw)
            return
        self._phase = _CLOSED
        self._cancel_timers()
        raw.close()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_GuardedTransport(transport, self))
        self._begin_headers()
        self._arm(self._deadline)

    def adopt(self, transport: asyncio.Transport, header_deadline: float) -> None:
        """Take over a connection whose header deadline was set when it opened."""
        self.connection_made(transport)
        self._deadline = header_deadline
        self._arm(header_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self._cancel_timers()
        super().connection_lost(exc)
        # Break the reference cycles a connection is made of (protocol, transport wrapper,
        # request cycle), so that reference counting frees it now. Left to the cyclic
        # collector, thousands of short connections made each collection free them in
        # batches: pauses of 60-120 ms were measured under the slow-client attack.
        if isinstance(self.transport, _GuardedTransport):
            self.transport.release()
        self._raw = None
        self.pipeline.clear()
        if self.cycle is not None and self.cycle.response_complete:
            self.cycle = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        if self._phase == _LINGER and self._raw is not None:
            # The client sent all it had: the response it was sent before is what it reads.
            self._phase = _CLOSED
            self._cancel_timers()
            self._raw.close()
            return
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _LINGER:
            self._drain(len(data))
            return
        if phase == _CLOSED:
            return
        if phase == _IDLE and (self.cycle is None or self.cycle.response_complete):
            self._begin_headers()
        if self._phase == _HEADERS:
            self._partial = True
        super().data_received(data)
        phase = self._phase
        if phase == _HEADERS:
            self._arm_by(self._deadline)
        elif phase == _BODY:
            self._last_body_at = now = self.loop.time()
            self._arm_by(min(now + self._limits.body_idle_timeout_s, self._deadline))
        elif self._timer is not None and phase == _IDLE:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and self._phase != _CLOSED:
            self._send_timer = self.loop.call_later(self._limits.body_idle_timeout_s,
                                                    self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a lingering close ends now rather than delay it."""
        if self._phase == _LINGER:
            self._end_linger()
            return
        super().shutdown()

    # --- httptools parser callbacks -----------------------------------------------------------

    def on_headers_complete(self) -> None:
        peer: Address | None = self.client
        self.scope["client"] = resolve_client(peer, self.headers, self._trusted)
        self.scope["extensions"] = {PEER_EXTENSION: {"address": peer}}
        super().on_headers_complete()
        now = self.loop.time()
        self._phase = _BODY
        self._last_body_at = now
        self._deadline = now + self._limits.body_timeout_s

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase == _BODY:
            self._phase = _IDLE

    def on_response_complete(self) -> None:
        if self._phase == _BODY and not self.transport.is_closing():
            # Answered before its body ended: what follows cannot be read as the next request
            # without reading the whole body, which is what a slow client wants. Linger.
            self.transport.close()
        super().on_response_complete()

    # --- timers -------------------------------------------------------------------------------

    def _begin_headers(self) -> None:
        self._phase = _HEADERS
        self._partial = False
        self._deadline = self.loop.time() + self._limits.header_timeout_s

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _arm_by(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (earlier is fine: it re-checks)."""
        if self._timer is None or self._timer.when() > when:
            self._arm(when)

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._send_timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self._phase == _HEADERS:
            if now >= self._deadline:
                self._expire("headers")
            else:
                self._arm(self._deadline)
        elif self._phase == _BODY:
            if self.flow.read_paused:
                # The application has not read what arrived: the server is behind, not the
                # client. Both bounds start again once it reads.
                self._last_body_at = now
                self._deadline = max(self._deadline, now + self._limits.body_idle_timeout_s)
            due = min(self._last_body_at + self._limits.body_idle_timeout_s, self._deadline)
            if now >= due:
                self._expire("body")
            else:
                self._arm(due)
        elif self._phase == _LINGER:
            self._end_linger()

    def _expire(self, what: str) -> None:
        raw = self._raw
        if raw is None:
            return
        cycle = self.cycle
        answer = (self._partial if self._phase == _HEADERS
                  else cycle is not None and not cycle.response_started)
        log.debug("connection closed: %s timeout", what,
                  extra={"detail": f"{self.client[0]}:{self.client[1]}" if self.client else ""})
        if cycle is not None and self._phase == _BODY:
            # The application is waiting for the body: it gets a disconnect, and nothing it
            # sends afterwards is written.
            cycle.disconnected = True
            cycle.message_event.set()
        self._phase = _CLOSED
        self._cancel_timers()
        if answer and not raw.is_closing():
            head = [b"HTTP/1.1 408 Request Timeout\r\n"]
            head += [name + b": " + value + b"\r\n"
                     for name, value in self.server_state.default_headers]
            head += [b"content-type: text/plain; charset=utf-8\r\n",
                     b"content-length: %d\r\n" % len(_408_BODY), b"connection: close\r\n\r\n",
                     _408_BODY]
            raw.write(b"".join(head))
        raw.close()

    def _send_stalled(self) -> None:
        self._send_timer = None
        raw = self._raw
        if raw is None or self._phase == _CLOSED:
            return
        log.debug("connection closed: the client stopped reading its response")
        self._phase = _CLOSED
        self._cancel_timers()
        # A reset, not a close: a closed socket would still hand the kernel's send buffer
        # (megabytes on a fast link) to the client at the pace it refuses to read.
        sock = raw.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.abort()

    # --- lingering close ----------------------------------------------------------------------

    def _linger(self, raw: asyncio.Transport) -> None:
        self._phase = _LINGER
        self._drained = 0
        raw.write_eof()  # the response is flushed first, then our FIN
        if self.flow.read_paused:
            self.flow.resume_reading()
        self._arm(self.loop.time() + LINGER_S)

    def _drain(self, size: int) -> None:
        self._drained += size
        if self._drained > LINGER_BYTES:
            self._end_linger()

    def _end_linger(self) -> None:
        self._phase = _CLOSED
        self._cancel_timers()
        if self._raw is not None:
            self._raw.close()
