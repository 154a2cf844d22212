"""Oura API v2 webhooks: thin notifications signed with the application's client secret.

``x-oura-signature`` is the hex HMAC-SHA256, keyed with the client secret, of ``x-oura-timestamp``
followed directly by the raw body. Oura writes the hex in upper case; comparing decoded bytes
makes the case irrelevant. The timestamp's format is not documented, so Unix seconds, Unix
milliseconds and ISO 8601 are all accepted; the signature covers the header text as sent.

Creating or renewing a subscription makes Oura call ``GET ?verification_token=…&challenge=…``;
the answer echoes the challenge when the token is ``OURA_VERIFICATION_TOKEN``.

Body (ids only; the record is fetched later from ``/v2/usercollection/{data_type}/{object_id}``,
where the ``vo2_max`` type is spelled ``vO2_max``)::

    {"event_type": "update", "data_type": "daily_readiness", "object_id": "b1e0c8d2-…",
     "event_time": "2026-01-01T07:42:10+00:00", "user_id": "ou_8c31f0"}

Some integrations send notifications without ``object_id``, carrying only times. Those become
a fetch job by time window over the data type's collection: ``start_datetime`` ..
``end_datetime`` when the notification gives them (the names of Oura's own time-range query),
else the :data:`LOOKBACK` before the latest of ``event_time`` and ``timestamp``, since a ring
that synced late delivers the nights before too, and fetching a day twice costs nothing (events
are deduplicated by id). A notification with neither an object nor a time is refused (422).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
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
    MAX_TEXT,
    EventBatch,
    Field,
    Subject,
    add_fields,
    any_id,
    calendar_date,
    encode,
    header_time,
    ident,
    local_day,
    namespaced,
    optional,
    query_secret,
    reason_of,
    timestamp,
)
from auren.providers.base import (
    WITH_GET_HANDSHAKE,
    HandshakeResponse,
    WebhookProvider,
    WebhookRequest,
    any_matches,
    body_digest,
    check_tolerance,
    hexdecode,
    hmac_sha256,
    load_json,
    require_dict,
)

# How far before a notification's time a window without explicit bounds reaches.
LOOKBACK = timedelta(days=2)
# The longest explicit window accepted: a month, Oura's usual page of daily documents.
MAX_WINDOW = timedelta(days=31)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), timestamp.encode() + body).hex().upper()


class OuraProvider(WebhookProvider):
    name = "oura"
    methods = WITH_GET_HANDSHAKE
    secrets_field = "oura_client_secret"
    signature_headers = ("x-oura-signature", "x-oura-timestamp")
    handshake_query = ("verification_token", "challenge")
    option_fields: ClassVar[dict[str, str]] = {
        "verification_token": "oura_verification_token",
        "tolerance_s": "signature_tolerance_s",
    }

    def __init__(self, secrets: tuple[str, ...], *, verification_token: str | None = None,
                 tolerance_s: int = 300) -> None:
        self._keys = tuple(encode(s) for s in secrets)
        self._token = encode(verification_token) if verification_token else None
        self._tolerance_s = tolerance_s

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        # Without a configured token no challenge can be trusted, so every one is refused.
        matches = query_secret(request, "verification_token", self._token)
        if matches is None:
            return None
        if not matches:
            raise SignatureInvalid("verification_token does not match")
        challenge = request.query.get("challenge")
        if not challenge or len(challenge) > MAX_TEXT:
            raise MalformedPayload(f"challenge must be 1 to {MAX_TEXT} characters")
        return HandshakeResponse(200, {"challenge": challenge})

    def verify(self, request: WebhookRequest, now: float) -> None:
        signature = request.header("x-oura-signature")
        stamp = request.header("x-oura-timestamp")
        if not signature or not stamp:
            raise SignatureInvalid("missing x-oura-signature or x-oura-timestamp header")
        check_tolerance(header_time(stamp, "x-oura-timestamp"), now, self._tolerance_s)
        presented = hexdecode(signature)
        signed = encode(stamp.strip()) + request.body
        expected = [hmac_sha256(key, signed) for key in self._keys]
        if presented is None or not any_matches(expected, [presented]):
            raise SignatureInvalid("x-oura-signature does not match")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        try:
            user = ident(body, "user_id")
            data_type = ident(body, "data_type")
            object_id = optional(ident, body, "object_id")
            event_type = ident(body, "event_type")
            # Integrations disagree on the name of the time field; both are accepted.
            times = [check_instant(t, received_at, key) for key in ("event_time", "timestamp")
                     if (t := optional(timestamp, body, key)) is not None]
            window = None if object_id is not None else self._window(body, times, received_at)
            user_id = namespaced(self.name, user)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        event_time = times[0] if times else None
        event_text = iso(event_time) if event_time else None
        job = FetchJob(
            job_id=fetch_job_id(self.name, user, data_type, object_id or "", event_type,
                                event_text, *(iso(t) for t in window or ())),
            provider=self.name,
            # A notification knows only the provider's user; the fetcher stores the
            # events under the person whose connection that user is.
            user_id=user_id,
            provider_user_id=user,
            kind=data_type,
            object_id=object_id,
            params={"event_type": event_type, "event_time": event_text},
            received_at=received_at,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
        )
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        fetch_jobs=[job])

    @staticmethod
    def _window(body: dict[str, object], times: list[datetime],
                received_at: datetime) -> tuple[datetime, datetime]:
        """The time window to fetch when the notification names no object."""
        start = optional(timestamp, body, "start_datetime")
        end = optional(timestamp, body, "end_datetime")
        if start is not None and end is not None:
            check_instant(start, received_at, "start_datetime")
            check_instant(end, received_at, "end_datetime")
            if not timedelta(0) <= end - start <= MAX_WINDOW:
                raise ValueError(f"end_datetime must follow start_datetime by at most "
                                 f"{MAX_WINDOW.days} days")
            return start, end
        if not times:
            raise ValueError("object_id is required unless the notification gives a time "
                             "(event_time, timestamp, or start_datetime and end_datetime)")
        latest = max(times)
        return latest - LOOKBACK, latest


def signed_headers(secret: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    """Headers Oura adds to a notification (used by the simulator)."""
    stamp = str(timestamp)
    return {
        "x-oura-timestamp": stamp,
        "x-oura-signature": sign(secret, stamp, body),
        "content-type": "application/json",
    }


# --- documents fetched from the API (pure) --------------------------------------------------
#
# ``/v2/usercollection/{data_type}`` (pages of ``{"data": [...], "next_token"}``) and
# ``/v2/usercollection/{data_type}/{id}`` (one document). Durations are seconds; ``average_hrv``
# is RMSSD; ``temperature_deviation`` is a deviation from the person's baseline, never an
# absolute temperature (Oura reports none); the lowest heart rate of the night is Oura's
# resting heart rate.

# The collections AUREN reads, in the order a backfill fetches them.
COLLECTIONS = ("sleep", "daily_sleep", "daily_readiness", "daily_activity", "daily_spo2")
# Sleep periods of these types are sleep; "rest" is a rest period and "deleted" is gone.
SLEEP_TYPES = frozenset({"long_sleep", "sleep", "late_nap"})

DOCUMENT_FIELDS: dict[str, tuple[Field, ...]] = {
    "sleep": (
        ("total_sleep_duration", "sleep_duration", "s"),
        ("deep_sleep_duration", "sleep_deep", "s"),
        ("light_sleep_duration", "sleep_light", "s"),
        ("rem_sleep_duration", "sleep_rem", "s"),
        ("awake_time", "sleep_awake", "s"),
        ("time_in_bed", "time_in_bed", "s"),
        ("efficiency", "sleep_efficiency", "%"),
        ("average_hrv", "hrv_rmssd", "ms"),
        ("lowest_heart_rate", "resting_heart_rate", "/min"),
        ("average_breath", "respiratory_rate", "/min"),
    ),
    "daily_sleep": (("score", "sleep_score", "{score}"),),
    "daily_readiness": (
        ("score", "readiness_score", "{score}"),
        ("temperature_deviation", "temperature_deviation", "Cel"),
    ),
    "daily_activity": (
        ("steps", "steps", "{steps}"),
        ("active_calories", "active_energy", "kcal"),
        ("total_calories", "total_energy", "kcal"),
        ("equivalent_walking_distance", "distance", "m"),
    ),
    "daily_spo2": (("spo2_percentage.average", "spo2", "%"),),
}


def api_path(data_type: str) -> str:
    """The collection's path segment: the webhook's ``vo2_max`` is ``vO2_max`` in the API."""
    return "vO2_max" if data_type == "vo2_max" else data_type


def documents(data_type: str, docs: list[Any], subject: Subject, batch: EventBatch) -> int:
    """Add the events of ``docs`` of ``data_type``; returns the documents that carried none
    (collections AUREN has no metric for, rest periods). A document that cannot be placed in
    time is skipped and reported."""
    fields = DOCUMENT_FIELDS.get(data_type)
    ignored = 0
    for index, doc in enumerate(docs):
        before = (len(batch), batch.skipped_count)
        try:
            if not isinstance(doc, dict):
                raise MeasurementError("must be an object", INVALID_ITEM)
            if fields is None or (data_type == "sleep"
                                  and doc.get("type", "long_sleep") not in SLEEP_TYPES):
                ignored += 1
                continue
            record = optional(any_id, doc, "id")
            if data_type == "sleep":
                start = check_instant(timestamp(doc, "bedtime_start"), subject.received_at,
                                      "bedtime_start")
                end: datetime | None = check_instant(timestamp(doc, "bedtime_end"),
                                                     subject.received_at, "bedtime_end")
            else:
                # A day document: its local midnight (``timestamp``) when given, else the day's
                # midnight in UTC; it spans one day.
                moment = optional(timestamp, doc, "timestamp")
                start = moment if moment is not None else local_day(
                    calendar_date(doc, "day"), 0)[0]
                check_instant(start, subject.received_at, "day")
                end = start + timedelta(days=1)
            add_fields(batch, subject, doc, fields, name=data_type, start=start, end=end,
                       record=record)
        except ValueError as exc:
            batch.skip(data_type, reason_of(exc), f"{data_type}[{index}]: {exc}")
        if (len(batch), batch.skipped_count) == before:
            ignored += 1
    return ignored
