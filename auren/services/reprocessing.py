"""``auren reprocess`` as a process: the data plane a fetcher has (the store that keeps the
archive, the durable step, the token key), the providers as configured, one pass over the
archive (``auren.ingest.reprocess``), and a clean close.

The events go through the same durable step as webhooks: embedded (and PostgreSQL without
Kafka) the store itself, so the report's ``stored`` counts events added or corrected; with
Kafka a publish (spooled under ``<AUREN_DATA_DIR>/spool/`` when Kafka does not answer, and
replayed by a bridge sharing that directory), which the sink applies, so ``stored`` counts the
events published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auren.ingest.archive import PayloadSealer
from auren.ingest.reprocess import ReprocessReport, reprocess
from auren.providers import build_providers
from auren.services.dataplane import build_dataplane
from auren.settings import Settings


async def run_reprocess(settings: Settings, *, since: datetime, provider: str | None = None,
                        user_id: str | None = None) -> tuple[ReprocessReport, int]:
    """One pass; the report and how many deliveries were left in the spool (full stack)."""
    not_before = (datetime.now(UTC) - timedelta(days=settings.retention_days)
                  if settings.retention_days else None)
    plane = build_dataplane(settings, service="fetcher")
    if plane.cipher is None or plane.archive is None:  # pragma: no cover - always built
        raise ValueError("the archive needs the store and AUREN_ENCRYPTION_KEY")
    await plane.open()
    try:
        report = await reprocess(plane.archive, plane.durable, build_providers(settings),
                                 PayloadSealer(plane.cipher), since=since, provider=provider,
                                 user_id=user_id, not_before=not_before)
        spooled = plane.bus_log.spooled if plane.bus_log is not None else 0
    finally:
        await plane.close(settings.shutdown_timeout_s)
    return report, spooled
