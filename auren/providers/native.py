"""The native ``auren`` route: Standard Webhooks v1 signatures over AUREN's own body.

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (a
space-separated list of ``v1,<base64>``); the signed content is ``{id}.{timestamp}.{raw body}``
and the key is the base64 part of ``whsec_<base64>`` (padding optional, as the reference
library accepts it). Any matching ``v1`` entry passes, which is what makes zero-downtime
rotation work; other versions (``v1a``) are ignored.

The route is strict: one invalid event refuses the whole delivery with a 422 naming it, since
the sender is AUREN's own format and can fix it. Ids follow the identifier rule and instants
the plausible range of :mod:`auren.events`.

Body::

    {"type": "biometrics.recorded", "user_id": "u_42",
     "events": [{"metric": "hrv_rmssd", "value": 61.5, "unit": "ms",
                 "start": "2026-01-01T06:58:00Z", "end": null, "id": "rec-1"}]}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from typing import Any, ClassVar

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import Delivery, identifier, is_identifier, item_error, make_event, parse_time
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    any_matches,
    b64decode_strict,
    check_tolerance,
    hmac_sha256,
    load_json,
    parse_epoch,
    require_dict,
)

EVENT_TYPE = "biometrics.recorded"


def decode_whsec(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional).

    The padding may be left out: secrets are often copied without their trailing ``=``, and the
    reference library pads them back. The alphabet is still checked strictly.
    """
    raw = secret.strip().removeprefix("whsec_")
    raw += "=" * (-len(raw) % 4)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("STANDARD_WEBHOOK_SECRET must be whsec_<base64>") from exc
    if not key:
        raise ValueError("STANDARD_WEBHOOK_SECRET must not be empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()


def _mac(base: hmac.HMAC, message: bytes) -> bytes:
    mac = base.copy()
    mac.update(message)
    return mac.digest()


class NativeProvider(WebhookProvider):
    name = "auren"
    secrets_field = "standard_webhook_secret"
    signature_headers = ("webhook-id", "webhook-timestamp", "webhook-signature")
    option_fields: ClassVar[dict[str, str]] = {
        "tolerance_s": "signature_tolerance_s",
        "max_events": "max_events_per_delivery",
    }

    def __init__(self, secrets: tuple[str, ...], *, tolerance_s: int = 300,
                 max_events: int = 5000) -> None:
        # Keyed HMAC states prepared once; each message copies one (the key schedule is not
        # redone per webhook).
        self._macs = tuple(hmac.new(decode_whsec(s), digestmod=hashlib.sha256) for s in secrets)
        self._tolerance_s = tolerance_s
        self._max_events = max_events

    def verify(self, request: WebhookRequest, now: float) -> None:
        msg_id = request.header("webhook-id")
        signature = request.header("webhook-signature")
        if not msg_id or not signature:
            raise SignatureInvalid("missing webhook-id or webhook-signature header")
        if not is_identifier(msg_id) or "." in msg_id:
            raise SignatureInvalid("invalid webhook-id")
        timestamp = parse_epoch(request.header("webhook-timestamp"))
        check_tolerance(timestamp, now, self._tolerance_s)
        presented = []
        for entry in signature.split(" ")[:16]:
            version, _, value = entry.partition(",")
            if version == "v1":
                decoded = b64decode_strict(value)
                if decoded is not None:
                    presented.append(decoded)
        signed = f"{msg_id}.{int(timestamp)}.".encode() + request.body
        expected = [_mac(base, signed) for base in self._macs]
        if not presented or not any_matches(expected, presented):
            raise SignatureInvalid("no webhook-signature entry matches")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        if body.get("type") != EVENT_TYPE:
            raise InvalidPayload(f"type must be {EVENT_TYPE!r}")
        try:
            user_id = identifier(body.get("user_id"), "user_id")
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        items = body.get("events")
        if not isinstance(items, list) or not items:
            raise InvalidPayload("events must be a non-empty array")
        if len(items) > self._max_events:
            raise InvalidPayload(f"at most {self._max_events} events per delivery")
        events = [self._event(i, item, user_id, received_at) for i, item in enumerate(items)]
        return Delivery(provider=self.name, delivery_key=str(request.header("webhook-id")),
                        events=events)

    def _event(self, index: int, item: Any, user_id: str, received_at: datetime) -> Any:
        if not isinstance(item, dict):
            raise item_error(index, "must be an object")
        try:
            metric = item["metric"]
            unit = item["unit"]
            if not isinstance(metric, str) or not isinstance(unit, str):
                raise ValueError("metric and unit must be strings")
            start = parse_time(item["start"])
            end_text = item.get("end")
            end = parse_time(end_text) if end_text is not None else None
            record_id = item.get("id")
            if record_id is not None:
                identifier(record_id, "id")
            return make_event(provider=self.name, user_id=user_id, provider_user_id=user_id,
                              metric=metric, value=item.get("value"), unit=unit, start=start,
                              end=end, source_record_id=record_id, received_at=received_at)
        except KeyError as exc:
            raise item_error(index, f"missing {exc.args[0]}") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise item_error(index, str(exc)) from None


def signed_headers(secret: str, body: bytes, *, msg_id: str, timestamp: int) -> dict[str, str]:
    """Headers a Standard Webhooks sender adds (used by the simulator)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(decode_whsec(secret), msg_id, timestamp, body),
        "content-type": "application/json",
    }


