"""Sealing a raw payload: what is kept, that it opens only with its key and in its own row, and
that it travels in the Kafka record (wire version 3) unchanged."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest

from auren.adapters.wire import VERSION, VERSION_RAW, decode, encode, record_of
from auren.connections.crypto import TokenCipher, TokenUnreadable
from auren.events import Delivery, RawPayload
from auren.ingest.archive import PARSE_HEADERS, PayloadSealer
from auren.providers import PROVIDER_CLASSES, build_providers
from auren.providers.apple import AppleHealthProvider
from auren.providers.base import WebhookRequest
from auren.settings import Settings
from auren.sim.credentials import fresh_secrets
from auren.sim.render import resolve_providers
from auren.sim.wearers import generate_users
from tests.helpers import delivery

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _cipher() -> TokenCipher:
    return TokenCipher([os.urandom(32)])


def _request(body: bytes, **headers: str) -> WebhookRequest:
    return WebhookRequest(method="POST", headers=headers, query={"user_id": "q-user"},
                          body=body)


def test_a_sealed_payload_opens_to_the_body_query_and_parse_headers_only():
    sealer = PayloadSealer(_cipher())
    body = b'{"distinctive": "needle-4711", "n": [1, 2, 3]}\n\x00binary tail'
    request = _request(body, **{"content-type": "application/json", "webhook-id": "msg_1",
                                "webhook-signature": "v1,abc", "api-key": "secret-key",
                                "authorization": "Bearer secret"})
    parsed = delivery("k-1", "seal-u", range(2))
    raw = sealer.seal(request, parsed, RECEIVED)
    assert raw is not None
    assert (raw.provider, raw.delivery_key, raw.received_at, raw.user_ids) == (
        "auren", "k-1", "2026-03-01T12:00:00.000000Z", ("seal-u",))
    assert b"needle-4711" not in base64.urlsafe_b64decode(raw.sealed)
    opened = sealer.open(raw)
    assert opened.request.body == body
    assert opened.request.query == {"user_id": "q-user"}
    # Credentials and signatures are not kept: only what parsing reads.
    assert opened.request.headers == {"content-type": "application/json",
                                      "webhook-id": "msg_1"}
    assert set(opened.request.headers) <= set(PARSE_HEADERS)
    assert opened.received_at == RECEIVED and opened.user_ids == ("seal-u",)


def test_a_sealed_payload_opens_only_with_its_key_and_in_its_own_row():
    cipher = _cipher()
    raw = PayloadSealer(cipher).seal(_request(b"{}"), delivery("k-2", "u", range(1)), RECEIVED)
    assert raw is not None
    with pytest.raises(TokenUnreadable):
        PayloadSealer(_cipher()).open(raw)  # another key
    moved = RawPayload(raw.provider, "another-delivery", raw.received_at, raw.user_ids,
                       raw.sealed)
    with pytest.raises(TokenUnreadable):
        PayloadSealer(cipher).open(moved)


def test_a_payload_too_large_even_sealed_is_not_archived_and_is_counted():
    sealer = PayloadSealer(_cipher())
    incompressible = os.urandom(600 * 1024)
    assert sealer.seal(_request(incompressible), delivery("k-3", "u", range(1)),
                       RECEIVED) is None
    assert sealer.too_large == 1


def test_the_kafka_record_carries_the_sealed_payload_as_version_3():
    sealer = PayloadSealer(_cipher())
    parsed = delivery("k-4", "wire-u", range(3))
    plain = record_of(parsed)
    assert encode(plain)[:3] == f"[{VERSION},".encode()  # no archive: still version 2
    parsed.raw = sealer.seal(_request(b'{"a": 1}'), parsed, RECEIVED)
    record = record_of(parsed)
    data = encode(record)
    assert data[:3] == f"[{VERSION_RAW},".encode()
    back = decode(data)
    assert back == record and back.raw is not None
    assert back.raw == (parsed.raw.received_at, ("wire-u",), parsed.raw.sealed)
    with pytest.raises(ValueError, match="malformed"):
        decode(data.replace(b'"wire-u"', b"7"))


def test_health_auto_export_is_reparsed_for_the_user_the_delivery_named():
    # Its user is bound through the API key, which the archive does not keep.
    provider = AppleHealthProvider(("alice:key-a",))
    body = (b'{"data": {"metrics": [{"name": "heart_rate", "units": "count/min", "data": '
            b'[{"date": "2026-03-01 07:00:00 +0000", "Avg": 61, "Min": 50, "Max": 80}]}]}}')
    live = provider.parse(WebhookRequest("POST", {"api-key": "key-a"}, {}, body), RECEIVED)
    again = provider.reparse(WebhookRequest("POST", {}, {}, body), RECEIVED, ("alice",))
    assert [(e.event_id, e.user_id, e.value) for e in again.events] == [
        (e.event_id, e.user_id, e.value) for e in live.events]
    assert live.events and live.events[0].user_id == "alice"


def test_an_empty_delivery_names_no_user():
    raw = PayloadSealer(_cipher()).seal(_request(b"{}"), Delivery("auren", "k-5"), RECEIVED)
    assert raw is not None and raw.user_ids == ()


def test_every_providers_archived_payload_reparses_to_what_was_stored():
    # Every provider's wire format as the simulator renders and signs it: parsed live, sealed,
    # opened and parsed again from the archive alone, the same events (and fetch jobs) result,
    # so the archive keeps every header and parameter a parser reads.
    settings = Settings.model_validate({k.lower(): v for k, v in fresh_secrets({}).items()})
    providers = build_providers(settings)
    targets, skipped = resolve_providers(settings, PROVIDER_CLASSES)
    assert not skipped and {t.name for t in targets} == set(PROVIDER_CLASSES)
    sealer = PayloadSealer(TokenCipher.from_settings(settings))
    day = generate_users(1, 1, seed=3, end_date=datetime.now(UTC).date())[0].days[0]
    seen = set()
    for target in targets:
        for sent in target.render(day, run_id="archive", now=time.time()):
            request = WebhookRequest("POST", {k.lower(): v for k, v in sent.headers.items()},
                                     {}, sent.body, "127.0.0.1")
            received = datetime.now(UTC)
            live = providers[target.name].parse(request, received)
            raw = sealer.seal(request, live, received)
            assert raw is not None
            opened = sealer.open(raw)
            again = providers[target.name].reparse(opened.request, opened.received_at,
                                                   opened.user_ids)
            assert [e.as_dict() for e in again.events] == [e.as_dict() for e in live.events]
            assert [j.as_dict() for j in again.fetch_jobs] == [
                j.as_dict() for j in live.fetch_jobs]
            seen.add(target.name)
            assert live.events or live.fetch_jobs, target.name
    assert seen == set(PROVIDER_CLASSES)
