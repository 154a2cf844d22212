"""Slow and idle clients against real servers, as a process of their own:

    python -m tests.services.slow_clients --plan PLAN.json --out RESULT.json

The plan names targets (``host``, ``port``, the ``path`` slow bodies are sent to, the path an
idle keep-alive client asks once) and how many connections of each kind to hold on each, for
``duration_s``; ``spread_s`` spreads each kind's first connections over that many seconds.
Every connection misbehaves until the server closes it, then its slot connects again at once,
so the pressure stays at the planned level for the whole run:

- ``silent``: connects and never sends a byte (bound: the header deadline, from the connect);
- ``slow_headers``: sends a request's headers one byte a second (bound: the header deadline);
- ``slow_body``: sends complete headers announcing a large body, then one byte a second (never
  idle long enough for the idle bound: bound, the body deadline, from the end of the headers);
- ``idle_keepalive``: asks one small request, reads the answer, then stays silent (bound: the
  keep-alive timeout, from the end of the answer).

The result has, per kind, every observed time from the start of its bound to the server's
close, what the server sent before closing (408 or not), connections still open past their
bound at the end (with their age), and connect errors. A separate process, so that its thousands of
sockets and coroutines do not share an interpreter (and a GIL) with the clients that measure
legitimate traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import uvloop

KINDS = ("silent", "slow_headers", "slow_body", "idle_keepalive")


class Run:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.ends_at = 0.0
        self.closes: dict[str, list[float]] = defaultdict(list)
        self.answered_408: dict[str, int] = defaultdict(int)
        self.connect_errors: dict[str, int] = defaultdict(int)
        self.open_at_end: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.open_now = 0
        self.peak_open = 0
        self.ready = asyncio.Event()
        self._connected = 0
        self._total = sum(sum(t["counts"].values()) for t in plan["targets"])

    async def slot(self, target: dict[str, Any], kind: str, offset_s: float) -> None:
        loop = asyncio.get_running_loop()
        first = True
        await asyncio.sleep(offset_s)
        while loop.time() < self.ends_at:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (target["host"], target["port"])), 5)
            except (OSError, TimeoutError):
                self.connect_errors[kind] += 1
                sock.close()
                await asyncio.sleep(0.2)
                continue
            self.open_now += 1
            self.peak_open = max(self.peak_open, self.open_now)
            if first:
                first = False
                self._connected += 1
                if self._connected == self._total:
                    self.ready.set()
            try:
                await self._misbehave(sock, target, kind)
            except OSError:
                self.errors[kind] += 1  # the server closed while the request was being sent
            finally:
                self.open_now -= 1
                sock.close()

    async def _misbehave(self, sock: socket.socket, target: dict[str, Any], kind: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        trickle = b""
        if kind == "slow_headers":
            trickle = (f"POST {target['path']} HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
        elif kind == "slow_body":
            await loop.sock_sendall(sock, (
                f"POST {target['path']} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n").encode())
            started = loop.time()
            trickle = b"{"  # then the body, a byte at a time
        elif kind == "idle_keepalive":
            await loop.sock_sendall(sock, (f"GET {target['idle_path']} HTTP/1.1\r\nHost: x\r\n"
                                           "\r\n").encode())
            if not await self._read_response(sock):
                return
            started = loop.time()
        reader = asyncio.ensure_future(self._until_closed(sock))
        try:
            if trickle:
                # The headers a byte at a time, or a body byte after byte (its length is never
                # reached: the body deadline comes first).
                sent = 0
                while not reader.done() and loop.time() < self.ends_at:
                    byte = trickle[sent:sent + 1] if len(trickle) > 1 else trickle
                    if not byte:
                        break
                    try:
                        await loop.sock_sendall(sock, byte)
                    except OSError:
                        break
                    sent += 1
                    await asyncio.sleep(1.0)
            await asyncio.wait([reader], timeout=max(0.0, self.ends_at - loop.time()))
            if not reader.done():
                # Still open when the run ends: how long since its bound started.
                self.open_at_end[kind].append(loop.time() - started)
                return
            data, closed_at = reader.result()
        finally:
            reader.cancel()
        if closed_at < self.ends_at:
            self.closes[kind].append(closed_at - started)
            if data.startswith(b"HTTP/1.1 408 "):
                self.answered_408[kind] += 1

    @staticmethod
    async def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
        """What the server sent, and when it closed (timed here, not when noticed)."""
        loop = asyncio.get_running_loop()
        data = b""
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except OSError:
                return data, loop.time()
            if not chunk:
                return data, loop.time()
            data += chunk

    @staticmethod
    async def _read_response(sock: socket.socket) -> bool:
        loop = asyncio.get_running_loop()
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                if not chunk:
                    return False
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                if not chunk:
                    return False
                body += chunk
        except (OSError, TimeoutError):
            return False
        return True

    async def main(self, ready: Path) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.ends_at = loop.time() + self.plan["duration_s"]
        # Each kind's slots start spread evenly over its bound, and as every cycle lasts about
        # the bound, they stay spread: a steady pressure of held connections. (All of them in
        # the same millisecond would be a connection flood, whose cost is accepting, not
        # holding: another matter.)
        spread = self.plan.get("spread_s", {})
        tasks = []
        for target in self.plan["targets"]:
            for kind, count in target["counts"].items():
                step = spread.get(kind, 0.0) / count
                tasks += [asyncio.ensure_future(self.slot(target, kind, i * step))
                          for i in range(count)]
                await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), self.plan["duration_s"])
        # Tell the test the pressure is on (every slot has connected once).
        await asyncio.to_thread(ready.write_text, str(self.peak_open))
        await asyncio.gather(*tasks)
        return {"closes": self.closes, "answered_408": self.answered_408,
                "connect_errors": self.connect_errors, "open_at_end": self.open_at_end,
                "errors": self.errors, "peak_open": self.peak_open,
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = orjson.loads(args.plan.read_bytes())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    result = uvloop.run(Run(plan).main(args.out.with_name(args.out.name + ".ready")))
    args.out.write_bytes(orjson.dumps(result))
    print(f"slow clients done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
