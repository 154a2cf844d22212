"""The path of one webhook after its bytes are read: handshake, verify, parse, admit, dedup,
make durable, answer. HTTP-free: it takes a :class:`WebhookRequest` and returns an
:class:`Outcome`, and raises the ``auren.errors`` tree for everything else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auren.adapters.base import Cache
from auren.errors import (
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProviderNotConfigured,
    SignatureInvalid,
)
from auren.events import Delivery
from auren.ingest.admission import Admission
from auren.ingest.archive import PayloadSealer
from auren.ingest.committer import Committer
from auren.observability import BridgeMetrics
from auren.providers import PROVIDER_CLASSES
from auren.providers.base import Provider, WebhookRequest


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: Any  # JSON-serialisable, or None for an empty body


class IngestPipeline:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        cache: Cache,
        admission: Admission,
        committer: Committer,
        metrics: BridgeMetrics,
        clock: Callable[[], float] = time.time,
        gate: Callable[[str, str | None], Awaitable[None]] | None = None,
        sealer: PayloadSealer | None = None,
        screen: Callable[[Delivery], int] | None = None,
        erasure_screen: Callable[[Delivery], tuple[Delivery, int]] | None = None,
    ) -> None:
        self._providers = providers
        self._cache = cache
        self._admission = admission
        self._committer = committer
        self._metrics = metrics
        self._clock = clock
        # Rate limits (per provider, per source): raises RateLimited before any CPU is spent
        # verifying; None when no limit is configured (the hot path pays nothing).
        self._gate = gate
        # ARCHIVE_RAW_PAYLOADS: each verified delivery's raw payload, sealed, travels with it
        # through the durable step (same transaction embedded, same Kafka record full stack).
        self._sealer = sealer
        # The erasure ledger's screen: the delivery without the items of erased people, and
        # how many went (None: nobody to screen for).
        self._erasure_screen = erasure_screen
        # Consent: drops (and counts) the items of people who withdrew it for the provider,
        # returning how many; None when nothing is screened.
        self._screen = screen

    def provider(self, name: str, method: str) -> Provider:
        """The configured provider; 404 for an unknown one, then 405 for a method its URL does
        not answer (configured or not: the resource exists either way), then 404 when it is
        not configured."""
        cls = PROVIDER_CLASSES.get(name)
        if cls is None:
            raise NotFound(f"unknown provider {name!r}")
        if method not in cls.methods:
            raise MethodNotAllowed(cls.methods)
        provider = self._providers.get(name)
        if provider is None:
            raise ProviderNotConfigured(f"provider {name!r} is not configured")
        return provider

    async def handle(self, name: str, request: WebhookRequest) -> Outcome:
        provider = self.provider(name, request.method)
        handshake = provider.handshake(request)
        if handshake is not None:
            return Outcome(handshake.status, handshake.body)
        if request.method != "POST":  # a handshake method the handshake did not answer
            raise MethodNotAllowed(PROVIDER_CLASSES[name].methods)
        if self._gate is not None:
            await self._gate(name, request.client_ip)
        try:
            provider.verify(request, self._clock())
        except SignatureInvalid:
            self._metrics.signature_failures.labels(name).inc()
            raise
        received_at = datetime.now(UTC)
        delivery = provider.parse(request, received_at)
        erased = 0
        if self._erasure_screen is not None:
            delivery, erased = self._erasure_screen(delivery)
            if erased:
                # A person erased before: answered as a success (the provider must stop
                # retrying), nothing of them stored, counted.
                self._metrics.items_erased.labels(name).inc(erased)
                if not delivery.events and not delivery.fetch_jobs:
                    return _erased(delivery)
        withheld = self._screen(delivery) if self._screen is not None else 0
        if withheld and not delivery.events and not delivery.fetch_jobs:
            # Answered as a success, so that the provider does not retry what will never be
            # stored; nothing is kept, not even the delivery's key.
            if delivery.success_status == 204:
                return Outcome(204, None)
            return Outcome(delivery.success_status,
                           {"accepted": 0, "duplicates": 0, "withheld": withheld})
        cache_key = f"{name}:{delivery.delivery_key}"
        if await self._cache.seen(cache_key):
            self._metrics.duplicates.labels(name).inc()
            return _duplicate(delivery, len(delivery.events) + len(delivery.fetch_jobs))
        if self._sealer is not None and not withheld and not erased:
            # A body with items of someone erased or who withdrew consent is not archived: the
            # archive would keep what the screens just refused to store.
            delivery.raw = self._sealer.seal(request, delivery, received_at)
        admission = self._admission
        if not admission.try_enter():
            try:
                await admission.enter()
            except Overloaded:
                self._metrics.rejected.inc()
                raise
        try:
            durable = self._committer.enqueue(delivery, admission.leave)
        except BaseException:
            admission.leave()
            raise
        result = await durable
        await self._cache.remember((cache_key,))
        if result.duplicates:
            self._metrics.duplicates.labels(name).inc(result.duplicates)
        if result.accepted:
            self._metrics.observe_stored(name, result.accepted)
        total = len(delivery.events) + len(delivery.fetch_jobs)
        if result.duplicate_delivery or (total and not result.accepted):
            return _duplicate(delivery, result.duplicates)
        if delivery.ignored or delivery.skipped:
            self._metrics.observe_unstored(name, delivery.ignored,
                                           [(s.reason, s.count) for s in delivery.skipped])
        body: dict[str, Any] = {"accepted": result.accepted, "duplicates": result.duplicates}
        if withheld:
            body["withheld"] = withheld
        _report_unstored(delivery, body)
        if delivery.success_status == 204:
            return Outcome(204, None)
        return Outcome(delivery.success_status, body)


def _report_unstored(delivery: Delivery, body: dict[str, Any]) -> None:
    """What the delivery carried but was not stored: ignored items (no metric for them) and
    skipped measurements (invalid), so the sender sees why without the rest being refused."""
    if delivery.ignored:
        body["ignored"] = delivery.ignored
    if delivery.skipped:
        body["skipped"] = [s.as_dict() for s in delivery.skipped]


def _erased(delivery: Delivery) -> Outcome:
    """Everything in the delivery was an erased person's: a plain success, stored nothing."""
    if delivery.success_status == 204:
        return Outcome(204, None)
    return Outcome(delivery.success_status, {"accepted": 0, "duplicates": 0})


def _duplicate(delivery: Delivery, duplicates: int) -> Outcome:
    """Everything was already stored: a success, so that the provider stops retrying."""
    if delivery.success_status == 204:
        # Fitbit re-sends byte-identical notifications and disables subscribers that answer
        # anything but 204.
        return Outcome(204, None)
    body: dict[str, Any] = {"duplicate": True, "accepted": 0, "duplicates": duplicates}
    _report_unstored(delivery, body)
    return Outcome(200, body)
