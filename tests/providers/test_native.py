"""The native ``auren`` route: Standard Webhooks signatures over AUREN's own body, strict."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from auren.errors import InvalidPayload, SignatureInvalid
from auren.providers.native import NativeProvider, decode_whsec
from tests.providers._helpers import NOW, RECEIVED, hmac_b64, request

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def signed(body: bytes, *, key: bytes = KEY, msg_id: str = "msg_1", stamp: int = NOW):
    signature = hmac_b64(key, f"{msg_id}.{stamp}.".encode() + body)
    return request(body, {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
                          "webhook-signature": f"v1,{signature}"})


def body(user_id: Any = "u_42", **event: Any) -> bytes:
    item = {"metric": "hrv_rmssd", "value": 61.5, "unit": "ms",
            "start": "2026-01-01T06:58:00Z", "id": "rec-1", **event}
    return json.dumps({"type": "biometrics.recorded", "user_id": user_id,
                       "events": [item]}).encode()


@pytest.mark.parametrize("key", [bytes(range(32)), bytes(range(31)), bytes(range(30)),
                                 b"auren-test-key-0123456789abcdef!"])
def test_whsec_secrets_verify_with_or_without_their_padding(key):
    padded = "whsec_" + base64.b64encode(key).decode()
    for secret in (padded, padded.rstrip("="), padded.removeprefix("whsec_").rstrip("=")):
        assert decode_whsec(secret) == key
        NativeProvider((secret,)).verify(signed(body(), key=key), NOW)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_a", "whsec_!!!!", "whsec_AAAA*AAA"])
def test_a_secret_that_is_not_base64_fails_at_start_up(secret):
    with pytest.raises(ValueError, match="STANDARD_WEBHOOK_SECRET"):
        NativeProvider((secret,))


@pytest.mark.parametrize("msg_id", ["msg\x00", " msg", "msg\n", "a.b", "m" * 257])
def test_a_webhook_id_outside_the_identifier_rule_is_401(msg_id):
    with pytest.raises(SignatureInvalid, match="webhook-id"):
        NativeProvider((SECRET,)).verify(signed(body(), msg_id=msg_id), NOW)


def test_a_valid_delivery_parses():
    delivery = NativeProvider((SECRET,)).parse(signed(body()), RECEIVED)
    (event,) = delivery.events
    assert (event.user_id, event.metric, event.value, event.unit) == ("u_42", "hrv_rmssd", 61.5,
                                                                      "ms")
    assert delivery.delivery_key == "msg_1"


@pytest.mark.parametrize("user_id", ["", " ", "   ", "u\x00", "u\x1b[31m", "\tu", "u\n",
                                     "u" * 257, 42, None])
def test_user_ids_outside_the_identifier_rule_are_422(user_id):
    with pytest.raises(InvalidPayload, match="user_id"):
        NativeProvider((SECRET,)).parse(signed(body(user_id)), RECEIVED)


@pytest.mark.parametrize("event", [
    {"start": "9999-12-31T23:59:59-01:00"},  # overflowed into a 500 before
    {"start": "0001-01-01T00:00:00+01:00"},
    {"start": "0001-01-01T00:00:00Z"},
    {"start": "9999-12-31T00:00:00Z"},
    {"start": "1999-12-31T23:59:59Z"},
    {"start": "2026-01-03T00:00:06Z"},  # more than two days after receipt
    {"end": "9999-12-31T23:59:59-01:00"},
    {"end": "2025-12-31T00:00:00Z"},  # before the start
    {"start": "２０２６-01-01T00:00:00Z"},
    {"id": "rec\x00"}, {"id": " "}, {"id": 7},
])
def test_implausible_instants_and_ids_are_422_naming_the_event(event):
    with pytest.raises(InvalidPayload, match=r"events\[0\]"):
        NativeProvider((SECRET,)).parse(signed(body(**event)), RECEIVED)
