"""A planted fault for the toolkit's loss tests, run as a real process in front of a real bridge:

    python -m tests.ops.lossy_proxy --port P --upstream http://127.0.0.1:B --secret whsec_...
        --every 1000 --log FILE

An HTTP/1.1 keep-alive proxy (one upstream connection per client connection) that forwards
everything to the bridge, except every ``--every``-th correctly signed webhook (the 1000th,
the 2000th, ...: deterministic, so the true loss is known). That one it answers itself with the
bridge's 202 ``{"accepted": <events>, "duplicates": 0}`` and never forwards: acknowledged and
not stored. Each dropped delivery is appended to ``--log`` as a JSON line with its webhook-id
and its events' record ids, flushed before the 202 is written.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from auren.providers.native import decode_whsec


class Dropper:
    def __init__(self, secret: str, every: int, log: Path) -> None:
        self._key = decode_whsec(secret)
        self._every = every
        self._log = log.open("ab")
        self.signed = 0

    def _signed(self, headers: dict[bytes, bytes], body: bytes) -> bool:
        msg_id = headers.get(b"webhook-id", b"")
        stamp = headers.get(b"webhook-timestamp", b"")
        given = headers.get(b"webhook-signature", b"")
        if not msg_id or not stamp or not given:
            return False
        mac = hmac.new(self._key, msg_id + b"." + stamp + b"." + body, hashlib.sha256).digest()
        expected = b"v1," + base64.b64encode(mac)
        return any(hmac.compare_digest(expected, part) for part in given.split(b" "))

    def drop(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes | None:
        """The 202 to answer instead of forwarding, or None to forward."""
        if b"/webhooks/" not in path or not self._signed(headers, body):
            return None
        self.signed += 1
        if self.signed % self._every:
            return None
        events = orjson.loads(body).get("events", [])
        self._log.write(orjson.dumps({"webhook_id": headers[b"webhook-id"].decode(),
                                      "records": [e.get("id") for e in events]}) + b"\n")
        self._log.flush()
        payload = orjson.dumps({"accepted": len(events), "duplicates": 0})
        return (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(payload)) + payload


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    body = await reader.readexactly(length) if length else b""
    return head, headers, body


async def serve(port: int, upstream: str, dropper: Dropper) -> None:
    parts = urlsplit(upstream)
    host, up_port = parts.hostname or "127.0.0.1", parts.port or 80

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        try:
            while True:
                try:
                    head, headers, body = await _read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1]
                answer = dropper.drop(path, headers, body)
                if answer is None:
                    if up_writer is None:
                        up_reader, up_writer = await asyncio.open_connection(host, up_port)
                    assert up_reader is not None
                    up_writer.write(head + body)
                    status_head, _, up_body = await _read_message(up_reader)
                    answer = status_head + up_body
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            if up_writer is not None:
                up_writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    dropper = Dropper(args.secret, args.every, args.log)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.upstream, dropper))


if __name__ == "__main__":
    main()
