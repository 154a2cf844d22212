"""``auren reprocess``: archived raw payloads parsed again by the current normalization code.

When a provider's field turns out to have been misread, the fix ships in ``auren.providers``
and the archive (``ARCHIVE_RAW_PAYLOADS``) lets the history be corrected without asking anyone
to resend. Each archived payload is opened, parsed by the provider's current code
(``Provider.reparse``: as received, at its receipt time, without checking a signature that was
checked when it arrived) and its events go through the same durable step as a webhook's (the
store embedded; Kafka, then the sink, in the full stack) as a delivery of their own, with
provenance ``reprocess``.

What is stored, precisely (the stores' upsert of a ``reprocess`` event):

* an event whose identity (``event_id``: provider, provider user, metric, time frame, source
  record) is not stored yet is added, provenance ``reprocess``;
* an event whose identity is stored with another value or unit is corrected in place: same
  ``event_id``, the new value and unit, provenance ``reprocess`` (``received_at`` stays the
  original receipt);
* an event stored with the same value and unit is left as it is (provenance included);
* events the current code no longer reads from the payload at all (a different metric or
  time frame, hence a different identity) are not deleted: nothing links a stored event to the
  one delivery it came from, and another delivery or a fetch may have stored it too.

Idempotent: the reprocessing delivery's key is a digest of the payload's identity and of the
events it now yields (``reprocess:<sha256>``), so a second run over the same archive with the
same code is a re-delivery of every one of them and stores nothing; a later fix of the code
yields other values, another key, and corrects again. Fetch jobs a notification yields are
not queued again (what they fetched came from the provider's API, not from the payload).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from auren.adapters.base import ArchiveQuery, DurableLog, RawArchive
from auren.connections.crypto import TokenUnreadable
from auren.errors import AurenError
from auren.events import REPROCESS, Delivery
from auren.ingest.archive import PayloadSealer
from auren.providers.base import Provider

log = logging.getLogger("auren.reprocess")


@dataclass
class ReprocessReport:
    payloads: int = 0  # archived payloads read
    deliveries: int = 0  # reprocessing deliveries written through the durable step
    repeated: int = 0  # of which already written by an earlier run (nothing stored)
    events: int = 0  # events the current code reads from the payloads
    stored: int = 0  # events added or corrected (embedded); published (full stack)
    expired: int = 0  # events older than RETENTION_DAYS: not brought back
    unconfigured: dict[str, int] = field(default_factory=dict)  # provider not configured now
    failed: list[dict[str, str]] = field(default_factory=list)  # not opened or not parsed

    def as_dict(self) -> dict[str, Any]:
        return {"payloads": self.payloads, "deliveries": self.deliveries,
                "repeated": self.repeated, "events": self.events, "stored": self.stored,
                "expired": self.expired,
                "unconfigured": self.unconfigured, "failed": self.failed}


def reprocess_key(provider: str, delivery_key: str, delivery: Delivery) -> str:
    """The reprocessing delivery's key: the payload's identity and what it yields now."""
    digest = hashlib.sha256(f"{provider}|{delivery_key}".encode())
    for event in sorted(delivery.events, key=lambda e: e.event_id):
        digest.update(f"|{event.event_id}={event.value!r} {event.unit}".encode())
    return "reprocess:" + digest.hexdigest()


async def reprocess(archive: RawArchive, durable: DurableLog, providers: Mapping[str, Provider],
                    sealer: PayloadSealer, *, since: datetime, provider: str | None = None,
                    user_id: str | None = None, not_before: datetime | None = None,
                    page: int = 100) -> ReprocessReport:
    """Re-parse the payloads archived since ``since`` (of one provider, naming one user) and
    write what they yield through ``durable``; see the module's documentation. Events that
    start before ``not_before`` (the retention cutoff) are left out: reprocessing never
    brings back what retention removed."""
    report = ReprocessReport()
    after = 0
    while True:
        rows = await archive.archived(ArchiveQuery(since=since, provider=provider,
                                                   user_id=user_id, after=after, limit=page))
        if not rows:
            return report
        after = rows[-1][0]
        batch: list[Delivery] = []
        for _, raw in rows:
            report.payloads += 1
            parser = providers.get(raw.provider)
            if parser is None:
                report.unconfigured[raw.provider] = report.unconfigured.get(raw.provider, 0) + 1
                continue
            try:
                opened = sealer.open(raw)
                parsed = parser.reparse(opened.request, opened.received_at, opened.user_ids)
            except (TokenUnreadable, ValueError, AurenError) as exc:
                report.failed.append({"provider": raw.provider,
                                      "delivery_key": raw.delivery_key,
                                      "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})
                continue
            events = [e for e in parsed.events if user_id is None or e.user_id == user_id]
            if not_before is not None:
                kept = [e for e in events if e.start >= not_before]
                report.expired += len(events) - len(kept)
                events = kept
            for event in events:
                event.provenance = REPROCESS
                event.fetched_at = None
            if not events:
                continue
            delivery = Delivery(provider=raw.provider, delivery_key="", events=events)
            delivery.delivery_key = reprocess_key(raw.provider, raw.delivery_key, delivery)
            batch.append(delivery)
            report.events += len(events)
        if batch:
            results = await durable.write_batch(batch)
            report.deliveries += len(batch)
            for result in results:
                report.repeated += result.duplicate_delivery
                report.stored += result.accepted
        log.info("reprocess progress", extra={"count": report.payloads,
                                              "detail": f"stored {report.stored}"})
