"""``auren sink``: Kafka into PostgreSQL, at least once in, exactly once in effect.

A consumer group reads the events and notifications topics in batches; each batch is one
PostgreSQL transaction (``ON CONFLICT DO NOTHING`` on every unique key), and only after that
transaction committed are the batch's offsets stored for librdkafka's auto-commit
(``enable.auto.offset.store=false``, reliability K7). A crash between the database commit and
the offset commit replays the batch on restart; the replay inserts nothing. Kafka transactions
are not used: their exactly-once ends at the Kafka log (K8), the unique keys do not.

Failure handling:

* PostgreSQL unavailable: the batch is retried with backoff until it commits (the breaker
  around PostgreSQL makes the waits cheap); nothing is skipped and no offset moves.
* A record that cannot be decoded, or whose rows PostgreSQL refuses as invalid data: logged
  with its topic, partition and offset, counted, and skipped, so one poison record cannot stop
  the stream. (The bridge only publishes records it built itself; this is defence.)
* SIGTERM/SIGINT: the batch in hand is finished and its offsets committed, then the consumer
  leaves the group (its partitions move to the other sinks at once) and the pool closes.

Every call on the consumer runs on one dedicated thread (rebalance callbacks included), so the
event loop only ever waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from auren.adapters.breaker import CircuitBreaker
from auren.adapters.kafka import client_security, ensure_topics
from auren.adapters.postgres import PostgresStore
from auren.adapters.wire import DeliveryRecord, decode
from auren.connections.crypto import TokenCipher
from auren.erasure.ledger import LedgerFeed
from auren.errors import ClientError, StoreUnavailable
from auren.services.dataplane import postgres_store
from auren.services.erasures import erasure_store, new_ledger
from auren.services.retention import Retention
from auren.settings import Settings

T = TypeVar("T")
log = logging.getLogger("auren.services.sink")

_PARTITION_MAINTENANCE_S = 6 * 3600
_SUMMARY_EVERY_S = 30.0


def consumer_config(settings: Settings, *, client_id: str = "auren-sink") -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": client_id,
        "group.id": settings.kafka_sink_group,
        # At least once: offsets are stored by us after the database commit, committed by
        # librdkafka in the background and on close.
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # A PostgreSQL outage keeps one batch retrying without polling; after this the member
        # leaves the group and rejoins from the committed offsets (duplicates are absorbed).
        "max.poll.interval.ms": 600_000,
        # Let the broker gather up to 64 KiB (or 100 ms) per fetch: fetching every record as
        # it arrives cost the broker about 2.7x the CPU at 1,700 records/s (measured).
        "fetch.min.bytes": 65_536,
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10_000,
        "socket.connection.setup.timeout.ms": 5_000,
        "reconnect.backoff.max.ms": 1_000,
        "statistics.interval.ms": 5_000,
        **client_security(settings),
    }


@dataclass
class SinkStats:
    batches: int = 0
    records: int = 0
    events: int = 0
    jobs: int = 0
    skipped: int = 0  # poison records (undecodable or refused as invalid data)
    erased: int = 0  # rows of erased people screened out (never written)
    retries: int = 0  # failed database attempts of a batch
    lag: int | None = None  # records behind the high watermark, from librdkafka's stats
    last_batch_at: float = field(default_factory=time.monotonic)


class Sink:
    def __init__(self, settings: Settings, store: PostgresStore, *,
                 consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
                 feed: LedgerFeed | None = None) -> None:
        self._settings = settings
        self._store = store
        # The erasure ledger: re-read before every batch is written, so nothing of a person
        # erased before the batch was read reaches PostgreSQL (docs/DESIGN.md, "Erasure").
        self._feed = feed
        self._topics = [settings.kafka_events_topic, settings.kafka_notifications_topic]
        config = consumer_config(settings)
        config["stats_cb"] = self._on_stats
        config["error_cb"] = self._on_error
        config["logger"] = log
        self._config = config
        self._consumer_factory = consumer_factory
        self._consumer: Consumer | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sink-consumer")
        self.stats = SinkStats()
        self._fatal: str | None = None
        # RETENTION_DAYS / RAW_RETENTION_DAYS: the sink is where retention runs in the full
        # stack (auren.services.retention); its counters are on the sink's /metrics.
        self.retention = Retention(settings, store)

    # --- consumer thread ------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    def _on_stats(self, text: str) -> None:
        try:
            stats = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        lag = 0
        for topic in stats.get("topics", {}).values():
            for partition in topic.get("partitions", {}).values():
                if partition.get("partition", -1) >= 0 and partition.get("consumer_lag", -1) > 0:
                    lag += partition["consumer_lag"]
        self.stats.lag = lag

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.name()
            log.error("kafka consumer fatal error", extra={"error": err.name()})

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        # Topics first (the bridge creates them too): subscribing to a missing topic would
        # leave this sink idle until the next metadata refresh.
        s = self._settings
        await asyncio.to_thread(ensure_topics, str(s.kafka_bootstrap_servers), self._topics,
                                partitions=s.kafka_partitions,
                                replication=s.kafka_replication_factor,
                                min_insync_replicas=s.kafka_min_insync_replicas,
                                timeout_s=30.0, security=client_security(s),
                                retention_hours=s.kafka_retention_hours)
        self._consumer = await self._call(self._consumer_factory, self._config)
        await self._call(self._consumer.subscribe, self._topics)
        log.info("sink subscribed", extra={"detail": ", ".join(self._topics)})

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            # Commits the stored offsets and leaves the group, so partitions move at once.
            await self._call(consumer.close)
        self._thread.shutdown(wait=True)

    async def run(self, stop: asyncio.Event, *, idle_exit_s: float | None = None) -> SinkStats:
        """Consume until ``stop`` is set (or, with ``idle_exit_s``, until no record came for
        that long); always finishes the batch in hand first."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("open() the sink first")
        maintained = summarized = time.monotonic()
        max_records = self._settings.sink_batch_records
        idle_since = time.monotonic()
        while not stop.is_set():
            if self._fatal is not None:
                raise StoreUnavailable(f"Kafka consumer failed: {self._fatal}")
            messages = await self._call(consumer.consume, max_records, 0.2)
            if messages:
                await self._process(consumer, messages, stop)
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            now = time.monotonic()
            if now - maintained >= _PARTITION_MAINTENANCE_S:
                maintained = now
                with contextlib.suppress(StoreUnavailable):
                    await self._store.ensure_partitions()
            if now - summarized >= _SUMMARY_EVERY_S:
                summarized = now
                log.info("sink progress", extra={
                    "count": self.stats.records,
                    "detail": f"events {self.stats.events}, jobs {self.stats.jobs}, "
                              f"skipped {self.stats.skipped}, erased {self.stats.erased}, "
                              f"retries {self.stats.retries}, "
                              f"lag {self.stats.lag}"})
        return self.stats

    # --- one batch ------------------------------------------------------------------------

    async def _process(self, consumer: Consumer, messages: Sequence[Message],
                       stop: asyncio.Event) -> None:
        records: list[DeliveryRecord] = []
        positions: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise StoreUnavailable(f"Kafka consumer failed: {error.name()}")
                log.warning("kafka consume error", extra={"error": error.name()})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            positions[(topic, partition)] = max(positions.get((topic, partition), -1), offset)
            try:
                records.append(decode(message.value() or b""))
            except ValueError as exc:
                self._skip(topic, partition, offset, str(exc))
        if records and not await self._write(records, stop):
            return  # shutting down with the batch uncommitted: its offsets stay where they are
        # Only now, with the rows committed, may the offsets advance (the next to read).
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in positions.items()]
        if offsets:
            try:
                await self._call(consumer.store_offsets, offsets=offsets)
            except Exception as exc:  # noqa: BLE001 - a revoked partition: the next owner re-reads
                log.info("offsets not stored (partition revoked?)",
                         extra={"error": type(exc).__name__})
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.events += sum(len(r.events) for r in records)
        self.stats.jobs += sum(len(r.jobs) for r in records)
        self.stats.last_batch_at = time.monotonic()
        log.debug("sink batch committed", extra={"count": len(records), "batch": len(messages)})

    async def _write(self, records: list[DeliveryRecord], stop: asyncio.Event) -> bool:
        """Commit the batch, retrying while PostgreSQL is unavailable. False: stopped before
        it committed (the records will be read again, by this sink or another)."""
        delay = 0.2
        while True:
            try:
                records = await self._screen(records)
                await self._store.write_records(records, results=False)
                return True
            except ClientError:
                # Some record's rows are refused as data: find it, keep the others.
                return await self._write_one_by_one(records, stop)
            except StoreUnavailable as exc:
                if not await self._backoff(exc, delay, stop, len(records)):
                    return False
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                # Not a known failure: keep the stream (nothing is skipped, no offset moves)
                # and say so loudly; exiting would only stop the sink until a restart.
                log.exception("sink write crashed; retrying the batch")
                error = StoreUnavailable(f"unexpected {type(exc).__name__}")
                if not await self._backoff(error, delay, stop, len(records)):
                    return False
                delay = min(delay * 2, 5.0)

    async def _screen(self, records: list[DeliveryRecord]) -> list[DeliveryRecord]:
        """The records without the rows of people erased by now (the ledger read first)."""
        if self._feed is None:
            return records
        await self._feed.refresh()
        screened = []
        for record in records:
            kept, gone = self._feed.ledger.screen_record(record)
            self.stats.erased += gone
            screened.append(kept)
        return screened

    async def _write_one_by_one(self, records: list[DeliveryRecord],
                                stop: asyncio.Event) -> bool:
        for record in records:
            delay = 0.2
            while True:
                try:
                    await self._store.write_records([record], results=False)
                    break
                except ClientError as exc:
                    self._skip("?", -1, -1,
                               f"{record.provider}:{record.delivery_key}: {exc.detail}")
                    break
                except StoreUnavailable as exc:
                    if not await self._backoff(exc, delay, stop, 1):
                        return False
                    delay = min(delay * 2, 5.0)
        return True

    async def _backoff(self, exc: StoreUnavailable, delay: float, stop: asyncio.Event,
                       size: int) -> bool:
        """Wait before the next attempt; False when asked to stop meanwhile."""
        self.stats.retries += 1
        log.warning("sink write failed; retrying the batch",
                    extra={"error": type(exc).__name__, "batch": size, "detail": exc.detail})
        breaker = self._store.breaker
        if breaker is not None and breaker.state == "open":
            delay = max(delay, float(breaker.retry_after_s()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(delay, 5.0))
        return not stop.is_set()

    def _skip(self, topic: str, partition: int, offset: int, why: str) -> None:
        self.stats.skipped += 1
        log.error("sink skipped a poison record",
                  extra={"detail": f"{topic}[{partition}]@{offset}: {why[:200]}"})


async def run_sink(settings: Settings, *, idle_exit_s: float | None = None,
                   stop: asyncio.Event | None = None) -> SinkStats:
    """Open the store and the consumer, run until SIGTERM/SIGINT (or idle), close both."""
    stop = stop or asyncio.Event()
    breaker = CircuitBreaker.from_settings("postgres", settings)
    store = postgres_store(settings, application_name="auren-sink", breaker=breaker)
    await store.open()
    erasures = erasure_store(settings, "auren-sink-erasure")
    try:
        await erasures.open()
    except BaseException:
        await store.close()
        raise
    feed = LedgerFeed(erasures, new_ledger(TokenCipher.from_settings(settings)))
    sink = Sink(settings, store, feed=feed)
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await sink.open()
        log.info("sink started", extra={"detail": settings.kafka_sink_group})
        # /metrics and /health on SINK_METRICS_PORT when set (auren.services.sink_http).
        from auren.services.sink_http import serving

        async with serving(sink, settings, breaker) as port:
            if port is not None:
                log.info("sink metrics served", extra={"port": port})
            expiring = asyncio.create_task(sink.retention.run(stop), name="retention")
            try:
                return await sink.run(stop, idle_exit_s=idle_exit_s)
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiring
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await sink.close()
        await erasures.close()
        await store.close()
        log.info("sink stopped", extra={"count": sink.stats.records,
                                        "detail": f"erased {sink.stats.erased}"})
