"""The I/O boundary: small Protocols, each with an in-memory twin in ``auren.adapters.memory``.

``EventStore`` is the durable truth (SQLite embedded, PostgreSQL in the full stack) and its
unique key on ``event_id`` deduplicates exactly; ``DurableLog`` is where a webhook becomes
durable before its answer (the store itself, or the bus with its spool); ``EventBus`` is the
full stack's log (Kafka); ``Cache`` is only a fast path in front of the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from auren.adapters.wire import DeliveryRecord
from auren.errors import StoreUnavailable
from auren.events import CanonicalEvent, Delivery, RawPayload


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


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """Archived raw payloads to re-parse: received since ``since``, optionally of one provider
    and naming one user, after the store's opaque cursor ``after`` (0: from the start)."""

    since: datetime
    provider: str | None = None
    user_id: str | None = None
    after: int = 0
    limit: int = 200


@dataclass(frozen=True, slots=True)
class DayCoverage:
    """What one source delivered of one metric on one (UTC) day: the coverage API's input."""

    provider: str
    metric: str
    day: date
    events: int
    last_start: datetime
    last_received: datetime  # when AUREN last received (pushed or fetched) one of them
    last_fetched: datetime | None  # the latest fetch time among them; None: all pushed


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

    async def coverage(self, user_id: str, since: datetime) -> list[DayCoverage]:
        """Per source, metric and UTC day since ``since``: events, the latest start, receipt
        and fetch time."""
        ...

    def events_marker(self) -> int | None:
        """A number that changes whenever an event is added, if the store knows one cheaply
        (NEUROS then skips re-counting a user's events); None: the caller counts."""
        ...

    async def ping(self) -> dict[str, Any]:
        """A real round trip; returns facts for /health. Raises StoreUnavailable."""
        ...


class RawArchive(Protocol):
    """The raw payload archive and retention, kept by the event store (SQLite, PostgreSQL,
    the twin): the archive's rows are written by ``write_batch`` with their delivery."""

    async def archived(self, query: ArchiveQuery) -> list[tuple[int, RawPayload]]:
        """(cursor, payload) in archive order; the last cursor is the next page's ``after``."""
        ...

    async def erase_archive(self, user_id: str) -> int:
        """Delete every archived payload naming ``user_id``; how many were deleted."""
        ...

    async def delete_archive_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                    stop: asyncio.Event | None = None) -> int:
        """Delete archived payloads received before ``cutoff``; how many."""
        ...

    async def delete_events_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                   stop: asyncio.Event | None = None) -> int:
        """Delete every event whose ``start`` is before ``cutoff``; how many."""
        ...


class DurableLog(Protocol):
    """Where the bridge's group commit makes deliveries durable before answering 2xx.

    Embedded, and with PostgreSQL but no Kafka, that is the ``EventStore`` itself. With Kafka
    it is the ``EventBus`` with its breaker and spool (``auren.ingest.durable.BusLog``), whose
    results count the items *published*: exact duplicates are absorbed later by the sink's
    unique keys, so a re-sent delivery the cache missed is answered 202 again, and stored once.
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


class PublishTimeout(StoreUnavailable):
    """The bus did not report on a record within the publish timeout."""

    title = "Event bus did not acknowledge in time"
    slug = "bus-timeout"


class PublishFailed(StoreUnavailable):
    """The bus refused a record (a full local queue, or a broker error)."""

    title = "Event bus refused the record"
    slug = "bus-failed"


class EventBus(Protocol):
    """The full stack's log of deliveries (Kafka): publishes records and reports, per record,
    whether it is durable. ``BusLog`` puts a breaker and the spool around it."""

    async def open(self, timeout_s: float = 30.0) -> None:
        """Connect and prove the producer's guarantees. Raises StoreUnavailable."""
        ...

    async def close(self, timeout_s: float = 10.0) -> None: ...

    async def publish(self, records: Sequence[DeliveryRecord], timeout_s: float, *,
                      slow_s: float | None = None,
                      on_slow: Callable[[float], bool] | None = None,
                      abandon: asyncio.Future[Any] | None = None
                      ) -> list[BaseException | None]:
        """Per record, None once the bus acknowledged it or the error in the way; never raises
        for a record's failure. Bounded by ``timeout_s``. After ``slow_s`` without every report,
        ``on_slow(seconds waited)`` is called once and ends the wait when it returns True; the
        wait also ends when ``abandon`` completes. Unreported records count as timed out."""
        ...

    @property
    def queue_depth(self) -> int:
        """Records handed over and not yet reported on."""
        ...

    @property
    def failures(self) -> Mapping[str, int]:
        """Records not acknowledged, by error name, since start."""
        ...

    async def ping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """A real round trip; returns facts for /health. Raises StoreUnavailable."""
        ...
