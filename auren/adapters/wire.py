"""One delivery as plain rows: what the bus carries, the spool keeps and the store writes.

A :class:`DeliveryRecord` is a delivery flattened into the columns of the store's tables, with
every time already rendered as RFC 3339 text (rendered once, when the events were built). The
Kafka record value and the spool record are its JSON encoding::

    [2, provider, delivery_key, received_at, [[event columns...], ...], [[job columns...], ...]]

Version 2 added each event's provenance and fetch time (the last two event columns). Version 1
records (eleven event columns) are still read, as pushed events: a spool or a topic written by
an older bridge replays unchanged. Version 3 is version 2 plus a seventh element, the sealed raw
payload ``[received_at, [user ids], sealed]`` (``ARCHIVE_RAW_PAYLOADS``); only a record that
carries one is written as version 3, so sinks must be upgraded before the archive is turned on.

One record per delivery (not per event): a delivery is the unit a 202 acknowledges, so one
delivery report settles one webhook, and the producer and the sink handle a fifth of the
records they would at five events per webhook (measured: 9 µs against 25 µs of producer CPU
per webhook). Event ids travel inside the value; the store's unique key on ``event_id`` is
what deduplicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auren.events import Delivery, iso

VERSION = 2
VERSION_RAW = 3
READABLE = (1, 2, 3)
_V1_EVENT_COLUMNS = 11
EVENT_COLUMNS = 13

# event_id, user_id, provider, provider_user_id, metric, value, unit, start, end,
# source_record_id, received_at, provenance, fetched_at
EventRow = tuple[str, str, str, str, str, float, str, str, str | None, str | None, str, str,
                 str | None]
# job_id, provider, user_id, provider_user_id, kind, object_id, params (JSON text), received_at
JobRow = tuple[str, str, str, str, str, str | None, str, str]
# received_at (of the webhook), the user ids its items name, the sealed payload
RawRow = tuple[str, tuple[str, ...], str]


@dataclass(slots=True)
class DeliveryRecord:
    provider: str
    delivery_key: str
    received_at: str
    events: list[EventRow]
    jobs: list[JobRow]
    raw: RawRow | None = None

    @property
    def items(self) -> int:
        return len(self.events) + len(self.jobs)

    @property
    def user_id(self) -> str:
        """The user of the first item: the Kafka key (a delivery almost always has one user;
        Garmin may batch several, and the sink does not depend on per-user order)."""
        if self.events:
            return self.events[0][1]
        if self.jobs:
            return self.jobs[0][2]
        return ""


def record_of(delivery: Delivery, received_at: str | None = None) -> DeliveryRecord:
    now = received_at or iso(datetime.now(UTC))
    texts: dict[datetime, str] = {}  # usually one instant for a whole delivery

    def text(moment: datetime) -> str:
        value = texts.get(moment)
        if value is None:
            value = texts[moment] = iso(moment)
        return value

    events: list[EventRow] = [
        (e.event_id, e.user_id, e.provider, e.provider_user_id, e.metric, e.value, e.unit,
         e.start_text, e.end_text, e.source_record_id, text(e.received_at), e.provenance,
         text(e.fetched_at) if e.fetched_at is not None else None)
        for e in delivery.events
    ]
    jobs: list[JobRow] = [
        (j.job_id, j.provider, j.user_id, j.provider_user_id, j.kind, j.object_id,
         orjson.dumps(j.params).decode(), text(j.received_at))
        for j in delivery.fetch_jobs
    ]
    raw = delivery.raw
    return DeliveryRecord(delivery.provider, delivery.delivery_key, now, events, jobs,
                          None if raw is None else (raw.received_at, raw.user_ids, raw.sealed))


def encode(record: DeliveryRecord) -> bytes:
    if record.raw is not None:
        return orjson.dumps([VERSION_RAW, record.provider, record.delivery_key,
                             record.received_at, record.events, record.jobs, record.raw])
    return orjson.dumps([VERSION, record.provider, record.delivery_key, record.received_at,
                         record.events, record.jobs])


def _text(value: Any, nullable: bool = False) -> str | None:
    if isinstance(value, str):
        return value
    if nullable and value is None:
        return None
    raise ValueError("expected a string")


def decode(data: bytes) -> DeliveryRecord:
    """The record encoded by :func:`encode`.

    Raises:
        ValueError: not a record of a version this code reads (the caller decides what to do
            with a poison record; it must never crash the reader).
    """
    try:
        version, provider, key, received_at, raw_events, raw_jobs, *rest = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"not a delivery record: {exc}") from None
    if version not in READABLE:
        raise ValueError(f"unknown delivery record version {version!r}")
    if len(rest) != (1 if version == VERSION_RAW else 0):
        raise ValueError("malformed delivery record")
    raw = _raw(rest[0]) if rest else None
    width = _V1_EVENT_COLUMNS if version == 1 else EVENT_COLUMNS
    if not (isinstance(provider, str) and isinstance(key, str) and isinstance(received_at, str)
            and isinstance(raw_events, list) and isinstance(raw_jobs, list)):
        raise ValueError("malformed delivery record")
    events: list[EventRow] = []
    for row in raw_events:
        if not isinstance(row, list) or len(row) != width:
            raise ValueError("malformed event row")
        value = row[5]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError("malformed event value")
        for index in (0, 1, 2, 3, 4, 6, 7, 10):
            _text(row[index])
        _text(row[8], nullable=True)
        _text(row[9], nullable=True)
        provenance, fetched_at = ("push", None) if version == 1 else (row[11], row[12])
        _text(provenance)
        _text(fetched_at, nullable=True)
        events.append((row[0], row[1], row[2], row[3], row[4], float(value), row[6], row[7],
                       row[8], row[9], row[10], provenance, fetched_at))
    jobs: list[JobRow] = []
    for row in raw_jobs:
        if not isinstance(row, list) or len(row) != 8:
            raise ValueError("malformed job row")
        for index in (0, 1, 2, 3, 4, 6, 7):
            _text(row[index])
        _text(row[5], nullable=True)
        jobs.append((row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]))
    return DeliveryRecord(provider, key, received_at, events, jobs, raw)


def _raw(value: Any) -> RawRow:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[1], list)
            and all(isinstance(user, str) for user in value[1])):
        raise ValueError("malformed raw payload")
    return (str(_text(value[0])), tuple(value[1]), str(_text(value[2])))
