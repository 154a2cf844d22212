from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.oura import OuraProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, hmac_hex, request, tamper
from tests.providers.samples.oura import BODY, SECRET


def provider(secrets: str = SECRET, token: str | None = "tok_7f2a") -> OuraProvider:
    built = OuraProvider.from_settings(Settings(_env_file=None, oura_client_secret=secrets,
                                                oura_verification_token=token))
    assert built is not None
    return built


def signed(body: bytes = BODY, *, secret: str = SECRET, stamp: str = str(NOW)):
    signature = hmac_hex(secret.encode(), stamp.encode() + body).upper()
    return request(body, {"x-oura-timestamp": stamp, "x-oura-signature": signature})


def test_not_configured_without_a_secret():
    assert OuraProvider.from_settings(Settings(_env_file=None)) is None


def test_fixed_vector():
    body = b'{"event_type":"update","data_type":"sleep","object_id":"abc","user_id":"u1"}'
    signature = "293F709AF5D39515A0AE3B2719398016A412D4782C4F9CE5A0C5F539740F5A2E"
    req = request(body, {"x-oura-timestamp": "1767225600", "x-oura-signature": signature})
    provider("oura-secret").verify(req, NOW)


def test_valid_signature_passes_and_case_does_not_matter():
    provider().verify(signed(), NOW)
    lower = signed()
    lower_req = request(BODY, {**lower.headers,
                               "x-oura-signature": lower.headers["x-oura-signature"].lower()})
    provider().verify(lower_req, NOW)


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(tamper(BODY), signed().headers), id="tampered-body"),
    pytest.param(lambda: signed(secret="other"), id="wrong-secret"),
    pytest.param(lambda: request(BODY, {"x-oura-timestamp": str(NOW)}), id="no-signature"),
    pytest.param(lambda: request(BODY, {"x-oura-signature": signed().headers["x-oura-signature"]}),
                 id="no-timestamp"),
    pytest.param(lambda: request(BODY), id="no-headers"),
    pytest.param(lambda: request(BODY, {**signed().headers, "x-oura-timestamp": str(NOW + 1)}),
                 id="timestamp-not-the-signed-one"),
    pytest.param(lambda: request(BODY, {**signed().headers, "x-oura-signature": "zz"}),
                 id="not-hex"),
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
    req = signed(stamp=str(NOW + offset))
    if ok:
        provider().verify(req, NOW)
    else:
        with pytest.raises(SignatureInvalid):
            provider().verify(req, NOW)


@pytest.mark.parametrize("stamp", [str(NOW * 1000), "2026-01-01T00:00:00+00:00",
                                   "2026-01-01T00:00:00Z"])
def test_timestamp_may_be_milliseconds_or_iso(stamp):
    provider().verify(signed(stamp=stamp), NOW)


def test_stale_iso_timestamp_is_401():
    with pytest.raises(SignatureInvalid):
        provider().verify(signed(stamp="2025-12-31T23:54:59+00:00"), NOW)


def test_handshake_echoes_the_challenge_for_the_right_token():
    req = request(method="GET", query={"verification_token": "tok_7f2a", "challenge": "c-93be41"})
    answer = provider().handshake(req)
    assert answer is not None
    assert (answer.status, answer.body) == (200, {"challenge": "c-93be41"})


@pytest.mark.parametrize("query", [{"verification_token": "wrong", "challenge": "c"},
                                   {"challenge": "c"}, {}])
def test_handshake_refuses_a_wrong_or_missing_token(query):
    with pytest.raises(SignatureInvalid):
        provider().handshake(request(method="GET", query=query))


def test_handshake_refused_when_no_token_is_configured():
    req = request(method="GET", query={"verification_token": "", "challenge": "c"})
    with pytest.raises(SignatureInvalid):
        provider(token=None).handshake(req)


def test_handshake_without_challenge_is_400():
    with pytest.raises(MalformedPayload):
        provider().handshake(request(method="GET", query={"verification_token": "tok_7f2a"}))


def test_post_is_not_a_handshake():
    assert provider().handshake(signed()) is None


def test_parse_makes_one_fetch_job():
    delivery = provider().parse(signed(), RECEIVED)
    assert delivery.events == []
    (job,) = delivery.fetch_jobs
    assert job.provider == "oura"
    assert job.user_id == "oura:ou_8c31f0"
    assert job.provider_user_id == "ou_8c31f0"
    assert job.kind == "daily_readiness"
    assert job.object_id == "b1e0c8d2-5a55-4e0f-9c44-0d6f1a2b3c4d"
    assert job.params == {"event_type": "update", "event_time": "2026-01-01T07:42:10.000000Z"}
    assert delivery.delivery_key == provider().parse(signed(), RECEIVED).delivery_key


def test_same_notification_is_the_same_job():
    first = provider().parse(signed(), RECEIVED).fetch_jobs[0]
    again = provider().parse(request(BODY), RECEIVED).fetch_jobs[0]
    assert first.job_id == again.job_id


def test_timestamp_field_is_accepted_in_place_of_event_time():
    body = json.loads(BODY)
    body["timestamp"] = body.pop("event_time")
    (job,) = provider().parse(request(json.dumps(body).encode()), RECEIVED).fetch_jobs
    assert job.params["event_time"] == "2026-01-01T07:42:10.000000Z"


def test_malformed_body_is_400():
    with pytest.raises(MalformedPayload):
        provider().parse(request(b"{not json"), RECEIVED)
    with pytest.raises(MalformedPayload):
        provider().parse(request(b"[]"), RECEIVED)


@pytest.mark.parametrize(("field", "value"), [
    ("user_id", None), ("object_id", "../../admin"), ("data_type", ""),
    ("event_time", "yesterday"),
])
def test_wrong_fields_are_422(field, value):
    body = json.loads(BODY)
    body[field] = value
    with pytest.raises(InvalidPayload, match=field):
        provider().parse(request(json.dumps(body).encode()), RECEIVED)


def _without_object(**fields):
    body = {"event_type": "update", "data_type": "sleep", "user_id": "ou_8c31f0"}
    body.update(fields)
    return provider().parse(signed(json.dumps(body).encode()), RECEIVED)


def test_a_notification_without_object_id_is_a_fetch_by_time_window():
    delivery = _without_object(event_time="2026-01-01T07:42:10+00:00")
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.object_id) == ("sleep", None)
    # The two days before the event: a ring synced late brings the nights before too.
    assert (job.window_start, job.window_end) == (datetime(2025, 12, 30, 7, 42, 10, tzinfo=UTC),
                                                  datetime(2026, 1, 1, 7, 42, 10, tzinfo=UTC))
    assert job.params == {"event_type": "update", "event_time": "2026-01-01T07:42:10.000000Z",
                          "window_start": "2025-12-30T07:42:10.000000Z",
                          "window_end": "2026-01-01T07:42:10.000000Z"}
    again = _without_object(event_time="2026-01-01T07:42:10+00:00").fetch_jobs[0]
    assert again.job_id == job.job_id
    later = _without_object(event_time="2026-01-01T08:00:00+00:00").fetch_jobs[0]
    assert later.job_id != job.job_id


def test_the_window_reaches_back_from_the_latest_time_given():
    (job,) = _without_object(event_time="2026-01-01T07:00:00Z",
                             timestamp="2026-01-01T07:30:00Z").fetch_jobs
    assert job.window_end == datetime(2026, 1, 1, 7, 30, tzinfo=UTC)


def test_an_explicit_window_is_used_as_given():
    (job,) = _without_object(start_datetime="2025-12-31T00:00:00+01:00",
                             end_datetime="2026-01-01T00:00:00+01:00").fetch_jobs
    assert (job.window_start, job.window_end) == (datetime(2025, 12, 30, 23, tzinfo=UTC),
                                                  datetime(2025, 12, 31, 23, tzinfo=UTC))


@pytest.mark.parametrize(("fields", "match"), [
    ({}, "object_id is required"),
    ({"start_datetime": "2026-01-01T00:00:00Z"}, "object_id is required"),
    ({"start_datetime": "2026-01-01T00:00:00Z", "end_datetime": "2025-12-01T00:00:00Z"},
     "end_datetime"),
    ({"start_datetime": "2025-01-01T00:00:00Z", "end_datetime": "2026-01-01T00:00:00Z"},
     "end_datetime"),
    ({"start_datetime": "1999-01-01T00:00:00Z", "end_datetime": "1999-01-02T00:00:00Z"},
     "start_datetime"),
    ({"event_time": "9999-12-31T23:59:59-01:00"}, "event_time"),
    ({"event_time": "2026-01-05T00:00:00Z"}, "event_time"),
])
def test_a_notification_without_object_or_plausible_time_is_422(fields, match):
    with pytest.raises(InvalidPayload, match=match):
        _without_object(**fields)


def test_a_long_user_id_that_cannot_be_namespaced_is_422():
    with pytest.raises(InvalidPayload, match="user id"):
        _without_object(event_time="2026-01-01T07:42:10Z", user_id="u" * 252)
