from __future__ import annotations

import json

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.polar import PolarProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, hmac_hex, request, tamper
from tests.providers.samples.polar import BODY, PING, SECRET


def provider(secrets: str = SECRET) -> PolarProvider:
    built = PolarProvider.from_settings(Settings(_env_file=None, polar_signature_secret=secrets))
    assert built is not None
    return built


def signed(body: bytes = BODY, *, secret: str = SECRET, event: str = "EXERCISE"):
    return request(body, {"Polar-Webhook-Signature": hmac_hex(secret.encode(), body),
                          "Polar-Webhook-Event": event})


def test_not_configured_without_a_secret():
    assert PolarProvider.from_settings(Settings(_env_file=None)) is None


def test_valid_signature_passes():
    provider().verify(signed(), NOW)


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(tamper(BODY), signed().headers), id="tampered-body"),
    pytest.param(lambda: signed(secret="other"), id="wrong-secret"),
    pytest.param(lambda: request(BODY, {"polar-webhook-event": "EXERCISE"}), id="no-signature"),
    pytest.param(lambda: request(BODY, {"polar-webhook-signature": "xyz"}), id="not-hex"),
])
def test_bad_requests_are_401(req):
    with pytest.raises(SignatureInvalid):
        provider().verify(req(), NOW)


@pytest.mark.parametrize("secret", ["old", "new"])
def test_rotation_accepts_either_secret(secret):
    provider("old,new").verify(signed(secret=secret), NOW)


def test_signed_ping_is_answered_200():
    answer = provider().handshake(signed(PING, event="PING"))
    assert answer is not None and answer.status == 200


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(PING, {"polar-webhook-event": "PING"}), id="header-and-body"),
    pytest.param(lambda: request(PING), id="body-only"),
    pytest.param(lambda: request(b"", {"polar-webhook-event": "ping"}), id="header-only"),
])
def test_unsigned_ping_is_answered_200(req):
    answer = provider().handshake(req())
    assert answer is not None and answer.status == 200


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(PING, {"polar-webhook-event": "PING",
                                        "polar-webhook-signature": "00" * 32}), id="wrong"),
    pytest.param(lambda: signed(PING, secret="other", event="PING"), id="other-secret"),
    pytest.param(lambda: request(PING, {"polar-webhook-signature": ""}), id="empty"),
])
def test_badly_signed_ping_is_401(req):
    with pytest.raises(SignatureInvalid):
        provider().handshake(req())


def test_other_events_are_not_a_handshake():
    assert provider().handshake(signed()) is None
    assert provider().handshake(request(b"not json")) is None


def test_parse_exercise():
    delivery = provider().parse(signed(), RECEIVED)
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.object_id) == ("EXERCISE", "Kq83zP")
    assert (job.user_id, job.provider_user_id) == ("polar:70012", "70012")
    assert job.params == {"url": "https://www.polaraccesslink.com/v3/exercises/Kq83zP",
                          "timestamp": "2026-01-01T10:15:02.000000Z"}


def test_daily_event_uses_the_date_and_a_retry_is_the_same_job():
    body = {"event": "SLEEP", "user_id": 70012, "date": "2026-01-01",
            "timestamp": "2026-01-01T10:15:02Z",
            "url": "https://www.polaraccesslink.com/v3/users/sleep/2026-01-01"}
    (job,) = provider().parse(request(json.dumps(body).encode()), RECEIVED).fetch_jobs
    assert (job.kind, job.object_id) == ("SLEEP", "2026-01-01")
    body["timestamp"] = "2026-01-01T10:20:02Z"
    (retry,) = provider().parse(request(json.dumps(body).encode()), RECEIVED).fetch_jobs
    assert retry.job_id == job.job_id


def test_ping_reaching_parse_stores_nothing():
    delivery = provider().parse(request(PING), RECEIVED)
    assert (delivery.events, delivery.fetch_jobs) == ([], [])


@pytest.mark.parametrize(("field", "value"), [("user_id", None), ("event", ""),
                                              ("url", "http://example.com/x"),
                                              ("date", "01/01/2026"), ("timestamp", 5)])
def test_wrong_fields_are_422(field, value):
    body = json.loads(BODY)
    body[field] = value
    if field == "date":
        del body["entity_id"]
    with pytest.raises(InvalidPayload, match=field):
        provider().parse(request(json.dumps(body).encode()), RECEIVED)


def test_malformed_body_is_400():
    with pytest.raises(MalformedPayload):
        provider().parse(request(b"[]"), RECEIVED)


@pytest.mark.parametrize("url", [
    "https://www.polaraccesslink.com/v3/exercises/Kq83zP",
    "https://WWW.POLARACCESSLINK.COM/v3/exercises/Kq83zP",
    "https://www.polaraccesslink.com:443/v3/exercises/Kq83zP",
])
def test_url_on_polars_api_host_is_accepted(url):
    body = {**json.loads(BODY), "url": url}
    (job,) = provider().parse(request(json.dumps(body).encode()), RECEIVED).fetch_jobs
    assert job.params["url"] == url


@pytest.mark.parametrize("url", [
    "https://evil.example/v3/exercises/Kq83zP",
    "https://polaraccesslink.com.evil.example/v3/x",
    "https://api.polaraccesslink.com/v3/x",  # a subdomain is another host
    "https://polaraccesslink.com/v3/x",
    "http://www.polaraccesslink.com/v3/x",
    "https://www.polaraccesslink.com:8443/v3/x",
    "https://user:pw@www.polaraccesslink.com/v3/x",
    "https://www.polaraccesslink.com\u3002evil.example/v3/x",
    "https://[::1/v3/x",
])
def test_url_anywhere_else_is_422(url):
    body = {**json.loads(BODY), "url": url}
    with pytest.raises(InvalidPayload, match="url"):
        provider().parse(request(json.dumps(body).encode()), RECEIVED)


def test_the_api_host_is_a_setting():
    polar = PolarProvider.from_settings(Settings(_env_file=None, polar_signature_secret=SECRET,
                                                 polar_api_host="sandbox.polar.test"))
    assert polar is not None
    body = {**json.loads(BODY), "url": "https://sandbox.polar.test/v3/exercises/Kq83zP"}
    assert polar.parse(request(json.dumps(body).encode()), RECEIVED).fetch_jobs
    with pytest.raises(InvalidPayload, match="url"):
        polar.parse(request(BODY), RECEIVED)


@pytest.mark.parametrize(("field", "value"), [
    ("timestamp", "9999-12-31T23:59:59-01:00"), ("timestamp", "1999-12-31T00:00:00Z"),
    ("date", "1970-01-01"), ("date", "2100-01-01"),
])
def test_instants_and_days_outside_the_plausible_range_are_422(field, value):
    body = {**json.loads(BODY), field: value}
    if field == "date":
        del body["entity_id"]
    with pytest.raises(InvalidPayload, match=field):
        provider().parse(request(json.dumps(body).encode()), RECEIVED)
