"""The Kafka bus against a real broker: asserted configuration, topics, delivery reports."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from auren.adapters.kafka import KafkaBus, check_producer_config, producer_config
from auren.adapters.wire import decode, record_of
from auren.errors import StoreUnavailable
from auren.events import Delivery, FetchJob, fetch_job_id
from tests.helpers import delivery


def test_the_producer_config_is_idempotent_acks_all_and_bounded():
    config = producer_config("x:1", message_timeout_s=30, client_id="t")
    check_producer_config(config)
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["max.in.flight.requests.per.connection"] <= 5
    assert config["message.timeout.ms"] == 30_000


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("enable.idempotence", False, "idempotence"),
    ("acks", 1, "acks"),
    ("max.in.flight.requests.per.connection", 6, "in.flight"),
    ("message.timeout.ms", 0, "finite"),
])
def test_unsafe_configs_are_refused(key, value, problem):
    config = producer_config("x:1", message_timeout_s=30, client_id="t")
    config[key] = value
    with pytest.raises(ValueError, match=problem):
        check_producer_config(config)


def _consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        seen: list = []
        deadline = time.monotonic() + timeout
        while len(seen) < n and time.monotonic() < deadline:
            seen += [m for m in consumer.consume(n, 0.5) if m.error() is None]
        return seen
    finally:
        consumer.close()


@pytest.fixture
async def bus(full_stack):
    settings = full_stack.settings()
    b = KafkaBus.from_settings(settings, client_id="test")
    await b.open(timeout_s=30)
    yield b
    await b.close(5)


@pytest.mark.slow
async def test_open_creates_the_topics_and_proves_idempotence(bus):
    assert bus.stats["eos"]["idemp_state"] == "Assigned"
    assert bus.stats["eos"]["producer_id"] >= 0
    metadata = await asyncio.to_thread(AdminClient({"bootstrap.servers": bus.bootstrap})
                                       .list_topics, timeout=10)
    for topic in (bus.events_topic, bus.notifications_topic):
        assert len(metadata.topics[topic].partitions) == 3
    facts = await bus.ping()
    assert facts["engine"] == "kafka" and facts["partitions"] == 3


@pytest.mark.slow
async def test_publish_settles_every_record_keyed_by_user(bus):
    records = [record_of(delivery(f"k{i}", f"user-{i % 3}", range(i, i + 2))) for i in range(30)]
    job = FetchJob(job_id=fetch_job_id("oura", "n1"), provider="oura", user_id="user-j",
                   provider_user_id="pu", kind="sleep", object_id="o1")
    thin = record_of(Delivery(provider="oura", delivery_key="n1", fetch_jobs=[job]))
    assert await bus.publish([*records, thin], timeout_s=10) == [None] * 31
    events = _consume(bus.bootstrap, bus.events_topic, 30)
    assert sorted(decode(m.value()).delivery_key for m in events) == sorted(
        r.delivery_key for r in records)
    for message in events:
        record = decode(message.value())
        assert message.key() == record.user_id.encode()
        assert dict(message.headers())["auren-delivery"] == f"auren:{record.delivery_key}".encode()
    # One user's deliveries share a partition (per-user order).
    partitions: dict[bytes, set[int]] = {}
    for message in events:
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions.values())
    (note,) = _consume(bus.bootstrap, bus.notifications_topic, 1)
    assert decode(note.value()).jobs == thin.jobs


@pytest.mark.slow
async def test_an_unreachable_broker_fails_open_within_its_timeout():
    bus = KafkaBus("127.0.0.1:1", events_topic="x", notifications_topic="y")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await bus.open(timeout_s=3)
    assert time.monotonic() - started < 10


@pytest.mark.slow
async def test_a_publish_that_gets_no_report_in_time_is_a_timeout(bus):
    # Stop the poller: no delivery report can be served, exactly as when the broker hangs.
    await bus._stop_poller()
    errors = await bus.publish([record_of(delivery("late", "u", range(1)))], timeout_s=0.3)
    assert [type(e).__name__ for e in errors] == ["PublishTimeout"]
    assert bus.failures["PublishTimeout"] == 1


@pytest.mark.slow
async def test_records_are_readable_from_the_start_of_each_partition(bus):
    records = [record_of(delivery(f"p{i}", "same-user", range(1))) for i in range(5)]
    assert await bus.publish(records, timeout_s=10) == [None] * 5
    consumer = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(bus.events_topic, timeout=10)
        consumer.assign([TopicPartition(bus.events_topic, p, 0)
                         for p in metadata.topics[bus.events_topic].partitions])
        got: list[str] = []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:
            got += [decode(m.value()).delivery_key for m in consumer.consume(10, 0.5)
                    if m.error() is None]
    finally:
        consumer.close()
    assert got == [r.delivery_key for r in records], "one user's records keep their order"
