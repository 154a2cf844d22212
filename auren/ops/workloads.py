"""What the load engines send: unique signed webhooks, health checks and chat questions.

Every webhook is distinct (its own webhook-id and event ids, from the simulator) and correctly
signed moments before it is sent, so none is absorbed by deduplication or rejected as stale.
The webhook workload is an :class:`~auren.ops.ledger.Identity`: it knows the source record id
of every event each request carries, and every event it renders is stored under one user-id
prefix of its own (``namespace``), so that the store can be asked for exactly the run's events.
Chat questions come from distinct users so that NEUROS's per-user rate limit measures nothing.
"""

from __future__ import annotations

import bisect
import itertools
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson

from auren.ops.loadgen import RequestFactory, raw_request
from auren.sim.load import render_unique_native

EVENTS_PER_WEBHOOK = 5
CHAT_QUESTIONS = ("How did I sleep last week?", "What is my HRV?",
                  "How is my resting heart rate?", "Am I recovered today?")


def _host(base_url: str) -> str:
    return urlsplit(base_url).netloc


class WebhookRequests:
    """Unique signed native webhooks, rendered in batches; request ``seq`` (render order)
    carries the events ``<tag>b<batch>-<i>-<k>`` of user ``load-<tag>b<batch>-u...``."""

    def __init__(self, base_url: str, secret: str, *, path: str = "/webhooks/auren",
                 events_per_webhook: int = EVENTS_PER_WEBHOOK) -> None:
        self._host = _host(base_url)
        self._secret = secret
        self._path = path
        self.events_per_webhook = events_per_webhook
        self.tag = uuid.uuid4().hex[:10]
        self._starts: list[int] = []  # the sequence number of each batch's first request
        self._rendered = 0

    @property
    def namespace(self) -> str:
        # render_unique_native names users "load-<prefix>-u<n>", the prefix "<tag>b<batch>".
        return f"load-{self.tag}b"

    def __call__(self, n: int) -> list[tuple[bytes, int]]:
        batch = len(self._starts)
        self._starts.append(self._rendered)
        self._rendered += n
        deliveries = render_unique_native(n, self._secret,
                                          events_per_webhook=self.events_per_webhook,
                                          prefix=f"{self.tag}b{batch}", path=self._path)
        return [(raw_request("POST", d.path, self._host, d.headers, d.body), d.items)
                for d in deliveries]

    def ids_of(self, seq: int) -> Sequence[str]:
        if not 0 <= seq < self._rendered:
            raise IndexError(f"request {seq} was never rendered")
        batch = bisect.bisect_right(self._starts, seq) - 1
        index = seq - self._starts[batch]
        return [f"{self.tag}b{batch}-{index}-{k}" for k in range(self.events_per_webhook)]


def webhooks(base_url: str, secret: str, *, path: str = "/webhooks/auren",
             events_per_webhook: int = EVENTS_PER_WEBHOOK) -> WebhookRequests:
    return WebhookRequests(base_url, secret, path=path, events_per_webhook=events_per_webhook)


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
