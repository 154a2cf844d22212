"""Request ids and the access log, the same in every service.

Each HTTP request gets one id. It is in every log line written while the request is handled
(``request_id``, through :data:`auren.observability.REQUEST_ID`), in the answer's
``X-Request-ID`` header, and, at the end, in one access log line (method, path, status,
duration) unless ``ACCESS_LOG`` is off.

Where the id comes from: the request's own ``X-Request-ID`` is taken only when the TCP peer is
a trusted proxy (``TRUSTED_PROXIES``) and the value is a plain token of at most 128
characters; otherwise a new id is made. So the TLS proxy in front of the gateway can hand its
id on, the gateway passes its id to NEUROS and the bridges with the request, and they, trusting
the gateway, log under the same id: one id follows a request through every hop. From anyone
else the header is replaced, so that a client cannot make its requests look like another's in
the logs.

The request's ``X-Request-ID`` header is rewritten to the id in force before the application
sees it (the gateway forwards what it sees), and an ``X-Request-ID`` an application answers
with (an upstream's, relayed by the gateway) is replaced by the id in force, so an answer
carries exactly one.

Paths are logged without the query (it may carry handshake tokens) and with the user id of
``/users/{user_id}/...`` routes replaced by ``*``: logs hold no payload values and no user ids.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auren.observability import REQUEST_ID, log_info_fast
from auren.services.connections import PEER_EXTENSION
from auren.services.forwarding import TrustedProxies
from auren.settings import Settings

access = logging.getLogger("auren.access")

HEADER = b"x-request-id"
# A token a proxy may hand on: UUIDs, hex ids, nginx's $request_id, AWS's Root=1-... ids.
_TOKEN = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:=+/@-]{0,127}")
_USER_SEGMENT = re.compile(r"(/users/)[^/]+")


# Request ids must be unique, not secret: they name a request in logs and answers and guard
# nothing. So they come from a generator seeded from the OS once per process (and again in a
# forked child) rather than from os.urandom per request, a system call that profiled at 7 % of
# a webhook's CPU.
_ids = random.Random(os.urandom(32))  # noqa: S311 - unique, not secret (above)
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_request_id() -> str:
    """128 random bits as 32 hex characters."""
    return f"{_ids.getrandbits(128):032x}"


def loggable_path(path: str) -> str:
    """``path`` as the access log writes it: the user id segment replaced by ``*``."""
    return _USER_SEGMENT.sub(r"\1*", path) if "/users/" in path else path


def _peer_host(scope: Scope) -> str | None:
    """The TCP peer the connection guard recorded (the ASGI client when served otherwise)."""
    entry = scope.get("extensions", {}).get(PEER_EXTENSION)
    address = entry.get("address") if isinstance(entry, dict) else scope.get("client")
    return str(address[0]) if address else None


class RequestTracing:
    """Gives each request its id and writes its access log line (see the module's docstring).

    Called with the application it wraps, so that an entry class keeps its own routing:
    ``await tracing(app, scope, receive, send)``. A raw ASGI handler on a hot path (the bridge's
    webhooks) does the same itself, without a wrapper around its ``send``: it takes the id
    with :meth:`adopt`, sets :data:`~auren.observability.REQUEST_ID`, answers with
    :meth:`id_header` among its headers and ends with :meth:`log`.
    """

    def __init__(self, service: str, trusted: TrustedProxies, *, access_log: bool = True
                 ) -> None:
        self.service = service
        self._trusted = trusted
        self._access_log = access_log

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> RequestTracing:
        return cls(service, TrustedProxies(settings.trusted_proxies),
                   access_log=settings.access_log)

    @staticmethod
    def id_header(request_id: str) -> tuple[bytes, bytes]:
        """The ``X-Request-ID`` header an answer carries."""
        return HEADER, request_id.encode("ascii")

    def adopt(self, scope: Scope) -> str:
        """The request's id; its ``X-Request-ID`` header in ``scope`` is set to it."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        offered = [value for name, value in headers if name == HEADER]
        if (len(offered) == 1 and _TOKEN.fullmatch(offered[0])
                and _peer_host(scope) in self._trusted):
            return offered[0].decode("ascii")
        request_id = new_request_id()
        own = (HEADER, request_id.encode("ascii"))
        # A new list: the server's may be shared with whoever built the scope.
        scope["headers"] = [*(h for h in headers if h[0] != HEADER), own] if offered else \
            [*headers, own]
        return request_id

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self.adopt(scope)
        token = REQUEST_ID.set(request_id)
        own = self.id_header(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                # Only a relayed answer (the gateway's upstream) carries an id of its own.
                message["headers"] = \
                    [*(h for h in headers if h[0].lower() != HEADER), own] \
                    if any(h[0].lower() == HEADER for h in headers) else [*headers, own]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            self.log(scope, status, started)
            REQUEST_ID.reset(token)

    def log(self, scope: Scope, status: int, started: float) -> None:
        """The request's access log line, unless ``ACCESS_LOG`` is off (``status`` 0: no answer
        was started); ``started`` is its ``time.perf_counter()`` at arrival."""
        if not self._access_log:
            return
        extra: dict[str, Any] = {
            "service": self.service, "method": scope["method"],
            "path": loggable_path(scope["path"]),
            # 0: no answer was started (the client went away, or the handler failed first).
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)}
        log_info_fast(access, "request", extra)
