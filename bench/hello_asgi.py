"""The throughput ceiling: a raw ASGI app that answers every request with a tiny 200.

``python bench/hello_asgi.py --port N`` serves it with
:func:`auren.services.runtime.server_options`, the very options ``auren serve bridge`` uses
(uvloop, the guarded httptools protocol, no access log, one worker), so the bench's
bridge/ceiling ratio measures the application, not a difference in server settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from auren.services.runtime import server_options
from auren.settings import Settings

Message = MutableMapping[str, Any]
_BODY = b'{"hello":"world"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: Message, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Drain the request body so that a POST is answered after it was read, like the bridge.
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # Worker processes import the app by name; one worker serves the object directly.
    target: Any = "bench.hello_asgi:app" if args.workers > 1 else app
    uvicorn.run(target, **server_options(Settings(), host=args.host, port=args.port,
                                         workers=args.workers))


if __name__ == "__main__":
    main()
