from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.base import body_digest
from auren.providers.terra import TerraProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, hmac_hex, request, tamper
from tests.providers.samples.terra import ACTIVITY, BODY_DATA, DAILY, SECRET, SLEEP, USER


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def provider(secrets: str = SECRET, *, max_events: int = 5000) -> TerraProvider:
    built = TerraProvider.from_settings(Settings(_env_file=None, terra_signing_secret=secrets,
                                                 max_events_per_delivery=max_events))
    assert built is not None
    return built


def signed(body: bytes = b'{"type":"healthcheck"}', *, secret: str = SECRET, t: int = NOW,
           header: str = "terra-signature"):
    value = f"t={t},v1={hmac_hex(secret.encode(), f'{t}.'.encode() + body)}"
    return request(body, {header: value})


def by_metric(delivery):
    return {event.metric: event for event in delivery.events}


def test_not_configured_without_a_secret():
    assert TerraProvider.from_settings(Settings(_env_file=None)) is None


def test_fixed_vector():
    sig = "2fd304ba0c66dea26bab0c935de8a67c9bf6fa8699223451e7a47fe3da43ff0b"
    req = request(b'{"type":"healthcheck"}', {"terra-signature": f"t=1767225600,v1={sig}"})
    provider("terra-secret").verify(req, NOW)


@pytest.mark.parametrize("header", ["terra-signature", "x-terra-signature"])
def test_valid_signature_passes_in_either_header(header):
    provider().verify(signed(header=header), NOW)


def test_any_v1_entry_may_match():
    good = signed().headers["terra-signature"]
    t, v1 = good.split(",")
    req = request(b'{"type":"healthcheck"}', {"terra-signature": f"{t},v1={'0' * 64},{v1}"})
    provider().verify(req, NOW)


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(tamper(b'{"type":"healthcheck"}'), signed().headers),
                 id="tampered-body"),
    pytest.param(lambda: signed(secret="other"), id="wrong-secret"),
    pytest.param(lambda: request(b'{"type":"healthcheck"}'), id="no-header"),
    pytest.param(lambda: request(b"{}", {"terra-signature": "v1=" + "0" * 64}), id="no-t"),
    pytest.param(lambda: request(b"{}", {"terra-signature": f"t={NOW}"}), id="no-v1"),
    pytest.param(lambda: request(b'{"type":"healthcheck"}', {
        "terra-signature": f"t={NOW},t={NOW}," + signed().headers["terra-signature"]
        .split(",")[1]}), id="two-t"),
    pytest.param(lambda: request(b'{"type":"healthcheck"}', {
        "terra-signature": signed().headers["terra-signature"].replace(f"t={NOW}",
                                                                       f"t={NOW + 1}")}),
        id="t-not-the-signed-one"),
    pytest.param(lambda: request(b"{}", {"terra-signature": "garbage"}), id="garbage"),
])
def test_bad_requests_are_401(req):
    with pytest.raises(SignatureInvalid):
        provider().verify(req(), NOW)


@pytest.mark.parametrize("secret", ["old", "new"])
def test_rotation_accepts_either_secret(secret):
    provider("old,new").verify(signed(secret=secret), NOW)


@pytest.mark.parametrize(("offset", "ok"), [(-301, False), (301, False), (-299, True),
                                            (299, True)])
def test_replay_window(offset, ok):
    req = signed(t=NOW + offset)
    if ok:
        provider().verify(req, NOW)
    else:
        with pytest.raises(SignatureInvalid):
            provider().verify(req, NOW)


def test_no_handshake():
    assert provider().handshake(request(method="GET")) is None


def test_sleep_maps_every_field_with_its_time_frame():
    delivery = provider().parse(request(encode(SLEEP)), RECEIVED)
    events = by_metric(delivery)
    assert {m: e.value for m, e in events.items()} == {
        "heart_rate": 54.0, "resting_heart_rate": 49.0, "hrv_rmssd": 61.5, "hrv_sdnn": 70.2,
        "sleep_duration": 25320.0, "sleep_deep": 5000.0, "sleep_light": 14920.0,
        "sleep_rem": 5400.0, "sleep_awake": 1200.0, "sleep_efficiency": 91.0,
        "respiratory_rate": 14.2, "spo2": 96.8, "temperature_deviation": -0.3,
    }
    hrv = events["hrv_rmssd"]
    assert hrv.unit == "ms"
    assert hrv.start == datetime(2025, 12, 31, 22, 10, tzinfo=UTC)
    assert hrv.end == datetime(2026, 1, 1, 6, 5, tzinfo=UTC)
    assert hrv.source_record_id == "s-771"
    assert hrv.user_id == "acct_1234"
    assert hrv.provider_user_id == USER["user_id"]
    assert delivery.ignored == 0


def test_event_ids_are_stable_across_parses():
    first = provider().parse(request(encode(SLEEP)), RECEIVED)
    second = provider().parse(request(encode(SLEEP)), datetime.now(UTC))
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert len({e.event_id for e in first.events}) == len(first.events)


@pytest.mark.parametrize("reference", [None, ""])
def test_daily_without_reference_id_uses_the_terra_user(reference):
    payload = {**DAILY, "user": {**USER, "reference_id": reference}}
    events = by_metric(provider().parse(request(encode(payload)), RECEIVED))
    assert {m: e.value for m, e in events.items()} == {
        "steps": 8412.0, "distance": 6230.0, "total_energy": 2380.0, "active_energy": 540.0,
        "resting_heart_rate": 51.0,
    }
    assert events["steps"].user_id == f"terra:{USER['user_id']}"
    assert events["steps"].source_record_id is None


def test_body_samples_are_events_at_their_own_time():
    events = by_metric(provider().parse(request(encode(BODY_DATA)), RECEIVED))
    assert {m: e.value for m, e in events.items()} == {
        "weight": 72.4, "body_fat": 18.5, "body_temperature": 36.7,
        "blood_pressure_systolic": 118.0, "blood_pressure_diastolic": 76.0,
    }
    assert events["weight"].start == datetime(2026, 1, 1, 7, 30, tzinfo=UTC)
    assert events["weight"].end is None
    assert events["blood_pressure_systolic"].unit == "mm[Hg]"


def test_activity():
    events = by_metric(provider().parse(request(encode(ACTIVITY)), RECEIVED))
    assert {m: e.value for m, e in events.items()} == {
        "steps": 5100.0, "distance": 7400.0, "heart_rate": 148.0}
    assert events["steps"].source_record_id == "act-9"


def test_delivery_key_is_the_signed_body_never_the_unsigned_trace_id():
    # x-terra-trace-id is not signed: were it the key, a replayed delivery carrying the trace
    # id of one still to come would have that one answered as a duplicate and dropped.
    body = encode(SLEEP)
    keys = {provider().parse(request(body, headers), RECEIVED).delivery_key
            for headers in ({}, {"x-terra-trace-id": "9a41c7d2:chunk:1"},
                            {"x-terra-trace-id": "another-delivery"})}
    assert keys == {body_digest(body)}
    other = encode({**SLEEP, "version": "2022-03-17"})
    assert provider().parse(request(other), RECEIVED).delivery_key != body_digest(body)


@pytest.mark.parametrize("kind", ["healthcheck", "rate_limit_hit", "processing"])
def test_control_events_carry_nothing(kind):
    payload = {"type": kind, "user": USER, "status": "success"}
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    assert (delivery.events, delivery.fetch_jobs, delivery.ignored) == ([], [], 0)


@pytest.mark.parametrize("kind", ["auth", "deauth", "access_revoked"])
def test_connection_events_become_jobs_for_the_fetcher(kind):
    payload = {"type": kind, "user": {**USER, "provider": "OURA"}, "status": "success"}
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    (job,) = delivery.fetch_jobs
    assert delivery.events == []
    assert (job.kind, job.provider_user_id) == (kind, USER["user_id"])
    assert job.user_id == (USER.get("reference_id") or f"terra:{USER['user_id']}")
    assert job.params["resource"] == "OURA"
    with pytest.raises(InvalidPayload):
        provider().parse(request(encode({"type": kind, "user": "nobody"})), RECEIVED)


@pytest.mark.parametrize("kind", ["nutrition", "menstruation", "unified_api.sleep.updated"])
def test_unmapped_data_types_are_counted_as_ignored(kind):
    payload = {"type": kind, "user": USER, "data": [{}, {}]}
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    assert delivery.events == []
    assert delivery.ignored == 2


def test_an_item_without_mapped_fields_is_ignored():
    payload = {**DAILY, "data": [{"metadata": DAILY["data"][0]["metadata"]}]}
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    assert (delivery.events, delivery.ignored) == ([], 1)


def test_an_implausible_value_is_skipped_and_reported_and_the_rest_stored():
    payload = json.loads(encode(SLEEP))
    payload["data"].insert(0, json.loads(json.dumps(payload["data"][0])))
    payload["data"][1]["heart_rate_data"]["summary"]["avg_hr_bpm"] = 0
    payload["data"][1]["metadata"]["summary_id"] = "s-772"
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    # 13 of the first night, 12 of the second: only its heart rate is missing.
    assert len(delivery.events) == 25
    assert [e.value for e in delivery.events if e.metric == "heart_rate"] == [54.0]
    (skipped,) = delivery.skipped
    assert (skipped.metric, skipped.reason, skipped.count) == (
        "heart_rate_data.summary.avg_hr_bpm", "invalid_value", 1)
    assert "outside" in skipped.detail


# (mutation, what is reported as skipped, reason, events still stored of the 13)
@pytest.mark.parametrize(("mutate", "name", "reason", "stored"), [
    (lambda d: d["data"][0]["metadata"].pop("start_time"), "sleep", "invalid_time", 0),
    (lambda d: d["data"][0]["metadata"].update(start_time="2026-01-01T00:00:00"), "sleep",
     "invalid_time", 0),
    (lambda d: d["data"][0]["metadata"].update(start_time="1999-12-31T23:00:00Z"), "sleep",
     "invalid_time", 0),
    (lambda d: d["data"][0]["metadata"].update(end_time="9999-12-31T23:59:59-01:00"), "sleep",
     "invalid_time", 0),
    (lambda d: d["data"][0]["metadata"].update(summary_id="a\x00b"), "sleep", "invalid_item",
     0),
    (lambda d: d["data"][0].update(metadata=[]), "sleep", "invalid_item", 0),
    (lambda d: d.update(data=[7]), "sleep", "invalid_item", 0),
    (lambda d: d["data"][0].update(heart_rate_data=[1, 2]), "heart_rate_data.summary.avg_hr_bpm",
     "invalid_item", 9),
    (lambda d: d["data"][0]["heart_rate_data"]["summary"].update(avg_hr_bpm="54"),
     "heart_rate_data.summary.avg_hr_bpm", "invalid_value", 12),
    (lambda d: d["data"][0]["metadata"].update(end_time="2025-12-01T00:00:00Z"),
     "heart_rate_data.summary.avg_hr_bpm", "invalid_time", 0),
])
def test_what_cannot_be_stored_is_skipped_and_reported(mutate, name, reason, stored):
    payload = json.loads(encode(SLEEP))
    mutate(payload)
    delivery = provider().parse(request(encode(payload)), RECEIVED)
    assert len(delivery.events) == stored
    assert (name, reason) in {(s.metric, s.reason) for s in delivery.skipped}


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d.update(data={}), "data"),
    (lambda d: d.pop("user"), "user"),
    (lambda d: d["user"].update(reference_id=" "), "reference_id"),
    (lambda d: d["user"].update(reference_id="acct\n1"), "reference_id"),
    (lambda d: d.update(type=7), "type"),
])
def test_an_envelope_that_cannot_be_used_is_422(mutate, match):
    payload = json.loads(encode(SLEEP))
    mutate(payload)
    with pytest.raises(InvalidPayload, match=match):
        provider().parse(request(encode(payload)), RECEIVED)


def test_too_many_measurements_is_422():
    with pytest.raises(InvalidPayload, match="more than 5"):
        provider(max_events=5).parse(request(encode(SLEEP)), RECEIVED)


def test_malformed_body_is_400():
    with pytest.raises(MalformedPayload):
        provider().parse(request(b'{"type": "sleep",'), RECEIVED)
