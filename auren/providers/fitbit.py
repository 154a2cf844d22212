"""Fitbit Web API subscriptions (legacy API): thin notifications.

``X-Fitbit-Signature`` is the base64 HMAC-SHA1 of the raw body keyed with the client secret
followed by ``&`` (an OAuth 1 signing-key habit). Fitbit sends no timestamp, so there is no
replay window; a replayed notification only schedules a fetch that is deduplicated anyway.

Adding a subscriber makes Fitbit send two ``GET ?verify=<code>``: the right code must answer 204
and a deliberately wrong one 404. Notifications must be answered 204 within 5 seconds.

Body: an array, possibly batched::

    [{"collectionType": "sleep", "date": "2026-01-01", "ownerId": "7QX3KD",
      "ownerType": "user", "subscriptionId": "u-1234-sleep"}]

Each item is one fetch job. A notification carries no id and Fitbit re-sends the same body when
the same day's data changes again, so a later change is indistinguishable from a retry; the
fetcher should treat a repeated job as "fetch again" rather than "already done".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any, ClassVar

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.events import Delivery, FetchJob, fetch_job_id, item_error
from auren.providers._common import (
    array,
    calendar_date,
    encode,
    ident,
    namespaced,
    optional,
    plausible_day,
    query_secret,
)
from auren.providers.base import (
    WITH_GET_HANDSHAKE,
    HandshakeResponse,
    WebhookProvider,
    WebhookRequest,
    any_matches,
    b64decode_strict,
    body_digest,
    load_json,
)


def _hmac_sha1(key: bytes, body: bytes) -> bytes:
    # SHA-1 is Fitbit's choice, not ours; HMAC-SHA1 is still not forgeable in practice.
    return hmac.new(key, body, hashlib.sha1).digest()


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(_hmac_sha1(secret.encode() + b"&", body)).decode()


class FitbitProvider(WebhookProvider):
    name = "fitbit"
    methods = WITH_GET_HANDSHAKE
    secrets_field = "fitbit_client_secret"
    signature_headers = ("x-fitbit-signature",)
    handshake_query = ("verify",)
    option_fields: ClassVar[dict[str, str]] = {
        "verify_code": "fitbit_verify_code",
        "max_events": "max_events_per_delivery",
    }

    def __init__(self, secrets: tuple[str, ...], *, verify_code: str | None = None,
                 max_events: int = 5000) -> None:
        self._keys = tuple(encode(s) + b"&" for s in secrets)
        self._verify_code = encode(verify_code) if verify_code else None
        self._max_events = max_events

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        matches = query_secret(request, "verify", self._verify_code)
        if matches is None:
            return None
        # 404 is how the protocol says "not this code"; Fitbit sends a wrong one on purpose.
        return HandshakeResponse(204 if matches else 404)

    def verify(self, request: WebhookRequest, now: float) -> None:
        signature = request.header("x-fitbit-signature")
        if not signature:
            raise SignatureInvalid("missing X-Fitbit-Signature header")
        presented = b64decode_strict(signature)
        expected = [_hmac_sha1(key, request.body) for key in self._keys]
        if presented is None or not any_matches(expected, [presented]):
            raise SignatureInvalid("X-Fitbit-Signature does not match")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = load_json(request.body)
        if not isinstance(body, list):
            raise MalformedPayload("body must be a JSON array")
        try:
            items = array(body, "body", self._max_events)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        if not items:
            raise InvalidPayload("body must be a non-empty array")
        jobs = []
        for index, item in enumerate(items):
            try:
                jobs.append(self._job(item, received_at))
            except ValueError as exc:
                raise item_error(index, str(exc), path="body") from None
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        fetch_jobs=jobs, success_status=204)

    def _job(self, item: Any, received_at: datetime) -> FetchJob:
        if not isinstance(item, dict):
            raise ValueError("must be an object")
        owner = ident(item, "ownerId")
        collection = ident(item, "collectionType")
        day = plausible_day(calendar_date(item, "date"), received_at, "date")
        subscription = optional(ident, item, "subscriptionId")
        owner_type = optional(ident, item, "ownerType")
        return FetchJob(
            job_id=fetch_job_id(self.name, owner, collection, day),
            provider=self.name,
            # Account linking comes later: until then a thin provider's user is namespaced.
            user_id=namespaced(self.name, owner),
            provider_user_id=owner,
            kind=collection,
            object_id=day,
            params={"subscription_id": subscription, "owner_type": owner_type},
            received_at=received_at,
        )


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """Headers Fitbit adds to a notification (used by the simulator)."""
    return {"x-fitbit-signature": sign(secret, body), "content-type": "application/json"}
