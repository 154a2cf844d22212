"""NEUROS's second cache level: daily series shared by every NEUROS process (Redis).

The in-process :class:`~auren.neuros.chat.SeriesCache` is the first level; this one lets the
workers and replicas of NEUROS reuse what any of them read from the event store. Validity is
exactly the first level's: an entry is used only for the same user, time zone, day and metric,
while the user's event count (the validity token every turn reads from the store) is what it
was when the entry was written, and for at most ``ttl_s`` seconds after it was written. The
store only ever adds (deduplicated) events, so a new measurement changes the count and the next
turn recomputes, whichever process answers it.

Layout: one hash per user, ``<prefix>neuros:series:<user id>``, one field per
``<time zone>|<metric>``, so that erasing a user is one ``DEL`` and a user's fields are bounded
by the zones and metrics asked about (a field of an earlier day is overwritten, not kept). The
hash's TTL is set with every write. Values are JSON (orjson, dates as ISO strings); anything
that does not decode to exactly the expected shape is a miss, never an error.

Redis is a fast path only: unavailable, slow or with its breaker open, every lookup is a miss
and the turn reads the store as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import orjson

from auren.neuros.chat import Cached

FORMAT = 1
KEY_PREFIX = "neuros:series:"


class FieldCache(Protocol):
    """Hashes of fields with a TTL (``auren.adapters.redis_cache.RedisCache``)."""

    async def get_fields(self, key: str, fields: Sequence[str]) -> list[bytes | None] | None:
        """One value per field (None: absent), or None when the cache is unavailable."""
        ...

    def post_fields(self, key: str, values: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        """Queue a write of fields; the hash expires ``ttl_s`` after it."""
        ...

    async def flush_fields(self) -> None: ...

    async def forget(self, key: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One metric's cached daily series, with what makes it valid."""

    day: date  # the user's "today" when it was read
    count: int  # the user's event count it was read at
    written_at: float  # Unix time
    series: dict[date, float]
    providers: frozenset[str]


def user_key(user_id: str) -> str:
    return KEY_PREFIX + user_id


def field_name(tz_key: str, metric: str) -> str:
    return f"{tz_key}|{metric}"


def encode(entry: Entry) -> bytes | None:
    """The entry as JSON, or None if it holds a value JSON cannot carry exactly."""
    if not all(type(v) in (int, float) and math.isfinite(v) for v in entry.series.values()):
        return None
    try:
        return orjson.dumps({"v": FORMAT, "day": entry.day, "n": entry.count,
                             "t": entry.written_at, "p": sorted(entry.providers),
                             "s": entry.series}, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
        return None


def decode(raw: bytes | str) -> Entry | None:
    """The entry ``encode`` wrote, or None for anything else (another format, a damaged or
    foreign value)."""
    try:
        obj: Any = orjson.loads(raw)
        if not isinstance(obj, dict) or obj.get("v") != FORMAT:
            return None
        count, written, providers, values = obj["n"], obj["t"], obj["p"], obj["s"]
        if (type(count) is not int or type(written) not in (int, float)
                or not isinstance(providers, list) or not isinstance(values, dict)
                or not all(type(p) is str for p in providers)):
            return None
        series: dict[date, float] = {}
        for day, value in values.items():
            if type(value) not in (int, float):
                return None
            series[date.fromisoformat(day)] = value
        return Entry(date.fromisoformat(obj["day"]), count, float(written), series,
                     frozenset(providers))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class SharedSeries:
    """The second level over a :class:`FieldCache`: one batched lookup per call."""

    def __init__(self, cache: FieldCache, *, ttl_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl_s <= 0:
            raise ValueError("every cached value needs a positive TTL")
        self._cache = cache
        self._ttl_s = ttl_s
        self._clock = clock

    async def get(self, user_id: str, tz_key: str, today: date, metrics: Sequence[str],
                  count: int) -> dict[str, Cached]:
        """The metrics whose entry is valid for ``today`` at ``count``; the rest are absent
        (also all of them when the cache is unavailable)."""
        raws = await self._cache.get_fields(user_key(user_id),
                                            [field_name(tz_key, m) for m in metrics])
        if raws is None:
            return {}
        now = self._clock()
        found: dict[str, Cached] = {}
        for metric, raw in zip(metrics, raws, strict=True):
            entry = decode(raw) if raw is not None else None
            if (entry is not None and entry.day == today and entry.count == count
                    and 0 <= now - entry.written_at <= self._ttl_s):
                found[metric] = (entry.series, entry.providers)
        return found

    def put(self, user_id: str, tz_key: str, today: date, entries: Mapping[str, Cached],
            count: int) -> None:
        now = self._clock()
        values = []
        for metric, (series, providers) in entries.items():
            raw = encode(Entry(today, count, now, series, providers))
            if raw is not None:
                values.append((field_name(tz_key, metric), raw))
        if values:
            self._cache.post_fields(user_key(user_id), values, self._ttl_s)

    async def forget(self, user_id: str) -> bool:
        """Drop every entry of the user (after the writes already queued, so none of them
        lands after the erasure). False if the cache could not be asked; the entries then
        still expire within ``ttl_s``."""
        await self._cache.flush_fields()
        return await self._cache.forget(user_key(user_id))
