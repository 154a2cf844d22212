"""Reading a request body, capped while it streams: the one reader of every service.

A client announcing or sending more than ``limit`` bytes costs us ``limit`` bytes at most, never
the whole upload. The raw ASGI lanes (the bridge's webhooks, NEUROS's chat) call
:func:`receive_capped` on the ASGI ``receive``; FastAPI routes call :func:`read_body`.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from auren.errors import MalformedPayload, PayloadTooLarge, UnsupportedMediaType


def check_declared(encoding: str | None, declared: str | None, limit: int) -> None:
    """Refuse, before reading a byte, a compressed body (415), a malformed Content-Length (400)
    or one past ``limit`` (413)."""
    if (encoding or "identity").lower() not in ("identity", ""):
        raise UnsupportedMediaType("compressed bodies are not accepted")
    if declared is not None:
        if not declared.isdigit() or not declared.isascii():
            raise MalformedPayload("invalid Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")


async def receive_capped(receive: Receive, limit: int) -> bytes:
    """The body, or PayloadTooLarge past ``limit``; ClientDisconnect if the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """A FastAPI/Starlette request's body: its headers checked, then read with the cap."""
    check_declared(request.headers.get("content-encoding"),
                   request.headers.get("content-length"), limit)
    return await receive_capped(request.receive, limit)
