"""Reading a request body straight from ASGI messages, capped while it streams.

Shared by the raw lanes of the bridge and NEUROS: a client announcing or sending more than
``limit`` bytes costs us ``limit`` bytes at most, never the whole upload.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from auren.errors import PayloadTooLarge


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
