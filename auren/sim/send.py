"""Sending: post deliveries to a bridge with bounded concurrency, finite timeouts and an
optional constant arrival rate, and summarise statuses and latencies."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from auren.sim.render import WebhookDelivery


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivery: WebhookDelivery
    status: int | None  # None: no HTTP answer (timeout, refused, reset)
    error: str | None
    latency_s: float
    accepted: int  # "accepted" of the bridge's answer: items newly made durable
    duplicates: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class ProviderTally:
    sent: int = 0
    ok: int = 0
    accepted: int = 0
    duplicates: int = 0
    latencies_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class DeliverySummary:
    """What a delivery run did. Latencies are from the *intended* send time in the open model,
    so a server that falls behind shows it in the percentiles instead of hiding it."""

    elapsed_s: float = 0.0
    # True when the time budget ran out before every delivery was sent.
    stopped_early: bool = False
    by_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_provider: dict[str, ProviderTally] = field(default_factory=dict)
    results: list[DeliveryResult] | None = None

    def add(self, result: DeliveryResult) -> None:
        tally = self.by_provider.setdefault(result.delivery.provider, ProviderTally())
        tally.sent += 1
        tally.latencies_s.append(result.latency_s)
        if result.status is None:
            self.errors[result.error or "error"] += 1
        else:
            self.by_status[result.status] += 1
        if result.ok:
            tally.ok += 1
            tally.accepted += result.accepted
            tally.duplicates += result.duplicates
        if self.results is not None:
            self.results.append(result)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.by_provider.values())

    @property
    def succeeded(self) -> int:
        return sum(t.ok for t in self.by_provider.values())

    @property
    def accepted(self) -> int:
        return sum(t.accepted for t in self.by_provider.values())

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.by_provider.values())

    @property
    def all_ok(self) -> bool:
        """Everything was sent and every answer was 2xx."""
        return self.sent > 0 and not self.stopped_early and self.succeeded == self.sent

    def latency_ms(self, provider: str | None = None) -> dict[str, float]:
        tallies = ([self.by_provider[provider]] if provider in self.by_provider
                   else list(self.by_provider.values()) if provider is None else [])
        return percentiles([x for t in tallies for x in t.latencies_s])

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "succeeded": self.succeeded, "accepted": self.accepted,
            "duplicates": self.duplicates, "elapsed_s": round(self.elapsed_s, 3),
            "stopped_early": self.stopped_early,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "errors": dict(self.errors), "latency_ms": self.latency_ms(),
            "providers": {name: {"sent": t.sent, "ok": t.ok, "accepted": t.accepted,
                                 "duplicates": t.duplicates,
                                 "latency_ms": percentiles(t.latencies_s)}
                          for name, t in sorted(self.by_provider.items())},
        }


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and max, in milliseconds (empty input gives zeros)."""
    if not samples_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples_s)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p99": round(rank(0.99), 3), "max": round(ordered[-1] * 1000, 3)}


def _answer_counts(response: httpx.Response) -> tuple[int, int]:
    """``accepted`` and ``duplicates`` from a bridge answer; zeros for any other body."""
    if not response.content or "json" not in response.headers.get("content-type", ""):
        return 0, 0
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return 0, 0
    if not isinstance(body, dict):
        return 0, 0
    accepted, duplicates = body.get("accepted", 0), body.get("duplicates", 0)
    return (accepted if isinstance(accepted, int) else 0,
            duplicates if isinstance(duplicates, int) else 0)


async def _post(client: httpx.AsyncClient, delivery: WebhookDelivery,
                intended: float) -> DeliveryResult:
    try:
        response = await client.post(delivery.path, content=delivery.body,
                                     headers=delivery.headers)
    except httpx.HTTPError as exc:
        return DeliveryResult(delivery, None, type(exc).__name__,
                              time.perf_counter() - intended, 0, 0)
    latency = time.perf_counter() - intended
    accepted, duplicates = _answer_counts(response)
    return DeliveryResult(delivery, response.status_code, None, latency, accepted, duplicates)


@asynccontextmanager
async def _client(base_url: str, concurrency: int, timeout_s: float
                  ) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: proxy variables must not reroute a simulation meant for one bridge.
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as client:
        yield client


async def deliver(
    base_url: str,
    deliveries: Iterable[WebhookDelivery],
    *,
    concurrency: int = 16,
    rate: float | None = None,
    timeout_s: float = 10.0,
    max_duration_s: float = 600.0,
    keep_results: bool = True,
) -> DeliverySummary:
    """POST every delivery to ``base_url`` and summarise the answers.

    Without ``rate`` (closed model) ``concurrency`` workers send back to back. With ``rate``
    (open model) delivery *i* is due at ``i / rate`` seconds whether or not earlier ones were
    answered; at most ``concurrency`` are in flight, and a delivery that had to wait for a slot
    counts the wait in its latency (no coordinated omission). Every request has ``timeout_s``;
    no delivery starts after ``max_duration_s``, so the run is bounded in time as well as by the
    (finite) iterable. ``deliveries`` is consumed lazily, just before each send.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be positive")
    if not timeout_s > 0 or not max_duration_s > 0:
        raise ValueError("timeout_s and max_duration_s must be positive")
    summary = DeliverySummary(results=[] if keep_results else None)
    iterator = iter(deliveries)
    started = time.perf_counter()
    deadline = started + max_duration_s

    async with _client(base_url, concurrency, timeout_s) as client:
        if rate is None:
            async def worker() -> None:
                # The iterator is shared: each delivery goes to exactly one worker.
                while (delivery := next(iterator, None)) is not None:
                    summary.add(await _post(client, delivery, time.perf_counter()))
                    if time.perf_counter() >= deadline:
                        # Out of time; anything left over means the run is incomplete.
                        if next(iterator, None) is not None:
                            summary.stopped_early = True
                        return

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            slots = asyncio.Semaphore(concurrency)
            in_flight: set[asyncio.Task[None]] = set()

            async def send(delivery: WebhookDelivery, intended: float) -> None:
                try:
                    summary.add(await _post(client, delivery, intended))
                finally:
                    slots.release()

            for index, delivery in enumerate(iterator):
                intended = started + index / rate
                if intended >= deadline:
                    summary.stopped_early = True
                    break
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                task = asyncio.create_task(send(delivery, intended))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
    summary.elapsed_s = time.perf_counter() - started
    return summary
