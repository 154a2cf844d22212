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
from auren.events import (
    INVALID_ITEM,
    Delivery,
    FetchJob,
    MeasurementError,
    fetch_job_id,
    item_error,
)
from auren.providers._common import (
    EventBatch,
    Field,
    Subject,
    add_fields,
    any_id,
    array,
    calendar_date,
    encode,
    ident,
    local_day,
    local_time,
    namespaced,
    optional,
    plausible_day,
    query_secret,
    reason_of,
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
            # A notification knows only the provider's user; the fetcher stores the
            # events under the person whose connection that user is.
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


# --- records fetched from the Web API (pure) ----------------------------------------------------
#
# Times are the person's wall-clock times without an offset (the profile's
# ``offsetFromUTCMillis`` places them); ``offset_min`` is that offset in minutes. Sleep minutes
# are rounded; skin temperature ``nightlyRelative`` is a deviation from the person's baseline;
# HRV ``dailyRmssd`` is RMSSD; distances are kilometres (no ``Accept-Language`` is sent, which
# is Fitbit's metric system). Every value of one day is recorded under the day's date as its
# record id, so the same value read through two endpoints (resting heart rate: the activity
# summary and the heart-rate series) is one event.

SUMMARY_FIELDS: tuple[Field, ...] = (
    ("steps", "steps", "{steps}"),
    ("activityCalories", "active_energy", "kcal"),
    ("caloriesOut", "total_energy", "kcal"),
    ("restingHeartRate", "resting_heart_rate", "/min"),
)
SLEEP_FIELDS: tuple[Field, ...] = (
    ("minutesAsleep", "sleep_duration", "min"),
    ("timeInBed", "time_in_bed", "min"),
    ("efficiency", "sleep_efficiency", "%"),
    ("levels.summary.deep.minutes", "sleep_deep", "min"),
    ("levels.summary.light.minutes", "sleep_light", "min"),
    ("levels.summary.rem.minutes", "sleep_rem", "min"),
    ("levels.summary.wake.minutes", "sleep_awake", "min"),
)
# Daily series: (answer key, value path, metric, unit).
DAILY_SERIES: dict[str, tuple[str, str, str, str]] = {
    "hrv": ("hrv", "value.dailyRmssd", "hrv_rmssd", "ms"),
    "temp": ("tempSkin", "value.nightlyRelative", "temperature_deviation", "Cel"),
    "br": ("br", "value.breathingRate", "respiratory_rate", "/min"),
    "heart": ("activities-heart", "value.restingHeartRate", "resting_heart_rate", "/min"),
    "spo2": ("", "value.avg", "spo2", "%"),
}


def activity_summary(day: str, answer: Any, offset_min: int, subject: Subject,
                     batch: EventBatch) -> None:
    """``activities/date/{day}.json``. Fitbit answers a day without data with zeros and no
    resting heart rate: such a day records nothing rather than zero steps."""
    summary = answer.get("summary") if isinstance(answer, dict) else None
    if not isinstance(summary, dict):
        batch.skip("activities", INVALID_ITEM, "summary must be an object")
        return
    if not summary.get("steps") and summary.get("restingHeartRate") is None:
        return
    start, end = local_day(day, offset_min)
    add_fields(batch, subject, summary, SUMMARY_FIELDS, name="activities", start=start, end=end,
               record=day)
    distances = summary.get("distances")
    total = next((d.get("distance") for d in distances if isinstance(d, dict)
                  and d.get("activity") == "total"), None) if isinstance(distances, list) else None
    if total is not None:
        batch.measure(subject, "activities.distances", "distance", total, "km",
                      field="distances.total", start=start, end=end, record=day)


def sleep_logs(answer: Any, offset_min: int, subject: Subject, batch: EventBatch) -> None:
    """``sleep/date/…json`` (by date, by range, or the list): one set of events per log."""
    logs = answer.get("sleep") if isinstance(answer, dict) else None
    if not isinstance(logs, list):
        batch.skip("sleep", INVALID_ITEM, "sleep must be an array")
        return
    for index, log in enumerate(logs):
        try:
            if not isinstance(log, dict):
                raise MeasurementError("must be an object", INVALID_ITEM)
            start = local_time(log.get("startTime"), offset_min, "startTime")
            end = local_time(log.get("endTime"), offset_min, "endTime")
            add_fields(batch, subject, log, SLEEP_FIELDS, name="sleep", start=start, end=end,
                       record=optional(any_id, log, "logId"))
        except ValueError as exc:
            batch.skip("sleep", reason_of(exc), f"sleep[{index}]: {exc}")


def daily_series(kind: str, answer: Any, offset_min: int, subject: Subject,
                 batch: EventBatch) -> None:
    """A day-by-day series (``hrv``, ``temp``, ``br``, ``heart``, ``spo2``): one event per day,
    spanning the person's day."""
    key, path, metric, unit = DAILY_SERIES[kind]
    items: Any = answer if not key else (answer.get(key) if isinstance(answer, dict) else None)
    if isinstance(items, dict):
        items = [items] if items else []  # SpO2 of a single day is one object (or {})
    if not isinstance(items, list):
        batch.skip(kind, INVALID_ITEM, f"{key or kind} must be an array")
        return
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise MeasurementError("must be an object", INVALID_ITEM)
            day = calendar_date(item, "dateTime")
            start, end = local_day(day, offset_min)
            add_fields(batch, subject, item, ((path, metric, unit),), name=kind, start=start,
                       end=end, record=day)
        except ValueError as exc:
            batch.skip(kind, reason_of(exc), f"{kind}[{index}]: {exc}")
