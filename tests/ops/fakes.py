"""A misbehaving AUREN look-alike for the toolkit's failure tests, run as a real process:

    python -m tests.ops.fakes --port P [--drop] [--delay-ms D] [--stall-at S --stall-s T]

It answers ``/health`` like a service, ``/echo`` with the request's body, ``/chat`` like
NEUROS and ``/webhooks/*`` like a bridge, with ``{"accepted": <events in the body>}`` — but
stores nothing (``--drop``, the dropped-event case), answers every request ``--delay-ms``
late (the SLA-breach case), or stops answering everything for ``--stall-s`` seconds once
``--stall-at`` seconds after its first request (the coordinated-omission case: every request
in flight or arriving during the stall waits for its end).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]


def make_app(delay_s: float, stall_at: float | None, stall_s: float) -> Any:
    first: list[float] = []

    async def read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        body = await read_body(receive)
        now = time.monotonic()
        if path != "/health":
            if not first:
                first.append(now)
            if stall_at is not None:
                stall_start = first[0] + stall_at
                stall_end = stall_start + stall_s
                if stall_start <= now < stall_end:
                    await asyncio.sleep(stall_end - now)
        if delay_s:
            await asyncio.sleep(delay_s)
        status, payload = 200, {}
        if path == "/health":
            payload = {"status": "pass", "checks": {"uptime": [{"observedValue": 1.0}]}}
        elif path.startswith(("/webhooks/", "/api/v1/webhooks/")):
            try:
                events = len(orjson.loads(body).get("events", [None]))
            except (orjson.JSONDecodeError, AttributeError):
                events = 1
            status, payload = 202, {"accepted": events, "duplicates": 0}
        elif path == "/echo":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        elif path in ("/chat", "/api/v1/chat"):
            payload = {"reply": "fake", "conversation_id": "x", "evidence": [], "model": "fake",
                       "intent": "unknown"}
        else:
            status, payload = 404, {"title": "Not Found"}
        data = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drop", action="store_true", help="(the default: nothing is stored)")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-at", type=float, default=None)
    parser.add_argument("--stall-s", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(make_app(args.delay_ms / 1000, args.stall_at, args.stall_s), host="127.0.0.1",
                port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
