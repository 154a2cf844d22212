"""The pipeline in process: the bridge's webhook path with no HTTP, against the shipped
in-memory twins (``MemoryStore``, ``MemoryCache``, ``MemoryBus``) and the real providers, group
committer, admission, bus log and spool. The same path over HTTP against SQLite and PostgreSQL is in
``tests/services/test_bridge_blackbox.py`` and ``test_bridge_fullstack.py``.

Signatures are computed here with ``hmac`` from each scheme's definition, never with the code
under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from auren.adapters.base import EventQuery
from auren.adapters.breaker import CircuitBreaker
from auren.adapters.memory import MemoryBus, MemoryCache, MemoryStore
from auren.errors import (
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProviderNotConfigured,
    RateLimited,
    SignatureInvalid,
    StoreUnavailable,
)
from auren.ingest.admission import Admission
from auren.ingest.committer import GroupCommitter
from auren.ingest.durable import BusLog
from auren.ingest.pipeline import IngestPipeline
from auren.ingest.spool import Spool
from auren.observability import BridgeMetrics
from auren.providers.base import WebhookRequest
from auren.providers.fitbit import FitbitProvider
from auren.providers.native import NativeProvider
from tests.helpers import NATIVE_SECRET, hrv_event, native_body, native_headers

FITBIT_SECRET = "fitbit-secret"


@dataclass
class Bridge:
    pipeline: IngestPipeline
    store: MemoryStore
    cache: MemoryCache
    admission: Admission
    metrics: BridgeMetrics


async def _bridge(store: MemoryStore, *, gate=None) -> AsyncIterator[Bridge]:
    cache = MemoryCache()
    # 8 in their durable phase, 64 more in line for at most 50 ms.
    admission = Admission(8, 64, 0.05)
    metrics = BridgeMetrics()
    committer = GroupCommitter(store, on_batch=metrics.observe_batch)
    providers = {"auren": NativeProvider((NATIVE_SECRET,)),
                 "fitbit": FitbitProvider((FITBIT_SECRET,), verify_code="code-1")}
    committer.start()
    try:
        yield Bridge(IngestPipeline(providers, cache, admission, committer, metrics, gate=gate),
                     store, cache, admission, metrics)
    finally:
        await committer.close(5.0)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def bridge(store: MemoryStore) -> AsyncIterator[Bridge]:
    async for b in _bridge(store):
        yield b


def _native(user: str, days: range, *, msg_id: str, key: bytes | None = None,
            method: str = "POST") -> WebhookRequest:
    body = native_body(user, [hrv_event(d, 50.0 + d) for d in days])
    headers = native_headers(body, msg_id=msg_id) if key is None else native_headers(
        body, msg_id=msg_id, key=key)
    return WebhookRequest(method=method, headers=headers, query={}, body=body)


def _counter(bridge: Bridge, name: str, **labels: str) -> float:
    return bridge.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_signed_webhook_is_stored_then_answered_with_what_was_accepted(bridge):
    outcome = await bridge.pipeline.handle("auren", _native("u1", range(1, 4), msg_id="m1"))
    assert (outcome.status, outcome.body) == (202, {"accepted": 3, "duplicates": 0})
    stored = await bridge.store.query_events(EventQuery(user_id="u1"))
    assert [e.value for e in stored] == [51.0, 52.0, 53.0]
    assert bridge.admission.in_flight == 0, "the slot is handed back once durable"
    assert _counter(bridge, "auren_events_stored_total", provider="auren") == 3


async def test_a_retry_the_cache_remembers_is_a_duplicate_and_stores_nothing(bridge):
    first = _native("u1", range(1, 3), msg_id="m1")
    await bridge.pipeline.handle("auren", first)
    again = await bridge.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
    assert (again.status, again.body) == (200, {"duplicate": True, "accepted": 0,
                                                "duplicates": 2})
    assert await bridge.store.count_events() == 2


async def test_a_retry_the_cache_forgot_is_caught_by_the_store(store):
    async for first in _bridge(store):
        await first.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
    # A restarted bridge: an empty cache in front of the same store.
    async for second in _bridge(store):
        again = await second.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
        assert again.status == 200 and again.body["duplicate"] is True
    assert await store.count_events() == 2


async def test_new_deliveries_of_known_events_answer_200_and_count_duplicates(bridge):
    await bridge.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
    overlap = await bridge.pipeline.handle("auren", _native("u1", range(2, 5), msg_id="m2"))
    assert (overlap.status, overlap.body) == (202, {"accepted": 2, "duplicates": 1})
    again = await bridge.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m3"))
    assert again.status == 200 and again.body == {"duplicate": True, "accepted": 0,
                                                  "duplicates": 2}
    assert await bridge.store.count_events() == 4


async def test_a_bad_signature_is_refused_before_parsing_and_counted(bridge):
    forged = _native("u1", range(1, 2), msg_id="m1", key=b"not-the-secret-0123456789abcdef!")
    with pytest.raises(SignatureInvalid):
        await bridge.pipeline.handle("auren", forged)
    assert _counter(bridge, "auren_signature_failures_total", provider="auren") == 1
    assert await bridge.store.count_events() == 0 and bridge.admission.in_flight == 0


async def test_unknown_and_unconfigured_providers_are_told_apart(bridge):
    request = _native("u1", range(1, 2), msg_id="m1")
    with pytest.raises(ProviderNotConfigured):
        await bridge.pipeline.handle("oura", request)
    with pytest.raises(NotFound) as unknown:
        await bridge.pipeline.handle("no-such-provider", request)
    assert not isinstance(unknown.value, ProviderNotConfigured)


async def test_handshakes_are_answered_and_other_methods_refused(bridge):
    verify = WebhookRequest(method="GET", headers={}, query={"verify": "code-1"}, body=b"")
    assert (await bridge.pipeline.handle("fitbit", verify)).status == 204
    wrong = WebhookRequest(method="GET", headers={}, query={"verify": "code-2"}, body=b"")
    assert (await bridge.pipeline.handle("fitbit", wrong)).status == 404
    with pytest.raises(MethodNotAllowed):
        await bridge.pipeline.handle("auren", _native("u1", range(1, 2), msg_id="m1",
                                                      method="PUT"))


async def test_fitbit_notifications_become_fetch_jobs_answered_with_an_empty_204(bridge):
    body = orjson.dumps([{"collectionType": "sleep", "date": "2026-01-02", "ownerId": "ABC",
                          "ownerType": "user", "subscriptionId": "s-1"}])
    signature = base64.b64encode(hmac.new(FITBIT_SECRET.encode() + b"&", body,
                                          hashlib.sha1).digest()).decode()
    request = WebhookRequest(method="POST", headers={"x-fitbit-signature": signature,
                                                     "content-type": "application/json"},
                             query={}, body=body)
    outcome = await bridge.pipeline.handle("fitbit", request)
    assert (outcome.status, outcome.body) == (204, None)
    assert await bridge.store.count_fetch_jobs() == 1
    # Fitbit re-sends identical notifications and wants 204 for them too.
    assert (await bridge.pipeline.handle("fitbit", request)).status == 204
    assert await bridge.store.count_fetch_jobs() == 1


async def test_a_full_admission_sheds_with_503_and_counts_it(bridge):
    for _ in range(bridge.admission.limit):  # every slot held by webhooks still writing
        assert bridge.admission.try_enter()
    with pytest.raises(Overloaded):
        await bridge.pipeline.handle("auren", _native("u1", range(1, 2), msg_id="m1"))
    assert bridge.admission.rejected == 1 and bridge.admission.waiting == 0
    assert await bridge.store.count_events() == 0


async def test_a_store_outage_answers_503_keeps_nothing_and_a_retry_then_succeeds(bridge):
    bridge.store.unavailable = "the disk is gone"
    with pytest.raises(StoreUnavailable):
        await bridge.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
    assert bridge.admission.in_flight == 0
    assert not await bridge.cache.seen("auren:m1"), "only what is durable is remembered"
    bridge.store.unavailable = None
    retry = await bridge.pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
    assert (retry.status, retry.body) == (202, {"accepted": 2, "duplicates": 0})


async def test_concurrent_webhooks_share_group_commits_and_all_become_durable(bridge):
    requests = [_native(f"u{i}", range(1, 3), msg_id=f"m{i}") for i in range(40)]
    outcomes = await asyncio.gather(*(bridge.pipeline.handle("auren", r) for r in requests))
    assert all(o.status == 202 and o.body["accepted"] == 2 for o in outcomes)
    assert await bridge.store.count_events() == 80
    batches = _counter(bridge, "auren_commit_batch_deliveries_count")
    assert 0 < batches < 40, "concurrent deliveries were committed together"


async def test_the_rate_gate_runs_before_the_signature_is_checked(store):
    async def gate(provider: str, client_ip: str | None) -> None:
        raise RateLimited(f"too many from {provider}", retry_after_s=1)

    async for bridge in _bridge(store, gate=gate):
        forged = _native("u1", range(1, 2), msg_id="m1", key=b"not-the-secret-0123456789abcdef!")
        with pytest.raises(RateLimited):
            await bridge.pipeline.handle("auren", forged)
        assert _counter(bridge, "auren_signature_failures_total", provider="auren") == 0


async def test_with_a_bus_a_webhook_is_answered_once_published_or_spooled(tmp_path):
    bus = MemoryBus()
    log = BusLog(bus, Spool(tmp_path / "spool"), CircuitBreaker("kafka"), timeout_s=0.1)
    await log.open()
    committer = GroupCommitter(log)
    committer.start()
    pipeline = IngestPipeline({"auren": NativeProvider((NATIVE_SECRET,))}, MemoryCache(),
                              Admission(8, 64, 1.0), committer, BridgeMetrics())
    try:
        published = await pipeline.handle("auren", _native("u1", range(1, 3), msg_id="m1"))
        assert published.status == 202 and [r.delivery_key for r in bus.records] == ["m1"]
        bus.up = False
        spooled = await pipeline.handle("auren", _native("u1", range(3, 5), msg_id="m2"))
        assert (spooled.status, spooled.body) == (202, {"accepted": 2, "duplicates": 0})
        assert log.spool.pending_records == 1, "answered on the strength of the fsynced spool"
    finally:
        await committer.close(5.0)
        await log.close()
