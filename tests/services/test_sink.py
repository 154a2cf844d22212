"""The sink against the real stack: Kafka records into PostgreSQL exactly once in effect,
offsets only after the database commit, poison records skipped, and the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest
from confluent_kafka import Producer

from auren.adapters.kafka import KafkaBus
from auren.adapters.postgres import MIGRATIONS, PostgresStore
from auren.adapters.wire import record_of
from auren.events import Delivery, FetchJob, fetch_job_id
from auren.services.sink import Sink, run_sink
from tests.helpers import delivery

pytestmark = pytest.mark.slow


async def _publish(settings, records) -> None:
    bus = KafkaBus.from_settings(settings, client_id="test")
    await bus.open(timeout_s=30)
    try:
        assert await bus.publish(records, timeout_s=10) == [None] * len(records)
    finally:
        await bus.close(5)


async def _counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return tuple([await conn.fetchval(f"SELECT count(*) FROM {t}", timeout=10)  # noqa: S608
                      for t in ("biometric_events", "fetch_jobs", "deliveries")])
    finally:
        await conn.close(timeout=10)


async def test_records_land_once_even_when_sent_twice_and_offsets_follow(full_stack):
    settings = full_stack.settings()
    records = [record_of(delivery(f"d{i}", f"u{i % 4}", range(i, i + 3))) for i in range(40)]
    job = FetchJob(job_id=fetch_job_id("oura", "n"), provider="oura", user_id="u1",
                   provider_user_id="p1", kind="sleep", object_id="x")
    thin = record_of(Delivery(provider="oura", delivery_key="n", fetch_jobs=[job]))
    # Every record twice (a producer retry, a spool replay) and the thin one too.
    await _publish(settings, [*records, thin, *records[:10], thin])
    stats = await run_sink(settings, idle_exit_s=2.0)
    assert stats.records == 52 and stats.skipped == 0
    # 40 deliveries of 3 events (no two share one), 1 fetch job, 41 distinct deliveries.
    assert await _counts(str(settings.postgres_url.get_secret_value())) == (120, 1, 41)
    # The offsets were committed: the same group reads nothing again.
    again = await run_sink(settings, idle_exit_s=2.0)
    assert again.records == 0


async def test_a_poison_record_is_skipped_and_the_rest_stored(full_stack):
    settings = full_stack.settings()
    await _publish(settings, [record_of(delivery("good-1", "u", range(2)))])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(settings.kafka_events_topic, value=b"\x00 not a record", key=b"u")
    # Valid JSON rows with a start time PostgreSQL refuses: skipped at the database.
    bad = record_of(delivery("bad", "u", range(1)))
    bad.events = [(*bad.events[0][:7], "not-a-time", *bad.events[0][8:])]  # type: ignore[list-item]
    from auren.adapters.wire import encode

    producer.produce(settings.kafka_events_topic, value=encode(bad), key=b"u")
    assert producer.flush(10) == 0
    await _publish(settings, [record_of(delivery("good-2", "u", range(2, 4)))])
    stats = await run_sink(settings, idle_exit_s=2.0)
    assert stats.skipped == 2
    assert (await _counts(str(settings.postgres_url.get_secret_value())))[0] == 4


async def test_offsets_move_only_after_the_database_commit(full_stack):
    """A batch that never commits (the database refuses every write) is read again by the
    next sink of the group: nothing was marked consumed."""
    settings = full_stack.settings()
    await _publish(settings, [record_of(delivery(f"o{i}", "u", range(i, i + 1)))
                              for i in range(5)])
    store = PostgresStore(settings.postgres_url.get_secret_value())
    await store.open()
    sink = Sink(settings, store)

    async def refuse(records, *, results=True):
        from auren.errors import StoreUnavailable

        raise StoreUnavailable("down for the test")

    store.write_records = refuse  # type: ignore[method-assign]
    await sink.open()
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    for _ in range(600):
        if sink.stats.retries >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)
    await sink.close()
    await store.close()
    assert sink.stats.records == 0
    stats = await run_sink(settings, idle_exit_s=2.0)
    assert stats.records == 5
    assert (await _counts(str(settings.postgres_url.get_secret_value())))[0] == 5


def test_cli_db_upgrade_and_sink_once(full_stack):
    env = {**os.environ, **full_stack.isolated(), "LOG_LEVEL": "WARNING"}
    upgrade = subprocess.run([sys.executable, "-m", "auren", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"schema: events v{len(MIGRATIONS)}" in upgrade.stdout
    assert "partitioning: native" in upgrade.stdout
    sink = subprocess.run([sys.executable, "-m", "auren", "sink", "--once", "--idle-exit", "1"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert sink.returncode == 0, sink.stderr
    missing = {k: v for k, v in env.items() if k != "POSTGRES_URL"}
    refused = subprocess.run([sys.executable, "-m", "auren", "db", "upgrade"], env=missing,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "POSTGRES_URL" in refused.stderr
