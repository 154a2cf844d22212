"""A stand-in for Vercel's edge that applies ``deploy/vercel.json`` as Vercel does: each
rewrite's ``source`` pattern (``/api/neuros/:path*``) is matched against the request path and
the request is passed to its ``destination`` with ``:path*`` filled in, the destination's host
mapped to a local server; a path no rewrite matches is 404. It runs in a thread on a free
loopback port. (Vercel's cloud is outside this machine; this server speaks the same rules.)"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tests.helpers import free_port

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def _pattern(source: str) -> re.Pattern[str]:
    """Vercel's path-to-regexp subset the file uses: ``:name*`` is zero or more segments."""
    regex = re.sub(r":(\w+)\*", r"(?P<\1>.*)", re.escape(source).replace(r"\:", ":")
                   .replace(r"\*", "*"))
    return re.compile(f"^{regex}$")


class VercelEdge:
    def __init__(self, config: Path, hosts: dict[str, str]) -> None:
        document = json.loads(config.read_text())
        self.rules = [(_pattern(r["source"]), r["destination"]) for r in document["rewrites"]]
        self.hosts = hosts  # destination host -> local base URL

    def target(self, path: str) -> str | None:
        for pattern, destination in self.rules:
            match = pattern.match(path)
            if match:
                url = destination
                for name, value in match.groupdict().items():
                    url = url.replace(f":{name}*", value)
                parts = urlsplit(url)
                return self.hosts[parts.netloc] + parts.path
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        url = self.target(request.url.path)
        if url is None:
            await Response("not found", status_code=404)(scope, receive, send)
            return
        async with httpx.AsyncClient(timeout=10) as client:
            upstream = await client.request(
                request.method, url, params=request.query_params, content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        await Response(upstream.content, upstream.status_code, headers)(scope, receive, send)


@contextlib.contextmanager
def vercel_edge(config: Path, hosts: dict[str, str]) -> Iterator[str]:
    """The edge on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(VercelEdge(config, hosts), host="127.0.0.1",
                                           port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the edge did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
