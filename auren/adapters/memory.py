"""In-process twins of the adapters' Protocols: the embedded cache, and stores and a bus for
tests and tools that need the real contract without a server.

Each twin keeps the contract of its real counterpart (the same results, errors and ordering),
so a test against a twin says something about the code above it. ``MemoryBus`` also has fault
switches: ``up = False`` is a broker that refuses everything, ``hung = True`` one that stopped
answering (a SIGSTOPped broker: no report until the timeout, with the slow-call and abandon
hooks honoured as Kafka's own bus honours them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from auren.adapters.base import (
    ArchiveQuery,
    DayCoverage,
    EventQuery,
    PublishTimeout,
    WriteResult,
)
from auren.adapters.wire import DeliveryRecord
from auren.errors import StoreUnavailable
from auren.events import REPROCESS, CanonicalEvent, Delivery, FetchJob, RawPayload, iso


class MemoryCache:
    """``Cache`` as a bounded LRU set of keys; per process, lost on restart (the store is truth)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    async def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    async def remember(self, keys: Sequence[str]) -> None:
        if self._capacity <= 0:
            return
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


class MemoryStore:
    """``EventStore`` and ``DurableLog`` in a dict: deduplicates by delivery key and event id
    exactly as the SQLite and PostgreSQL stores do, and answers the same queries."""

    def __init__(self) -> None:
        self._events: dict[str, CanonicalEvent] = {}
        self._jobs: dict[str, FetchJob] = {}
        self._deliveries: set[tuple[str, str]] = set()
        self._raw: dict[tuple[str, str], tuple[int, RawPayload]] = {}
        self._raw_cursor = 0
        self._open = False
        # Fault switch: while set, every call fails as an unreachable store does.
        self.unavailable: str | None = None

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check(self) -> None:
        if not self._open:
            raise StoreUnavailable("store is not open")
        if self.unavailable is not None:
            raise StoreUnavailable(self.unavailable, retry_after_s=2)

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        self._check()
        results = []
        for delivery in deliveries:
            items = len(delivery.events) + len(delivery.fetch_jobs)
            key = (delivery.provider, delivery.delivery_key)
            if key in self._deliveries:
                # A provider retry: its items were stored with the first copy.
                results.append(WriteResult(0, items, True))
                continue
            self._deliveries.add(key)
            if delivery.raw is not None:
                self._raw_cursor += 1
                self._raw[key] = (self._raw_cursor, delivery.raw)
            accepted = 0
            for event in delivery.events:
                known = self._events.get(event.event_id)
                if known is None:
                    self._events[event.event_id] = event
                    accepted += 1
                elif event.provenance == REPROCESS and (known.value, known.unit) != (
                        event.value, event.unit):
                    # A reprocessed event corrects the stored one: value, unit, provenance.
                    known.value, known.unit, known.provenance = (event.value, event.unit,
                                                                 REPROCESS)
                    accepted += 1
            for job in delivery.fetch_jobs:
                if job.job_id not in self._jobs:
                    self._jobs[job.job_id] = job
                    accepted += 1
            results.append(WriteResult(accepted, items - accepted, False))
        return results

    async def query_events(self, query: EventQuery) -> list[CanonicalEvent]:
        self._check()
        found = [e for e in self._events.values()
                 if e.user_id == query.user_id
                 and (query.metric is None or e.metric == query.metric)
                 and (query.since is None or e.start >= query.since)
                 and (query.until is None or e.start < query.until)
                 and (query.after is None or (e.start, e.event_id) > query.after)]
        found.sort(key=lambda e: (e.start, e.event_id))
        return found[:query.limit]

    async def count_events(self, user_id: str | None = None) -> int:
        self._check()
        if user_id is None:
            return len(self._events)
        return sum(1 for e in self._events.values() if e.user_id == user_id)

    async def count_fetch_jobs(self) -> int:
        self._check()
        return len(self._jobs)

    async def coverage(self, user_id: str, since: datetime) -> list[DayCoverage]:
        self._check()
        groups: dict[tuple[str, str, date], list[CanonicalEvent]] = {}
        for e in self._events.values():
            if e.user_id == user_id and e.start >= since:
                day = e.start.astimezone(UTC).date()
                groups.setdefault((e.provider, e.metric, day), []).append(e)
        return [DayCoverage(provider, metric, day, len(found), max(e.start for e in found),
                            max(e.received_at for e in found),
                            max((e.fetched_at for e in found if e.fetched_at), default=None))
                for (provider, metric, day), found in groups.items()]

    def events_marker(self) -> int | None:
        # Events are only ever added (retention aside), so their number changes when one is.
        return len(self._events) if self._open else None

    # --- retention and the raw payload archive (RawArchive) -------------------------------

    async def archived(self, query: ArchiveQuery) -> list[tuple[int, RawPayload]]:
        self._check()
        since = iso(query.since)
        found = sorted((cursor, raw) for cursor, raw in self._raw.values()
                       if cursor > query.after and raw.received_at >= since
                       and query.provider in (None, raw.provider)
                       and (query.user_id is None or query.user_id in raw.user_ids))
        return found[:query.limit]

    async def erase_archive(self, user_id: str) -> int:
        self._check()
        gone = [key for key, (_, raw) in self._raw.items() if user_id in raw.user_ids]
        for key in gone:
            del self._raw[key]
        return len(gone)

    async def delete_archive_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                    stop: asyncio.Event | None = None) -> int:
        self._check()
        cut = iso(cutoff)
        gone = [key for key, (_, raw) in self._raw.items() if raw.received_at < cut]
        for key in gone:
            del self._raw[key]
        return len(gone)

    async def delete_events_before(self, cutoff: datetime, *, batch_rows: int = 5000,
                                   stop: asyncio.Event | None = None) -> int:
        self._check()
        gone = [event_id for event_id, e in self._events.items() if e.start < cutoff]
        for event_id in gone:
            del self._events[event_id]
        return len(gone)

    async def ping(self) -> dict[str, Any]:
        self._check()
        return {"engine": "memory", "responseTime_ms": 0.0}


class MemoryBus:
    """``EventBus`` in process: acknowledges what it is given while ``up`` and keeps it in
    ``records``, in order."""

    def __init__(self) -> None:
        self.up = True
        self.hung = False
        self.records: list[DeliveryRecord] = []
        self.calls = 0
        self.failures: Counter[str] = Counter()
        self.opened = False

    async def open(self, timeout_s: float = 30.0) -> None:
        self.opened = True

    async def close(self, timeout_s: float = 10.0) -> None:
        self.opened = False

    @property
    def queue_depth(self) -> int:
        return 0

    async def publish(self, records: Sequence[DeliveryRecord], timeout_s: float, *,
                      slow_s: float | None = None,
                      on_slow: Callable[[float], bool] | None = None,
                      abandon: asyncio.Future[Any] | None = None
                      ) -> list[BaseException | None]:
        self.calls += 1
        await asyncio.sleep(0)  # a real publish always yields to the loop
        if self.hung:
            started = time.monotonic()
            if on_slow is not None and slow_s is not None and slow_s < timeout_s:
                if not await self._wait(slow_s, abandon) and not on_slow(slow_s):
                    await self._wait(timeout_s - slow_s, abandon)
            else:
                await self._wait(timeout_s, abandon)
            return self._failed(records, f"hung: no report within "
                                         f"{time.monotonic() - started:.3g} s")
        if not self.up:
            return self._failed(records, "the bus is down")
        self.records.extend(records)
        return [None] * len(records)

    @staticmethod
    async def _wait(seconds: float, abandon: asyncio.Future[Any] | None) -> bool:
        """Sleep ``seconds``; True when ``abandon`` ended the wait first."""
        if abandon is None:
            await asyncio.sleep(seconds)
            return False
        await asyncio.wait((abandon,), timeout=seconds)
        return abandon.done()

    def _failed(self, records: Sequence[DeliveryRecord], detail: str
                ) -> list[BaseException | None]:
        self.failures[PublishTimeout.__name__] += len(records)
        return [PublishTimeout(detail, retry_after_s=2) for _ in records]

    async def ping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        if not self.up or self.hung or not self.opened:
            raise StoreUnavailable("the bus does not answer")
        return {"engine": "memory", "responseTime_ms": 0.0, "queued": 0}
