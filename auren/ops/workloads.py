"""What the load engines send: unique signed webhooks, health checks and chat questions.

Every webhook is distinct (its own webhook-id and event ids, from the simulator) and correctly
signed moments before it is sent, so none is absorbed by deduplication or rejected as stale.
Chat questions come from distinct users so that NEUROS's per-user rate limit measures nothing.
"""

from __future__ import annotations

import itertools
import uuid
from urllib.parse import urlsplit

import orjson

from auren.ops.loadgen import RequestFactory, raw_request
from auren.sim.load import render_unique_native

EVENTS_PER_WEBHOOK = 5
CHAT_QUESTIONS = ("How did I sleep last week?", "What is my HRV?",
                  "How is my resting heart rate?", "Am I recovered today?")


def _host(base_url: str) -> str:
    return urlsplit(base_url).netloc


def webhooks(base_url: str, secret: str, *, path: str = "/webhooks/auren",
             events_per_webhook: int = EVENTS_PER_WEBHOOK) -> RequestFactory:
    host = _host(base_url)
    tag = uuid.uuid4().hex[:10]
    batches = itertools.count()

    def make(n: int) -> list[tuple[bytes, int]]:
        deliveries = render_unique_native(n, secret, events_per_webhook=events_per_webhook,
                                          prefix=f"{tag}b{next(batches)}", path=path)
        return [(raw_request("POST", d.path, host, d.headers, d.body), d.items)
                for d in deliveries]

    return make


def health(base_url: str, path: str = "/health") -> RequestFactory:
    raw = raw_request("GET", path, _host(base_url))

    def make(n: int) -> list[tuple[bytes, int]]:
        return [(raw, 0)] * n

    return make


def chat(base_url: str, path: str = "/chat", api_key: str | None = None) -> RequestFactory:
    host = _host(base_url)
    tag = uuid.uuid4().hex[:8]
    counter = itertools.count()
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"

    def make(n: int) -> list[tuple[bytes, int]]:
        out = []
        for _ in range(n):
            i = next(counter)
            body = orjson.dumps({"message": CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)],
                                 "user_id": f"load-{tag}-{i}"})
            out.append((raw_request("POST", path, host, headers, body), 0))
        return out

    return make
