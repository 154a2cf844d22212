"""The I/O boundary: small Protocols, each with an embedded implementation beside the real ones.

``EventStore`` is the durable truth (SQLite embedded, PostgreSQL in the full stack) and its
unique key on ``event_id`` deduplicates exactly; ``Cache`` is only a fast path in front of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from auren.events import CanonicalEvent, Delivery


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one delivery's write did inside a group commit."""

    accepted: int  # new events and fetch jobs stored
    duplicates: int  # items the store already had
    duplicate_delivery: bool  # the delivery key itself was seen before


@dataclass(frozen=True, slots=True)
class EventQuery:
    user_id: str
    metric: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    # Keyset cursor: (start, event_id) of the last row of the previous page.
    after: tuple[datetime, str] | None = None


class EventStore(Protocol):
    """Durable store of canonical events, fetch jobs and seen deliveries."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        """Store many deliveries in one transaction (group commit); one result per delivery.

        Raises:
            StoreUnavailable: nothing of the batch was committed.
        """
        ...

    async def query_events(self, query: EventQuery) -> list[CanonicalEvent]: ...

    async def count_events(self, user_id: str | None = None) -> int: ...

    async def count_fetch_jobs(self) -> int: ...

    async def ping(self) -> dict[str, Any]:
        """A real round trip; returns facts for /health. Raises StoreUnavailable."""
        ...


class DurableLog(Protocol):
    """Where the bridge's group commit makes deliveries durable before answering 2xx.

    Embedded, and with PostgreSQL but no Kafka, that is the ``EventStore`` itself. With Kafka
    it is the bus (with its breaker and spool: ``auren.ingest.durable.BusLog``), whose results
    count the items *published*: exact duplicates are absorbed later by the sink's unique keys,
    so a re-sent delivery the cache missed is answered 202 again, and stored once.
    """

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        """One result per delivery, in order.

        Raises:
            ServiceUnavailable: none of the batch may be answered 2xx.
        """
        ...


class Cache(Protocol):
    """Best-effort fast path (in-process or Redis). Losing it loses speed, never correctness."""

    async def seen(self, key: str) -> bool: ...

    async def remember(self, keys: Sequence[str]) -> None: ...
