from __future__ import annotations

import json

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.fitbit import FitbitProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, hmac_b64, request, tamper
from tests.providers.samples.fitbit import BODY, SECRET


def provider(secrets: str = SECRET, code: str | None = "verify-me") -> FitbitProvider:
    built = FitbitProvider.from_settings(Settings(_env_file=None, fitbit_client_secret=secrets,
                                                  fitbit_verify_code=code))
    assert built is not None
    return built


def signed(body: bytes = BODY, *, secret: str = SECRET):
    # The key is the client secret followed by "&", an OAuth 1 habit Fitbit kept.
    return request(body, {"X-Fitbit-Signature": hmac_b64(secret.encode() + b"&", body, "sha1")})


def test_not_configured_without_a_secret():
    assert FitbitProvider.from_settings(Settings(_env_file=None)) is None


def test_fixed_vector():
    body = (b'[{"collectionType":"sleep","date":"2026-01-01","ownerId":"7QX3KD",'
            b'"ownerType":"user","subscriptionId":"s1"}]')
    req = request(body, {"x-fitbit-signature": "Z/lsZ0FYO1I+2ghlEEDa1bfg2W0="})
    provider("fitbit-secret").verify(req, NOW)


def test_valid_signature_passes():
    provider().verify(signed(), NOW)


@pytest.mark.parametrize("req", [
    pytest.param(lambda: request(tamper(BODY), signed().headers), id="tampered-body"),
    pytest.param(lambda: signed(secret="other"), id="wrong-secret"),
    pytest.param(lambda: request(BODY), id="no-signature"),
    pytest.param(lambda: request(BODY, {"x-fitbit-signature": "not base64!"}), id="not-base64"),
    pytest.param(lambda: request(BODY, {"x-fitbit-signature":
                                        hmac_b64(SECRET.encode(), BODY, "sha1")}),
                 id="key-without-ampersand"),
])
def test_bad_requests_are_401(req):
    with pytest.raises(SignatureInvalid):
        provider().verify(req(), NOW)


@pytest.mark.parametrize("secret", ["old", "new"])
def test_rotation_accepts_either_secret(secret):
    provider("old,new").verify(signed(secret=secret), NOW)


def test_there_is_no_replay_window():
    # Fitbit sends no timestamp: the same signed body verifies at any time.
    provider().verify(signed(), NOW + 86_400)


def test_verify_code_handshake():
    right = provider().handshake(request(method="GET", query={"verify": "verify-me"}))
    wrong = provider().handshake(request(method="GET", query={"verify": "nope"}))
    missing = provider().handshake(request(method="GET"))
    assert right is not None and right.status == 204
    assert wrong is not None and wrong.status == 404
    assert missing is not None and missing.status == 404


def test_without_a_configured_code_every_verify_is_404():
    answer = provider(code=None).handshake(request(method="GET", query={"verify": ""}))
    assert answer is not None and answer.status == 404


def test_post_is_not_a_handshake():
    assert provider().handshake(signed()) is None


def test_parse_makes_one_job_per_item_and_answers_204():
    delivery = provider().parse(signed(), RECEIVED)
    assert delivery.success_status == 204
    assert [(j.kind, j.object_id) for j in delivery.fetch_jobs] == [
        ("sleep", "2026-01-01"), ("activities", "2026-01-01")]
    job = delivery.fetch_jobs[0]
    assert (job.user_id, job.provider_user_id) == ("fitbit:7QX3KD", "7QX3KD")
    assert job.params == {"subscription_id": "u-1234-sleep", "owner_type": "user"}
    assert len({j.job_id for j in delivery.fetch_jobs}) == 2
    again = provider().parse(signed(), RECEIVED)
    assert [j.job_id for j in again.fetch_jobs] == [j.job_id for j in delivery.fetch_jobs]


@pytest.mark.parametrize("body", [b'{"collectionType": "sleep"}', b"nope"])
def test_malformed_body_is_400(body):
    with pytest.raises(MalformedPayload):
        provider().parse(request(body), RECEIVED)


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda items: items[1].update(date="2026-02-30"), r"body\[1\].*date"),
    (lambda items: items[0].update(ownerId="../x"), r"body\[0\].*ownerId"),
    (lambda items: items[0].pop("collectionType"), "collectionType"),
    (lambda items: items.append(3), r"body\[2\]"),
    (lambda items: items.clear(), "non-empty"),
])
def test_wrong_items_are_422(mutate, match):
    items = json.loads(BODY)
    mutate(items)
    with pytest.raises(InvalidPayload, match=match):
        provider().parse(request(json.dumps(items).encode()), RECEIVED)
