from __future__ import annotations

import json

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.base import body_digest
from auren.providers.whoop import WhoopProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, hmac_b64, request, tamper
from tests.providers.samples.whoop import BODY, NOW_MS, SECRET


def provider(secrets: str = SECRET) -> WhoopProvider:
    built = WhoopProvider.from_settings(Settings(_env_file=None, whoop_client_secret=secrets))
    assert built is not None
    return built


def signed(body: bytes = BODY, *, secret: str = SECRET, stamp_ms: int = NOW_MS):
    stamp = str(stamp_ms)
    return request(body, {"X-WHOOP-Signature-Timestamp": stamp,
                          "X-WHOOP-Signature": hmac_b64(secret.encode(), stamp.encode() + body)})


def test_not_configured_without_a_secret():
    assert WhoopProvider.from_settings(Settings(_env_file=None)) is None


def test_fixed_vector():
    body = b'{"user_id":48210,"id":"x","type":"sleep.updated","trace_id":"t-1"}'
    req = request(body, {"x-whoop-signature-timestamp": "1767225600000",
                         "x-whoop-signature": "PKBN7ON26KZhGPT1ivnwBJ1zs4Nb+oiKJq+4aHHxy64="})
    provider("whoop-secret").verify(req, NOW)


def test_valid_signature_passes():
    provider().verify(signed(), NOW)


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(tamper(BODY), signed().headers), id="tampered-body"),
    pytest.param(lambda: signed(secret="other"), id="wrong-secret"),
    pytest.param(lambda: request(BODY, {"x-whoop-signature-timestamp": str(NOW_MS)}),
                 id="no-signature"),
    pytest.param(lambda: request(BODY, {"x-whoop-signature":
                                        signed().headers["x-whoop-signature"]}),
                 id="no-timestamp"),
    pytest.param(lambda: request(BODY), id="no-headers"),
    pytest.param(lambda: request(BODY, {**signed().headers,
                                        "x-whoop-signature-timestamp": str(NOW_MS + 1)}),
                 id="timestamp-not-the-signed-one"),
    pytest.param(lambda: request(BODY, {**signed().headers, "x-whoop-signature": "%%%"}),
                 id="not-base64"),
    pytest.param(lambda: request(BODY, {**signed().headers,
                                        "x-whoop-signature-timestamp": "2026-01-01T00:00:00Z"}),
                 id="timestamp-not-an-integer"),
])
def test_bad_requests_are_401(req):
    with pytest.raises(SignatureInvalid):
        provider().verify(req(), NOW)


@pytest.mark.parametrize("secret", ["old", "new"])
def test_rotation_accepts_either_secret(secret):
    provider("old,new").verify(signed(secret=secret), NOW)


@pytest.mark.parametrize(("offset_s", "ok"), [(-301, False), (301, False), (-299, True),
                                              (299, True)])
def test_replay_window_is_in_seconds_of_a_millisecond_stamp(offset_s, ok):
    req = signed(stamp_ms=NOW_MS + offset_s * 1000)
    if ok:
        provider().verify(req, NOW)
    else:
        with pytest.raises(SignatureInvalid):
            provider().verify(req, NOW)


def test_no_handshake():
    assert provider().handshake(request(method="GET")) is None


def test_parse_makes_one_fetch_job_keyed_by_trace_id():
    delivery = provider().parse(signed(), RECEIVED)
    assert delivery.delivery_key == "8d2c1e77-0b9a-4f3e-a6d5-91c0e4b7a222"
    (job,) = delivery.fetch_jobs
    assert (job.user_id, job.provider_user_id) == ("whoop:48210", "48210")
    assert job.kind == "recovery.updated"
    assert job.object_id == "3f6b2a90-1c4e-4d7a-9b1e-5a0c2d9e7f11"
    assert job.params == {"trace_id": "8d2c1e77-0b9a-4f3e-a6d5-91c0e4b7a222"}
    assert job.job_id == provider().parse(request(BODY), RECEIVED).fetch_jobs[0].job_id


def test_v1_integer_ids_and_a_missing_trace_id():
    body = b'{"user_id": 7, "id": 1234567, "type": "sleep.updated"}'
    delivery = provider().parse(request(body), RECEIVED)
    assert delivery.delivery_key == body_digest(body)
    assert delivery.fetch_jobs[0].object_id == "1234567"


def test_malformed_body_is_400():
    with pytest.raises(MalformedPayload):
        provider().parse(request(b"\xff\xfe"), RECEIVED)


@pytest.mark.parametrize(("field", "value"), [("user_id", True), ("id", None), ("type", 5.5),
                                              ("trace_id", "")])
def test_wrong_fields_are_422(field, value):
    body = json.loads(BODY)
    body[field] = value
    with pytest.raises(InvalidPayload, match=field):
        provider().parse(request(json.dumps(body).encode()), RECEIVED)
