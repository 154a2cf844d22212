"""Polar AccessLink v3 webhooks: thin notifications that include the URL to fetch.

``Polar-Webhook-Signature`` is the hex HMAC-SHA256 of the raw body, keyed with the
``signature_secret_key`` returned (once) when the webhook was created. No timestamp is sent, so
there is no replay window; a replay only schedules a fetch that is deduplicated anyway.
``Polar-Webhook-Event`` names the event.

Creating the webhook or changing its URL makes Polar POST a ``PING`` that must be answered 200.
Sources disagree on whether the PING is signed, so it is accepted unsigned as well; it changes
nothing. A PING with a signature that does not verify is still refused.

Body::

    {"event": "EXERCISE", "user_id": 70012, "entity_id": "Kq83zP",
     "timestamp": "2026-01-01T10:15:02Z",
     "url": "https://www.polaraccesslink.com/v3/exercises/Kq83zP"}

``entity_id`` identifies an exercise; daily events (``SLEEP``, ``ACTIVITY_SUMMARY``,
``CONTINUOUS_HEART_RATE``) carry ``date`` instead, SleepWise events ``from`` and ``to``.

``url`` is accepted only on Polar's API host (``POLAR_API_HOST``, default
``www.polaraccesslink.com``), over https on the default port: the fetcher will send the user's
token to it, so a signed notification must not be able to point it anywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import orjson

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import (
    INVALID_ITEM,
    Delivery,
    FetchJob,
    MeasurementError,
    check_instant,
    fetch_job_id,
    iso,
)
from auren.providers._common import (
    EventBatch,
    Field,
    Subject,
    add_fields,
    calendar_date,
    encode,
    epoch,
    https_url,
    ident,
    local_day,
    local_time,
    namespaced,
    optional,
    plausible_day,
    text,
    timestamp,
)
from auren.providers.base import (
    HandshakeResponse,
    WebhookProvider,
    WebhookRequest,
    any_matches,
    body_digest,
    hexdecode,
    hmac_sha256,
    load_json,
    require_dict,
)

PING = "PING"
DEFAULT_API_HOST = "www.polaraccesslink.com"
# A PING body is a few dozen bytes; anything larger is not parsed twice to find out.
_MAX_PING_BYTES = 4096


def sign(secret: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), body).hex()


class PolarProvider(WebhookProvider):
    name = "polar"
    secrets_field = "polar_signature_secret"
    option_fields: ClassVar[dict[str, str]] = {"api_host": "polar_api_host"}

    def __init__(self, secrets: tuple[str, ...], *, api_host: str = DEFAULT_API_HOST) -> None:
        self._keys = tuple(encode(s) for s in secrets)
        self._api_host = api_host.lower()

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        if not _is_ping(request):
            return None
        signature = request.header("polar-webhook-signature")
        if signature is not None:
            self._check(signature, request.body)
        return HandshakeResponse(200)

    def verify(self, request: WebhookRequest, now: float) -> None:
        signature = request.header("polar-webhook-signature")
        if not signature:
            raise SignatureInvalid("missing Polar-Webhook-Signature header")
        self._check(signature, request.body)

    def _check(self, signature: str, body: bytes) -> None:
        presented = hexdecode(signature)
        expected = [hmac_sha256(key, body) for key in self._keys]
        if presented is None or not any_matches(expected, [presented]):
            raise SignatureInvalid("Polar-Webhook-Signature does not match")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        key = body_digest(request.body)
        try:
            event = ident(body, "event")
            if event == PING:
                return Delivery(provider=self.name, delivery_key=key)
            user = ident(body, "user_id")
            day = optional(calendar_date, body, "date")
            if day is not None:
                plausible_day(day, received_at, "date")
            object_id = optional(ident, body, "entity_id") or day
            url = (None if body.get("url") is None
                   else https_url(body["url"], "url", host=self._api_host))
            sent = optional(timestamp, body, "timestamp")
            if sent is not None:
                check_instant(sent, received_at, "timestamp")
            window = {name: optional(text, body, name) for name in ("from", "to")}
            user_id = namespaced(self.name, user)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        params: dict[str, str | None] = {"url": url, "timestamp": iso(sent) if sent else None}
        params.update({k: v for k, v in window.items() if v is not None})
        job = FetchJob(
            # The send time is left out: a retry may carry a new one and is still one job.
            job_id=fetch_job_id(self.name, user, event, object_id, url, window["from"],
                                window["to"]),
            provider=self.name,
            # A notification knows only the provider's user; the fetcher stores the
            # events under the person whose connection that user is.
            user_id=user_id,
            provider_user_id=user,
            kind=event,
            object_id=object_id,
            params=params,
            received_at=received_at,
        )
        return Delivery(provider=self.name, delivery_key=key, fetch_jobs=[job])


def _is_ping(request: WebhookRequest) -> bool:
    event = request.header("polar-webhook-event")
    if event is not None and event.strip().upper() == PING:
        return True
    if not request.body or len(request.body) > _MAX_PING_BYTES:
        return False
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("event") == PING


def signed_headers(secret: str, body: bytes, *, event: str) -> dict[str, str]:
    """Headers Polar adds to a notification (used by the simulator)."""
    return {
        "polar-webhook-signature": sign(secret, body),
        "polar-webhook-event": event,
        "content-type": "application/json",
    }


# --- records fetched from AccessLink (pure) -----------------------------------------------------
#
# Sleep durations are seconds and total sleep is light + deep + REM; nightly recharge's
# ``heart_rate_variability_avg`` is RMSSD (ms); skin temperature comes as an absolute value and
# a deviation from the person's baseline, two metrics never mixed; daily activity's times are
# wall-clock times without an offset (``offset_min`` places them).

NIGHT_FIELDS: tuple[Field, ...] = (
    ("light_sleep", "sleep_light", "s"),
    ("deep_sleep", "sleep_deep", "s"),
    ("rem_sleep", "sleep_rem", "s"),
    ("total_interruption_duration", "sleep_awake", "s"),
    ("sleep_score", "sleep_score", "{score}"),
)
RECHARGE_FIELDS: tuple[Field, ...] = (
    ("heart_rate_variability_avg", "hrv_rmssd", "ms"),
    ("breathing_rate_avg", "respiratory_rate", "/min"),
)
ACTIVITY_FIELDS: tuple[Field, ...] = (
    ("steps", "steps", "{steps}"),
    ("active_calories", "active_energy", "kcal"),
    ("calories", "total_energy", "kcal"),
    ("distance_from_steps", "distance", "m"),
)
SKIN_FIELDS: tuple[Field, ...] = (
    ("sleep_time_skin_temperature_celsius", "skin_temperature", "Cel"),
    ("deviation_from_baseline_celsius", "temperature_deviation", "Cel"),
)
_ASLEEP = ("light_sleep", "deep_sleep", "rem_sleep")
# A night's time frame, by the night's date: recharge and skin temperature are placed in it.
Nights = dict[str, tuple[datetime, datetime]]


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MeasurementError("must be an object", INVALID_ITEM)
    return value


def night(doc: Any, subject: Subject, batch: EventBatch, nights: Nights) -> None:
    """One night (``/v3/users/sleep/{date}`` or an item of ``nights``); remembers its time
    frame in ``nights`` for the recharge and temperature of the same date."""
    item = _object(doc)
    day = calendar_date(item, "date")
    start = timestamp(item, "sleep_start_time")
    end = timestamp(item, "sleep_end_time")
    nights[day] = (start, end)
    record = f"sleep:{day}"
    add_fields(batch, subject, item, NIGHT_FIELDS, name="sleep", start=start, end=end,
               record=record)
    stages = [item.get(k) for k in _ASLEEP]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in stages):
        batch.measure(subject, "sleep.total", "sleep_duration", sum(stages), "s",
                      field="light + deep + REM", start=start, end=end, record=record)


def _night_or_day(day: str, nights: Nights) -> tuple[datetime, datetime]:
    return nights.get(day) or local_day(day, 0)


def recharge(doc: Any, subject: Subject, batch: EventBatch, nights: Nights) -> None:
    item = _object(doc)
    day = calendar_date(item, "date")
    start, end = _night_or_day(day, nights)
    add_fields(batch, subject, item, RECHARGE_FIELDS, name="nightly-recharge", start=start,
               end=end, record=f"recharge:{day}")


def skin_temperature(doc: Any, subject: Subject, batch: EventBatch, nights: Nights) -> None:
    item = _object(doc)
    day = calendar_date(item, "sleep_date")
    start, end = _night_or_day(day, nights)
    add_fields(batch, subject, item, SKIN_FIELDS, name="skintemperature", start=start, end=end,
               record=f"skin:{day}")


def spo2_test(doc: Any, subject: Subject, batch: EventBatch) -> None:
    item = _object(doc)
    at = epoch(item.get("test_time"), "test_time")
    batch.measure(subject, "spo2.blood_oxygen_percent", "spo2", item.get("blood_oxygen_percent"),
                  "%", field="blood_oxygen_percent", start=at,
                  record=f"spo2:{int(at.timestamp())}")


def activity(doc: Any, offset_min: int, subject: Subject, batch: EventBatch) -> None:
    item = _object(doc)
    start = local_time(item.get("start_time"), offset_min, "start_time")
    end = local_time(item.get("end_time"), offset_min, "end_time")
    add_fields(batch, subject, item, ACTIVITY_FIELDS, name="activity", start=start, end=end,
               record=f"activity:{start.date().isoformat()}")

