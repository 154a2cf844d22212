"""WHOOP developer API webhooks (v1 and v2 models): thin notifications.

``X-WHOOP-Signature`` is the base64 HMAC-SHA256, keyed with the application's client secret, of
``X-WHOOP-Signature-Timestamp`` (Unix milliseconds, signed as the text sent) followed directly
by the raw body. WHOOP documents no replay window; the common ±300 s applies.

Body (the record is fetched later: ``/v2/activity/sleep/{id}``, ``/v2/activity/workout/{id}``
or the recovery of a cycle)::

    {"user_id": 48210, "id": "3f6b2a90-…", "type": "recovery.updated", "trace_id": "8d2c1e77-…"}

``id`` is an integer in the v1 model and a UUID in v2. ``trace_id`` identifies the delivery
across WHOOP's retries and is the deduplication key.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import ClassVar

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import Delivery, FetchJob, fetch_job_id
from auren.providers._common import any_id, encode, ident, namespaced, optional
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    any_matches,
    b64decode_strict,
    body_digest,
    check_tolerance,
    hmac_sha256,
    load_json,
    parse_epoch,
    require_dict,
)


def sign(secret: str, timestamp_ms: str, body: bytes) -> str:
    return base64.b64encode(hmac_sha256(secret.encode(), timestamp_ms.encode() + body)).decode()


class WhoopProvider(WebhookProvider):
    name = "whoop"
    secrets_field = "whoop_client_secret"
    signature_headers = ("x-whoop-signature", "x-whoop-signature-timestamp")
    option_fields: ClassVar[dict[str, str]] = {"tolerance_s": "signature_tolerance_s"}

    def __init__(self, secrets: tuple[str, ...], *, tolerance_s: int = 300) -> None:
        self._keys = tuple(encode(s) for s in secrets)
        self._tolerance_s = tolerance_s

    def verify(self, request: WebhookRequest, now: float) -> None:
        signature = request.header("x-whoop-signature")
        stamp = request.header("x-whoop-signature-timestamp")
        if not signature or not stamp:
            raise SignatureInvalid(
                "missing X-WHOOP-Signature or X-WHOOP-Signature-Timestamp header")
        check_tolerance(parse_epoch(stamp, milliseconds=True), now, self._tolerance_s)
        presented = b64decode_strict(signature)
        # parse_epoch accepted only ASCII digits, so this is the text WHOOP signed.
        signed = stamp.strip().encode() + request.body
        expected = [hmac_sha256(key, signed) for key in self._keys]
        if presented is None or not any_matches(expected, [presented]):
            raise SignatureInvalid("X-WHOOP-Signature does not match")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        try:
            user = ident(body, "user_id")
            object_id = ident(body, "id")
            kind = ident(body, "type")
            trace_id = optional(any_id, body, "trace_id")
            user_id = namespaced(self.name, user)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        job = FetchJob(
            job_id=fetch_job_id(self.name, user, kind, object_id, trace_id or ""),
            provider=self.name,
            # Account linking comes later: until then a thin provider's user is namespaced.
            user_id=user_id,
            provider_user_id=user,
            kind=kind,
            object_id=object_id,
            params={"trace_id": trace_id},
            received_at=received_at,
        )
        return Delivery(provider=self.name, delivery_key=trace_id or body_digest(request.body),
                        fetch_jobs=[job])


def signed_headers(secret: str, body: bytes, *, timestamp_ms: int) -> dict[str, str]:
    """Headers WHOOP adds to a notification (used by the simulator)."""
    stamp = str(timestamp_ms)
    return {
        "x-whoop-signature-timestamp": stamp,
        "x-whoop-signature": sign(secret, stamp, body),
        "content-type": "application/json",
    }
