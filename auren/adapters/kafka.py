"""The event bus on Apache Kafka: an idempotent producer whose every write waits for its
delivery report.

**Configuration is asserted, not assumed** (reliability K1). librdkafka's own default for
``enable.idempotence`` is false, so it is set explicitly together with ``acks=all`` and at most
5 requests in flight; with idempotence explicitly on, librdkafka refuses to create a producer
whose other settings conflict with it. At start-up :meth:`KafkaBus.open` then waits until the
broker has actually assigned the producer an id (``eos.idemp_state == "Assigned"`` in
librdkafka's statistics): idempotence in effect, not merely requested. ``message.timeout.ms``
is finite (librdkafka's default is 5 minutes).

**Topics** are created when missing with the configured partitions and replication, plus
``unclean.leader.election.enable=false`` and, when configured, ``min.insync.replicas``
(reliability K3: production runs replication 3 and min ISR 2). Events go to the events topic,
deliveries of fetch jobs only (thin notifications) to the notifications topic. Every record is
one delivery (see ``auren.adapters.wire``), keyed by user id, with the delivery's id in a header.

**Waiting without blocking the loop.** ``produce`` only enqueues; a poller *task* serves
librdkafka's delivery reports with ``poll(0)`` (never blocking) every millisecond while a
publish waits, every 100 ms otherwise. It runs on the loop's own thread on purpose: a poller
thread needs the GIL to run the report callbacks, and a busy event loop hands the GIL over only
every switch interval (5 ms), once per wake-up, which measured as the largest part of a
publish's latency under load. A publish that does not settle within its timeout reports the
missing records as failed: the caller then spools them, and if librdkafka does deliver them
later, the copy is absorbed by the sink's unique key. A publish still waiting after its slow
threshold tells the caller so at once (``on_slow``), which may end the wait early: a hung
broker is seen as one while it hangs, not when the timeout finally fires. The wait also ends as
soon as ``abandon`` completes (the caller's breaker opened, e.g. on its stall rule). Every
delivery error is treated the same way, whether librdkafka says the record was not persisted or
possibly persisted (K2): it is sent again, and duplicates are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from auren.adapters.base import PublishFailed, PublishTimeout
from auren.adapters.wire import DeliveryRecord, encode
from auren.errors import StoreUnavailable

log = logging.getLogger("auren.bus")

# The producer settings AUREN relies on, checked against the idempotence requirements below.
MAX_IN_FLIGHT = 5


def producer_config(bootstrap: str, *, message_timeout_s: float, client_id: str,
                    stats_interval_ms: int = 1000) -> dict[str, Any]:
    """The producer's configuration; :func:`check_producer_config` asserts its guarantees."""
    timeout_ms = int(message_timeout_s * 1000)
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": MAX_IN_FLIGHT,
        "message.timeout.ms": timeout_ms,
        # The bridge already batches (group commit): linger only adds latency.
        "linger.ms": 2,
        "request.timeout.ms": min(timeout_ms, 10_000),
        "socket.timeout.ms": min(timeout_ms, 10_000),
        "socket.connection.setup.timeout.ms": 5_000,
        "reconnect.backoff.max.ms": 1_000,
        "compression.type": "lz4",
        "statistics.interval.ms": stats_interval_ms,
        # Bounded memory: past this, produce() refuses and the caller spools.
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
    }


def client_security(settings: Any) -> dict[str, Any]:
    """librdkafka's security properties from the settings, for every Kafka client AUREN makes
    (producer, sink consumer, admin, the toolkit's probes); empty for plain TCP.

    TLS (``SSL``, ``SASL_SSL``) verifies the brokers' certificates and names against
    ``KAFKA_SSL_CA_FILE`` (the system's CAs when unset); SASL authenticates with
    ``KAFKA_SASL_MECHANISM`` and the username and password.
    """
    protocol: str = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    conf: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.endswith("SSL"):
        conf["enable.ssl.certificate.verification"] = True
        conf["ssl.endpoint.identification.algorithm"] = "https"
        if settings.kafka_ssl_ca_file is not None:
            conf["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
    if protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return conf


def check_producer_config(config: dict[str, Any]) -> None:
    """Raise if the configuration does not give idempotent, fully acknowledged writes."""
    problems = []
    if config.get("enable.idempotence") is not True:
        problems.append("enable.idempotence must be true")
    if str(config.get("acks")) not in ("all", "-1"):
        problems.append("acks must be all")
    if not 1 <= int(config.get("max.in.flight.requests.per.connection", 1_000_000)) <= 5:
        problems.append("max.in.flight.requests.per.connection must be 1..5")
    if not 0 < int(config.get("message.timeout.ms", 0)) <= 3_600_000:
        problems.append("message.timeout.ms must be finite")
    if problems:
        raise ValueError("unsafe producer configuration: " + "; ".join(problems))


_PENDING = PublishTimeout("no delivery report yet")


class _Publish:
    """The delivery reports of one publish call, filled in by the poller thread."""

    __slots__ = ("errors", "future", "lock", "loop", "remaining", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.future: asyncio.Future[None] = loop.create_future()
        # _PENDING until the record's report arrives: then None (durable) or its error.
        self.errors: list[BaseException | None] = [_PENDING] * size
        self.remaining = size
        # Reports normally arrive on the loop's thread (the poller task), but flush() at close
        # runs on a worker thread: count down under a lock either way.
        self.lock = threading.Lock()

    def report(self, index: int, err: KafkaError | None, _msg: Any) -> None:
        self._settle_one(index, None if err is None else PublishFailed(
            f"Kafka: {err.name()}", retry_after_s=2))

    def refuse(self, index: int, error: BaseException) -> None:
        # produce() itself refused: no report will come for this record.
        self._settle_one(index, error)

    def _settle_one(self, index: int, error: BaseException | None) -> None:
        with self.lock:
            self.errors[index] = error
            self.remaining -= 1
            settled = self.remaining == 0
        if settled:
            if threading.get_ident() == self.thread:
                self._settle()
            else:
                self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaBus:
    """Publishes delivery records to Kafka and reports, per record, whether it is durable."""

    def __init__(self, bootstrap: str, *, events_topic: str = "biometric-events",
                 notifications_topic: str = "biometric-notifications", partitions: int = 6,
                 replication_factor: int = 1, min_insync_replicas: int | None = None,
                 message_timeout_s: float = 30.0, client_id: str = "auren-bridge",
                 security: dict[str, Any] | None = None,
                 retention_hours: int | None = None) -> None:
        self.bootstrap = bootstrap
        self._retention_hours = retention_hours
        self.security = dict(security or {})
        self.events_topic = events_topic
        self.notifications_topic = notifications_topic
        self._partitions = partitions
        self._replication = replication_factor
        self._min_isr = min_insync_replicas
        self.config = producer_config(bootstrap, message_timeout_s=message_timeout_s,
                                      client_id=client_id)
        self.config.update(self.security)
        self.config["stats_cb"] = self._on_stats
        self.config["error_cb"] = self._on_error
        self.config["logger"] = log
        self._producer: Producer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._waiting = 0  # publishes waiting for their reports
        self._kick = asyncio.Event()
        self.stats: dict[str, Any] = {}
        self.fatal: str | None = None
        self.failures: Counter[str] = Counter()  # delivery failures by error name (K10)
        self.published = 0

    @classmethod
    def from_settings(cls, settings: Any, *, client_id: str = "auren-bridge") -> KafkaBus:
        return cls(settings.kafka_bootstrap_servers, events_topic=settings.kafka_events_topic,
                   notifications_topic=settings.kafka_notifications_topic,
                   partitions=settings.kafka_partitions,
                   replication_factor=settings.kafka_replication_factor,
                   min_insync_replicas=settings.kafka_min_insync_replicas,
                   message_timeout_s=settings.kafka_message_timeout_s, client_id=client_id,
                   security=client_security(settings),
                   retention_hours=settings.kafka_retention_hours)

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self, timeout_s: float = 30.0) -> None:
        """Create the topics if missing, start the producer and prove idempotence is in effect.

        Raises:
            StoreUnavailable: the broker was not reachable, or did not assign a producer id,
                within ``timeout_s``.
        """
        check_producer_config(self.config)
        deadline = time.monotonic() + timeout_s
        await asyncio.to_thread(ensure_topics, self.bootstrap,
                                [self.events_topic, self.notifications_topic],
                                partitions=self._partitions, replication=self._replication,
                                min_insync_replicas=self._min_isr, timeout_s=timeout_s,
                                security=self.security,
                                retention_hours=self._retention_hours)
        self._producer = Producer(self.config)
        self._start_poller()
        while self.stats.get("eos", {}).get("idemp_state") != "Assigned":
            if time.monotonic() > deadline:
                await self.close(1.0)
                raise StoreUnavailable("Kafka did not assign an idempotent producer id in "
                                       f"{timeout_s:g} s", retry_after_s=5)
            await asyncio.sleep(0.05)
        log.info("kafka producer ready", extra={
            "detail": f"idempotent producer id {self.stats['eos'].get('producer_id')}, acks=all, "
                      f"max in flight {MAX_IN_FLIGHT}"})

    async def close(self, timeout_s: float = 10.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # By now every publish has returned (the committer drained first), so a record still
            # queued belongs to a publish that gave up on it, and the caller spooled it. A short
            # flush lets a healthy broker take them; the rest are purged, not waited for: with
            # the broker down, shutdown would otherwise hang for the whole timeout.
            remaining = await asyncio.to_thread(producer.flush, min(timeout_s, 2.0))
            if remaining:
                await asyncio.to_thread(producer.purge)
                log.info("kafka records purged at close (they are in the spool)",
                         extra={"count": remaining})
        await self._stop_poller()

    def _start_poller(self) -> None:
        self._poller = asyncio.create_task(self._poll_loop(), name="kafka-poller")

    async def _stop_poller(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll_loop(self) -> None:
        while True:
            producer = self._producer
            if producer is None:
                return
            producer.poll(0)  # serves whatever reports (and stats, errors) are queued
            if self._waiting:
                await asyncio.sleep(0.001)
            else:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), 0.1)

    def _on_stats(self, text: str) -> None:
        with contextlib.suppress(orjson.JSONDecodeError):
            self.stats = orjson.loads(text)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            # An idempotent producer's fatal error (e.g. a sequence gap) ends this producer:
            # every later publish fails until it is replaced (see publish()).
            self.fatal = err.name()
            log.error("kafka producer fatal error", extra={"error": err.name()})
        elif err.code() != KafkaError._ALL_BROKERS_DOWN:
            log.debug("kafka client error", extra={"error": err.name()})

    # --- publishing ---------------------------------------------------------------------------

    def topic_for(self, record: DeliveryRecord) -> str:
        return self.notifications_topic if record.jobs and not record.events else \
            self.events_topic

    async def publish(self, records: Sequence[DeliveryRecord], timeout_s: float, *,
                      slow_s: float | None = None,
                      on_slow: Callable[[float], bool] | None = None,
                      abandon: asyncio.Future[Any] | None = None
                      ) -> list[BaseException | None]:
        """Send every record; return, per record, None once Kafka acknowledged it (acks=all)
        or the error that stands in the way. Never raises for a record's failure.

        The wait is bounded by ``timeout_s``. When the reports are not all in after ``slow_s``,
        ``on_slow(seconds waited)`` is called once (the breaker's slow-call report); if it
        returns True the wait ends there, and the records still unreported count as timed out.
        The wait also ends when ``abandon`` completes (the breaker opened meanwhile), with the
        same verdict.
        """
        if not records:
            return []
        batch = _Publish(asyncio.get_running_loop(), len(records))
        if self.fatal is not None:
            await self._replace_producer()
        producer = self._producer
        if producer is None:
            error = StoreUnavailable("the Kafka producer is not open", retry_after_s=2)
            return [error] * len(records)
        for index, record in enumerate(records):
            try:
                producer.produce(
                    self.topic_for(record), value=encode(record),
                    key=record.user_id.encode(),
                    headers=[("auren-delivery", f"{record.provider}:{record.delivery_key}")],
                    on_delivery=functools.partial(batch.report, index))
            except (BufferError, KafkaException) as exc:
                batch.refuse(index, PublishFailed(f"Kafka refused the record: {exc}",
                                                  retry_after_s=2))
        self._waiting += 1
        self._kick.set()
        waits: tuple[asyncio.Future[Any], ...] = \
            (batch.future,) if abandon is None else (batch.future, abandon)
        first = asyncio.FIRST_COMPLETED
        started = time.monotonic()
        try:
            # asyncio.wait leaves the futures alone on a timeout (no shield needed).
            if on_slow is not None and slow_s is not None and slow_s < timeout_s:
                await asyncio.wait(waits, timeout=slow_s, return_when=first)
                if not batch.future.done() and not (abandon is not None and abandon.done()):
                    waited = time.monotonic() - started
                    if not on_slow(waited):
                        await asyncio.wait(waits, timeout=timeout_s - waited, return_when=first)
            else:
                await asyncio.wait(waits, timeout=timeout_s, return_when=first)
        finally:
            self._waiting -= 1
        waited = time.monotonic() - started
        late = PublishTimeout(f"no delivery report within {waited:.3g} s", retry_after_s=2)
        with batch.lock:  # a snapshot: late reports must not change the verdict
            errors = [late if e is _PENDING else e for e in batch.errors]
        for problem in errors:
            if problem is not None:
                self.failures[type(problem).__name__] += 1
        self.published += errors.count(None)
        return errors

    async def _replace_producer(self) -> None:
        log.warning("replacing the kafka producer after a fatal error",
                    extra={"error": self.fatal})
        old, self._producer = self._producer, None
        await self._stop_poller()
        if old is not None:
            await asyncio.to_thread(old.purge)
        self.fatal = None
        self.stats = {}
        self._producer = Producer(self.config)
        self._start_poller()

    # --- health -------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records handed to librdkafka and not yet reported on."""
        producer = self._producer
        return len(producer) if producer is not None else 0

    async def ping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """A metadata round trip for the events topic: every partition must have a leader.

        Raises:
            StoreUnavailable: no answer within ``timeout_s`` or a partition without a leader.
        """
        producer = self._producer
        if producer is None:
            raise StoreUnavailable("the Kafka producer is not open")
        started = time.perf_counter()
        try:
            metadata = await asyncio.wait_for(asyncio.to_thread(
                producer.list_topics, self.events_topic, timeout_s), timeout_s + 1)
        except (KafkaException, TimeoutError) as exc:
            raise StoreUnavailable(f"Kafka metadata: {type(exc).__name__}") from exc
        topic = metadata.topics.get(self.events_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise StoreUnavailable(f"Kafka topic {self.events_topic} is not available")
        leaderless = [p for p, meta in topic.partitions.items() if meta.leader < 0]
        if leaderless:
            raise StoreUnavailable(f"{len(leaderless)} partition(s) without a leader")
        return {"engine": "kafka", "responseTime_ms": (time.perf_counter() - started) * 1000,
                "partitions": len(topic.partitions), "queued": self.queue_depth,
                "producerId": self.stats.get("eos", {}).get("producer_id")}


def ensure_topics(bootstrap: str, topics: Sequence[str], *, partitions: int, replication: int,
                  min_insync_replicas: int | None, timeout_s: float,
                  security: dict[str, Any] | None = None,
                  retention_hours: int | None = None) -> list[str]:
    """Create the topics that do not exist; returns those created. Blocking: run it on a
    thread. Every admin call has an explicit timeout.

    Raises:
        StoreUnavailable: the broker did not answer, or refused to create a topic.
    """
    admin_config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000,
                                    "socket.connection.setup.timeout.ms": 5_000, "logger": log,
                                    **(security or {})}
    admin = AdminClient(admin_config)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise StoreUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    config = {"unclean.leader.election.enable": "false"}
    if min_insync_replicas is not None:
        config["min.insync.replicas"] = str(min_insync_replicas)
    if retention_hours is not None:
        # The bound on how long an erased person's records live in the log (see
        # docs/DESIGN.md, "Erasure"); a topic that exists keeps its own setting.
        config["retention.ms"] = str(retention_hours * 3_600_000)
    wanted = [NewTopic(name, num_partitions=partitions, replication_factor=replication,
                       config=config) for name in topics if name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created concurrently
                raise StoreUnavailable(f"could not create topic {name}: {exc}") from exc
        except TimeoutError as exc:
            raise StoreUnavailable(f"creating topic {name} timed out") from exc
    if created:
        log.info("kafka topics created", extra={"count": len(created),
                                                "detail": ", ".join(created)})
    return created


def topic_ends(bootstrap: str, topics: Sequence[str], *, timeout_s: float,
               security: dict[str, Any] | None = None) -> dict[tuple[str, int], int]:
    """The high watermark (the next offset to be written) of every partition of ``topics``.
    Blocking: run it on a thread.

    Raises:
        StoreUnavailable: the broker did not answer.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "auren-watermarks",
                         "enable.auto.commit": False, "logger": log,
                         "socket.timeout.ms": 10_000, **(security or {})})
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue  # never created: nothing was written to it
            for partition in found.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                         timeout=timeout_s)
                ends[(topic, partition)] = int(high)
        return ends
    except KafkaException as exc:
        raise StoreUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    finally:
        consumer.close()


def group_behind(bootstrap: str, group: str, ends: dict[tuple[str, int], int], *,
                 timeout_s: float, security: dict[str, Any] | None = None) -> int:
    """How many records before ``ends`` the consumer group ``group`` has not committed yet
    (a partition it never committed counts whole). Reads the committed offsets without
    joining the group. Blocking: run it on a thread.

    Raises:
        StoreUnavailable: the broker did not answer.
    """
    if not ends:
        return 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "logger": log,
                         "socket.timeout.ms": 10_000, **(security or {})})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in ends],
                                       timeout=timeout_s)
    except KafkaException as exc:
        raise StoreUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    finally:
        consumer.close()
    return sum(max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed)
