"""The full stack's durable step: Kafka first, the fsynced spool when Kafka cannot.

``BusLog.write_batch`` is what the group committer calls with Kafka configured. A batch is
published and the call returns when every delivery report arrived (acks=all). Records Kafka
did not acknowledge within ``BUS_TIMEOUT_S`` (or refused) are appended to the spool and
fsynced; only then does the committer answer 2xx. A publish still unacknowledged after
``KAFKA_SLOW_CALL_S`` is reported to the breaker as slow right then, weighted by its
deliveries; if that opens the breaker, the batch stops waiting and goes to the spool at once.
Every publish is a call in progress for the breaker's stall rule (``begin``/``end``): a broker
that stopped answering (the oldest publish and the last acknowledgement both older than
``KAFKA_SLOW_CALL_S``) opens the breaker at once, whatever the failure rate, and a publish
still waiting when the breaker opens, for whatever reason, stops waiting then (its batch goes
to the spool; the batches queued behind it find the breaker open and go there too).
Both bounds count a delivery's whole wait: a batch queued behind a hung one gets what is left
of ``BUS_TIMEOUT_S`` (nothing left: straight to the spool, counted slow), so no webhook waits
on Kafka longer than ``BUS_TIMEOUT_S`` plus an fsync, even before the breaker opens.
While the bus breaker is open, batches skip Kafka and go straight to the spool, so a dead
broker costs an fsync per batch, not a timeout per webhook. With the spool full (or failed)
the batch raises: 503 + ``Retry-After``, the provider retries, nothing is dropped.

A replayer task publishes the spool's records in the order they were written, whenever the
breaker lets calls through: its publishes are the half-open probes that close the breaker
after an outage, even when no webhook arrives. A spooled record is forgotten only once Kafka
acknowledged it. Records that were spooled after a timeout may also be delivered by
librdkafka's own retries; the second copy is absorbed by the sink's unique keys.

The spool holds what arrived while Kafka was away, and new webhooks do not wait behind it:
order across the two paths is not kept (the sink does not depend on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auren.adapters.base import EventBus, WriteResult
from auren.adapters.breaker import CLOSED, OPEN, CircuitBreaker
from auren.adapters.wire import DeliveryRecord, decode, encode, record_of
from auren.events import Delivery
from auren.ingest.spool import Spool, claim_slot

log = logging.getLogger("auren.bus")

# A batch that starts within this of the previous one's end was queued behind it.
_BACK_TO_BACK_S = 0.01


class BusLog:
    """``DurableLog`` over an ``EventBus``: the bus first, the fsynced spool when it cannot."""

    def __init__(self, bus: EventBus, spool: Spool | Path, breaker: CircuitBreaker, *,
                 timeout_s: float = 2.0, replay_batch: int = 500,
                 max_spool_bytes: int = 256 * 1_048_576) -> None:
        """``spool``: a spool, or the directory under which this process claims a spool slot
        of its own when it opens (one per bridge worker; see ``claim_slot``)."""
        self.bus = bus
        self._spool_base = spool if isinstance(spool, Path) else None
        self._max_spool_bytes = max_spool_bytes
        self.spool = spool if isinstance(spool, Spool) else Spool(Path("/nonexistent"))
        self.breaker = breaker
        self._timeout_s = timeout_s
        self._replay_batch = replay_batch
        self._wakeup = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        self.spooled = 0  # records written to the spool since start
        self.replayed = 0  # records published from the spool since start
        self.skipped = 0  # spool records that could not be decoded
        self._last_start = self._last_end = 0.0  # of the previous write_batch (monotonic)

    async def open(self, *, connect_timeout_s: float = 30.0) -> None:
        if self._spool_base is not None:
            directory, lock_fd = claim_slot(self._spool_base)
            self.spool = Spool(directory, max_bytes=self._max_spool_bytes, lock_fd=lock_fd)
        await self.spool.open()
        try:
            await self.bus.open(timeout_s=connect_timeout_s)
        except BaseException:
            await self.spool.close()
            raise
        self._replayer = asyncio.create_task(self._replay_loop(), name="spool-replayer")
        if not self.spool.empty:
            self._wakeup.set()

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None
        try:
            await self.bus.close(timeout_s)
        finally:
            await self.spool.close()

    # --- the durable step -----------------------------------------------------------------

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        records = [record_of(d) for d in deliveries]
        pending: list[DeliveryRecord] = records
        started = time.monotonic()
        # The committer hands over one batch at a time. Started right after the previous one,
        # this batch's deliveries may have waited since that one began: BUS_TIMEOUT_S bounds a
        # delivery's whole wait on Kafka, not each batch's, and slowness is judged on it too.
        waited = started - self._last_start if started - self._last_end < _BACK_TO_BACK_S \
            else 0.0
        self._last_start = started
        try:
            if waited >= self._timeout_s:
                # Already waited out behind a hung publish: straight to the spool.
                if self.breaker.state == CLOSED and self.breaker.is_slow(waited):
                    self.breaker.slow(waited, calls=len(records))
            elif self.breaker.allow():
                # Each delivery is a call in the breaker's rate (the batch is how they travel).
                errors, reported = await self._publish(records, self._timeout_s - waited,
                                                       len(records), waited)
                failed = [e for e in errors if e is not None]
                if failed:
                    if not reported:
                        self.breaker.failure(failed[0], calls=len(records))
                    pending = [r for r, e in zip(records, errors, strict=True) if e is not None]
                else:
                    if not reported:
                        self.breaker.success(calls=len(records))
                    pending = []
            if pending:
                # Raises SpoolFull / StoreUnavailable: the committer fails the whole batch
                # (503), including deliveries that Kafka did take; their re-sends are absorbed
                # downstream.
                await self.spool.append([encode(r) for r in pending])
                self.spooled += len(pending)
                self._wakeup.set()
        finally:
            self._last_end = time.monotonic()
        return [WriteResult(r.items, 0, False) for r in records]

    async def _publish(self, records: Sequence[DeliveryRecord], timeout_s: float, calls: int,
                       waited_s: float = 0.0) -> tuple[list[BaseException | None], bool]:
        """Publish within ``timeout_s``; the errors per record, and whether the breaker was
        already told (the records were slow, ``waited_s`` before the publish included:
        reported while they waited, and if that opened the breaker, the wait ended there and
        the unacknowledged records count as failed). The wait also ends when the breaker opens
        meanwhile (its stall rule, or another caller's failures)."""
        reported = False
        breaker = self.breaker

        def on_slow(publish_s: float) -> bool:
            nonlocal reported
            reported = True
            breaker.slow(waited_s + publish_s, calls=calls, running=True)
            return breaker.state == OPEN

        slow_s = breaker.slow_call_s
        abandon = breaker.opened()
        token = breaker.begin()
        started = time.monotonic()
        errors: list[BaseException | None] = []
        try:
            errors = await self.bus.publish(
                records, timeout_s, on_slow=on_slow, abandon=abandon,
                slow_s=None if slow_s is None else max(0.0, slow_s - waited_s))
        except Exception as exc:  # any surprise means "not acknowledged"
            log.exception("kafka publish crashed")
            errors = [exc] * len(records)
        finally:
            # A slow publish that was acknowledged in the end: the broker answers (the stall
            # rule must hear of it even though the breaker was told already).
            breaker.end(token, answered=reported and bool(errors) and None in errors)
        age = waited_s + time.monotonic() - started
        if not reported and abandon.done() and None not in errors and breaker.is_slow(age):
            # Abandoned because the breaker opened (its watchdog saw the stall a moment before
            # on_slow would have): the report on_slow would have made.
            reported = True
            breaker.slow(age, calls=calls)
        return errors, reported

    # --- replay ---------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        delay = 0.2
        while True:
            if self.spool.empty:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            if not self.breaker.allow():
                await self._sleep(self.breaker.retry_after_s())
                continue
            try:
                replayed = await self._replay_once()
            except Exception as exc:  # the loop must outlive any one failure
                log.exception("spool replay crashed")
                self.breaker.failure(exc)
                replayed = False
            if replayed:
                delay = 0.2
            else:
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _replay_once(self) -> bool:
        payloads, upto = self.spool.read(self._replay_batch)
        records = []
        for payload in payloads:
            try:
                records.append(decode(payload))
            except ValueError:
                self.skipped += 1
                log.error("undecodable spool record skipped")
        # One call for the breaker, however many records: it is the half-open probe, and a
        # big replay batch must not outweigh the webhooks' own calls.
        errors, reported = await self._publish(records, max(self._timeout_s, 5.0), 1)
        failed = [e for e in errors if e is not None]
        if failed:
            if not reported:
                self.breaker.failure(failed[0])
            log.warning("spool replay not acknowledged; will retry",
                        extra={"count": len(failed), "error": type(failed[0]).__name__})
            return False
        if not reported:
            self.breaker.success()
        await self.spool.ack(upto)
        self.replayed += len(records)
        log.info("spool records replayed", extra={"count": len(records),
                                                   "detail": f"{self.spool.pending_records} left"})
        return True

    async def _sleep(self, seconds: float) -> None:
        # A new spooled record does not cut a back-off short; only time does.
        await asyncio.sleep(seconds)

    # --- health ---------------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        return {"pendingRecords": self.spool.pending_records,
                "pendingBytes": self.spool.pending_bytes, "spooled": self.spooled,
                "replayed": self.replayed, "corrupt": self.spool.corrupt,
                "failed": self.spool.failed}
