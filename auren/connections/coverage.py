"""Is each person's data arriving? Coverage per source and metric, and when a source went quiet.

Pure: from the person's connections and what the event store holds per source, metric and day
(``EventStore.coverage``). For every metric: the days with data in the window, the last event
and when it was received and fetched, the usual cadence (the median gap between days with
data, at least a day) and how many days it has been silent. A *connected* source is ``stale``
for a metric when it has been silent longer than its cadence plus a day of grace (last night's
data is often uploaded only in the morning); the source is stale when every metric it delivers
is. Sources without a connection (pushed data: Health Auto Export, AUREN's own route) are
listed too, never stale: AUREN cannot tell a phone left at home from an outage.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from auren.adapters.base import DayCoverage
from auren.connections.base import ACTIVE, Connection
from auren.events import iso

GRACE_DAYS = 2


@dataclass(frozen=True, slots=True)
class MetricCoverage:
    metric: str
    days: tuple[date, ...]
    last_start: datetime
    last_received: datetime
    last_fetched: datetime | None
    cadence_days: float
    silent_days: int
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "days_with_data": len(self.days),
                "first_day": self.days[0].isoformat(), "last_day": self.days[-1].isoformat(),
                "last_event": iso(self.last_start), "last_received": iso(self.last_received),
                "last_fetched": iso(self.last_fetched) if self.last_fetched else None,
                "cadence_days": self.cadence_days, "silent_days": self.silent_days,
                "stale": self.stale}


@dataclass(slots=True)
class SourceCoverage:
    provider: str
    connection: Connection | None
    metrics: list[MetricCoverage] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        return bool(self.metrics) and all(m.stale for m in self.metrics)

    @property
    def last_received(self) -> datetime | None:
        return max((m.last_received for m in self.metrics), default=None)

    def as_dict(self) -> dict[str, Any]:
        c = self.connection
        body: dict[str, Any] = {"provider": self.provider, "connected": c is not None,
                                "stale": self.stale,
                                "last_received": iso(self.last_received)
                                if self.last_received else None,
                                "metrics": [m.as_dict() for m in self.metrics]}
        if c is not None:
            body.update({"provider_user_id": c.provider_user_id, "status": c.status,
                         "last_fetch_at": iso(c.last_fetch_at) if c.last_fetch_at else None,
                         "last_success_at": iso(c.last_success_at) if c.last_success_at
                         else None, "last_error": c.last_error})
        return body


def cadence(days: Sequence[date]) -> float:
    """The median gap between consecutive days with data (at least one day)."""
    gaps = [(b - a).days for a, b in itertools.pairwise(days)]
    return max(1.0, float(statistics.median(gaps))) if gaps else 1.0


def coverage(connections: Iterable[Connection], found: Iterable[DayCoverage],
             today: date) -> list[SourceCoverage]:
    """Per source (connected accounts first, then pushed sources), per metric."""
    sources: dict[str, SourceCoverage] = {}
    for connection in connections:
        if connection.status == "disconnected":
            continue
        sources.setdefault(connection.provider, SourceCoverage(connection.provider, connection))
    grouped: dict[tuple[str, str], list[DayCoverage]] = {}
    for row in found:
        grouped.setdefault((row.provider, row.metric), []).append(row)
    for (provider, metric), rows in sorted(grouped.items()):
        source = sources.setdefault(provider, SourceCoverage(provider, None))
        rows.sort(key=lambda r: r.day)
        days = tuple(r.day for r in rows)
        usual = cadence(days)
        silent = (today - days[-1]).days
        connected = source.connection is not None and source.connection.status == ACTIVE
        source.metrics.append(MetricCoverage(
            metric, days, max(r.last_start for r in rows), max(r.last_received for r in rows),
            max((r.last_fetched for r in rows if r.last_fetched), default=None), usual,
            silent, connected and silent > usual + GRACE_DAYS))
    return list(sources.values())


def window_start(today: date, days: int) -> datetime:
    """The first instant (UTC) of a ``days``-day window ending today, a day earlier: a night's
    events start the evening before the day they belong to."""
    return datetime.combine(today - timedelta(days=days), datetime.min.time(), UTC)
