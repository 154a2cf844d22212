"""Retention on a schedule: events older than ``RETENTION_DAYS``, archived raw payloads older
than ``RAW_RETENTION_DAYS``, every ``RETENTION_INTERVAL_S``.

It runs in the process that writes the store, so that it is one place per deployment and sits
beside the writes it competes with:

* full stack (Kafka configured): ``auren sink``. PostgreSQL drops whole monthly partitions (or
  TimescaleDB chunks) that end before the cutoff and deletes in batches only within the
  partition holding the cutoff and the default partition; several sinks may run it at once
  (a dropped partition is dropped by the first, under the lock partitions are made with; the
  batched deletes are idempotent);
* otherwise (embedded, or PostgreSQL without Kafka): the bridge. SQLite deletes in bounded
  transactions of ``RETENTION_BATCH_ROWS`` rows looked at, between group commits. With several
  bridge workers on one data directory, the one holding ``<AUREN_DATA_DIR>/retention.lock``
  runs it.

The first run is at start, then one every interval. What went is counted in
``auren_retention_deleted_total{kind}`` (``events``, ``raw_payloads``), each run in
``auren_retention_runs_total{outcome}``, and the last success in
``auren_retention_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from auren.adapters.base import RawArchive
from auren.errors import AurenError
from auren.settings import Settings

log = logging.getLogger("auren.retention")

LOCK_FILE = "retention.lock"
KINDS = ("events", "raw_payloads")


class Retention(Collector):
    """Runs retention against one store (``RawArchive``) and exports what it did."""

    def __init__(self, settings: Settings, store: RawArchive, *,
                 lock_path: Path | None = None) -> None:
        # Read once, at start-up: the bounds of every run.
        self._days = settings.retention_days
        self._raw_days = settings.raw_retention_days
        self._interval_s = settings.retention_interval_s
        self._batch_rows = settings.retention_batch_rows
        self._store = store
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self.deleted = dict.fromkeys(KINDS, 0)
        self.runs = {"ok": 0, "failed": 0}
        self.last_success: float | None = None

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime]:
        """Events before the first (None: kept) and raw payloads received before the second
        are removed. The archive always expires, even once it is turned off."""
        return (now - timedelta(days=self._days) if self._days else None,
                now - timedelta(days=self._raw_days))

    async def run_once(self, now: datetime | None = None,
                       stop: asyncio.Event | None = None) -> dict[str, int]:
        """One pass; what was deleted per kind (a pass ends early, between two steps, once
        ``stop`` is set). Raises ``AurenError`` (StoreUnavailable)."""
        events_cutoff, raw_cutoff = self.cutoffs(now or datetime.now(UTC))
        batch = self._batch_rows
        done = dict.fromkeys(KINDS, 0)
        try:
            if events_cutoff is not None:
                done["events"] = await self._store.delete_events_before(
                    events_cutoff, batch_rows=batch, stop=stop)
            done["raw_payloads"] = await self._store.delete_archive_before(
                raw_cutoff, batch_rows=batch, stop=stop)
        except BaseException:
            self.runs["failed"] += 1
            raise
        finally:
            for kind, count in done.items():
                self.deleted[kind] += count
        self.runs["ok"] += 1
        self.last_success = time.time()
        if any(done.values()):
            log.info("retention removed old data",
                     extra={"count": sum(done.values()),
                            "detail": ", ".join(f"{k} {v}" for k, v in done.items())})
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Every ``RETENTION_INTERVAL_S`` until ``stop``; a failed run is logged and counted,
        and the next one tries again."""
        try:
            while not stop.is_set():
                if self._holds_lock():
                    try:
                        await self.run_once(stop=stop)
                    except AurenError as exc:
                        log.warning("retention run failed; next run retries",
                                    extra={"error": type(exc).__name__,
                                           "detail": exc.detail})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the file releases the flock
                self._lock_fd = None

    def _holds_lock(self) -> bool:
        """Whether this process is the one that runs retention for its data directory."""
        if self._lock_path is None or self._lock_fd is not None:
            return True
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        deleted = CounterMetricFamily("auren_retention_deleted",
                                      "Rows removed by retention, by kind (events older than "
                                      "RETENTION_DAYS, raw payloads older than "
                                      "RAW_RETENTION_DAYS)", labels=["kind"])
        for kind, count in self.deleted.items():
            deleted.add_metric([kind], count)
        yield deleted
        runs = CounterMetricFamily("auren_retention_runs", "Retention runs, by outcome",
                                   labels=["outcome"])
        for outcome, count in self.runs.items():
            runs.add_metric([outcome], count)
        yield runs
        last = GaugeMetricFamily("auren_retention_last_success_timestamp_seconds",
                                 "When retention last completed (Unix time)")
        if self.last_success is not None:
            last.add_metric([], self.last_success)
        yield last


def runs_in_bridge(settings: Settings) -> bool:
    """Retention runs in the bridge unless the sink writes the store (Kafka configured)."""
    return not settings.kafka_bootstrap_servers
