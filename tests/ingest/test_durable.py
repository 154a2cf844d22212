"""BusLog: Kafka first, the spool when Kafka cannot, replay when it can again.

The bus here is the shipped in-memory twin (``auren.adapters.memory.MemoryBus``, the real one's
contract: ``publish`` reports per record); the real broker under kill -9 and SIGSTOP is in
``tests/test_fullstack_faults.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from auren.adapters.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from auren.adapters.memory import MemoryBus
from auren.errors import ServiceUnavailable
from auren.events import RawPayload
from auren.ingest.durable import BusLog
from auren.ingest.spool import Spool, SpoolFull
from tests.helpers import delivery


def keys(bus: MemoryBus) -> list[str]:
    return [r.delivery_key for r in bus.records]


@pytest.fixture
async def setup(tmp_path):
    bus = MemoryBus()
    breaker = CircuitBreaker("kafka", min_calls=2, failure_rate=0.5, open_s=0.3, probes=1)
    log = BusLog(bus, Spool(tmp_path / "spool", max_bytes=20_000), breaker,
                 timeout_s=0.1)
    await log.open()
    yield bus, breaker, log
    await log.close()


async def _until(predicate, within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_published_batches_report_the_items_they_carry(setup):
    bus, breaker, log = setup
    results = await log.write_batch([delivery("a", "u", range(3), jobs=1),
                                     delivery("b", "u", range(2))])
    assert [(r.accepted, r.duplicates, r.duplicate_delivery) for r in results] == [
        (4, 0, False), (2, 0, False)]
    assert keys(bus) == ["a", "b"] and log.spool.empty and breaker.state == CLOSED


async def test_unacknowledged_records_are_spooled_then_replayed_in_order(setup):
    bus, breaker, log = setup
    bus.up = False
    for i in range(4):
        results = await log.write_batch([delivery(f"s{i}", "u", range(i, i + 1))])
        assert results[0].accepted == 1, "answered on the strength of the spool"
    assert breaker.state in (OPEN, HALF_OPEN)
    assert log.spool.pending_records == 4
    calls = bus.calls
    # Open: straight to the spool, no publish attempt, no timeout paid.
    if breaker.state == OPEN:
        await log.write_batch([delivery("s4", "u", range(4, 5))])
        assert bus.calls == calls
    bus.up = True
    await _until(lambda: log.spool.empty)
    await _until(lambda: breaker.state == CLOSED)
    spooled = [k for k in keys(bus) if k.startswith("s")]
    assert spooled == sorted(spooled), "replayed in the order written"
    assert set(spooled) >= {"s0", "s1", "s2", "s3"}
    transitions = [(t.source, t.target) for t in breaker.transitions]
    assert transitions[:1] == [(CLOSED, OPEN)]
    assert (HALF_OPEN, CLOSED) in transitions


async def test_a_full_spool_refuses_with_503_and_never_drops(setup):
    bus, _, log = setup
    bus.up = False
    accepted = 0
    with pytest.raises(SpoolFull) as info:
        for i in range(1000):
            await log.write_batch([delivery(f"f{i}", "u", range(5))])
            accepted += 1
    assert isinstance(info.value, ServiceUnavailable) and info.value.status == 503
    assert log.spool.pending_records == accepted
    bus.up = True
    await _until(lambda: log.spool.empty)
    assert keys(bus) == [f"f{i}" for i in range(accepted)]


async def test_spooled_records_survive_a_restart(tmp_path):
    bus = MemoryBus()
    bus.up = False
    breaker = CircuitBreaker("kafka", min_calls=1, open_s=60)
    first = BusLog(bus, Spool(tmp_path / "spool"), breaker, timeout_s=0.05)
    await first.open()
    await first.write_batch([delivery("r1", "u", range(2)), delivery("r2", "v", range(1))])
    await first.close()  # the process goes away with the records spooled
    bus.up = True
    second = BusLog(bus, Spool(tmp_path / "spool"), CircuitBreaker("kafka"),
                    timeout_s=0.05)
    await second.open()
    try:
        await _until(lambda: second.spool.empty)
        assert keys(bus) == ["r1", "r2"]
    finally:
        await second.close()


async def test_each_process_claims_its_own_spool_slot(tmp_path):
    logs = [BusLog(MemoryBus(), tmp_path / "spool", CircuitBreaker("kafka"))
            for _ in range(3)]
    for log in logs:
        await log.open()
    try:
        assert sorted(log.spool.directory.name for log in logs) == ["0", "1", "2"]
    finally:
        for log in logs:
            await log.close()
    reopened = BusLog(MemoryBus(), tmp_path / "spool", CircuitBreaker("kafka"))
    await reopened.open()
    try:
        assert reopened.spool.directory.name == "0", "a freed slot is taken again"
    finally:
        await reopened.close()


async def test_a_hung_bus_is_reported_slow_while_it_hangs_and_the_batch_spooled(tmp_path):
    """Many small fast batches, then a hang: the hung batches weigh what they carry, the
    breaker opens on the slow report (before the timeout), and that batch stops waiting."""
    bus = MemoryBus()
    breaker = CircuitBreaker("kafka", min_calls=2, failure_rate=0.5, open_s=30, probes=1,
                             slow_call_s=0.05)
    log = BusLog(bus, Spool(tmp_path / "spool"), breaker,
                 timeout_s=5.0)
    await log.open()
    try:
        for i in range(20):
            await log.write_batch([delivery(f"ok{i}", "u", range(1))])
        bus.hung = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        await log.write_batch([delivery(f"h{i}", "u", range(1)) for i in range(25)])
        assert loop.time() - started < 1.0, "the batch waited for the timeout"
        assert breaker.state == OPEN
        assert breaker.snapshot()["windowSlowCalls"] == 25
        assert log.spool.pending_records == 25
    finally:
        await log.close()


async def test_a_hung_bus_stalls_the_breaker_open_whatever_the_rate(tmp_path):
    """Hundreds of fast batches in the window, then one small batch hangs: too few slow calls
    for the rate, but nothing answers any more, so the stall rule opens the breaker at the
    slow threshold and the batch goes to the spool without waiting for the timeout."""
    bus = MemoryBus()
    breaker = CircuitBreaker("kafka", min_calls=5, failure_rate=0.5, open_s=30,
                             slow_call_s=0.05)
    log = BusLog(bus, Spool(tmp_path / "spool"), breaker,
                 timeout_s=5.0)
    await log.open()
    try:
        for i in range(300):
            await log.write_batch([delivery(f"ok{i}", "u", range(1))])
        await asyncio.sleep(0.02)  # the next batch is not queued behind the last one
        bus.hung = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        await log.write_batch([delivery("h0", "u", range(1))])
        assert loop.time() - started < 1.0, "the batch waited for the timeout"
        assert breaker.state == OPEN
        assert breaker.transitions[-1].reason.startswith("stalled"), breaker.transitions
        assert breaker.snapshot()["windowSlowCalls"] == 1
        assert log.spool.pending_records == 1
        assert breaker.snapshot()["inFlight"] == 0
    finally:
        await log.close()


async def test_a_publish_waiting_when_the_breaker_opens_stops_waiting(tmp_path):
    """The breaker opens while a publish waits, for a reason that publish did not report:
    the wait ends there and its deliveries go to the spool."""
    bus = MemoryBus()
    breaker = CircuitBreaker("kafka", min_calls=5, open_s=30, slow_call_s=2.0)
    log = BusLog(bus, Spool(tmp_path / "spool"), breaker,
                 timeout_s=5.0)
    await log.open()
    try:
        bus.hung = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        write = asyncio.create_task(log.write_batch([delivery("w0", "u", range(2))]))
        await asyncio.sleep(0.1)
        assert not write.done()
        breaker.force_open("opened elsewhere")
        results = await asyncio.wait_for(write, 1.0)
        assert loop.time() - started < 1.0
        assert results[0].accepted == 2 and log.spool.pending_records == 1
    finally:
        await log.close()


async def test_a_spooled_delivery_keeps_its_archived_payload_through_the_replay(setup):
    # ARCHIVE_RAW_PAYLOADS: the sealed payload is part of the delivery's record, so a delivery
    # answered on the strength of the spool still has it when Kafka takes it.
    bus, _, log = setup
    archived = delivery("raw-1", "u", range(2))
    archived.raw = RawPayload("auren", "raw-1", "2026-01-01T00:00:00.000000Z", ("u",),
                              "sealed-text")
    bus.up = False
    assert (await log.write_batch([archived]))[0].accepted == 2
    assert log.spool.pending_records == 1
    bus.up = True
    await _until(lambda: log.spool.empty)
    (record,) = [r for r in bus.records if r.delivery_key == "raw-1"]
    assert record.raw == ("2026-01-01T00:00:00.000000Z", ("u",), "sealed-text")
