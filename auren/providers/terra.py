"""Terra (aggregator) webhooks: full, already normalized data in the body.

The signature header (``terra-signature`` in the docs; the platform sends ``x-terra-signature``
plus the deprecated duplicate) reads ``t=<unix seconds>,v1=<hex>``, possibly with several ``v1``
entries while a secret rotates; any one matching passes. ``v1`` is HMAC-SHA256, keyed with the
destination's signing secret, of ``"{t}.{raw body}"``.

The deduplication key is the digest of the signed body, not ``x-terra-trace-id``: that header is
not signed, so whoever replays one signed delivery could pair it with the trace id of a delivery
still to come and have that one answered as a duplicate and dropped. A retry repeats the body
byte for byte and gets the same key; the chunks of one backfill differ in their bodies.
(``terra-reference`` is no key either: every chunk of one backfill shares it.)

Body::

    {"type": "sleep", "user": {"user_id": "9f1e…", "reference_id": "acct_1234", …},
     "data": [{"metadata": {"start_time": "…", "end_time": "…", "summary_id": "s-771"},
               "heart_rate_data": {"summary": {"avg_hrv_rmssd": 61.5, …}}, …}],
     "version": "2022-03-16"}

``sleep``, ``daily``, ``activity`` and ``body`` become canonical events; the other data types
are counted as ignored, and control events (``auth``, ``healthcheck``, …) carry no data. A type
AUREN does not know is accepted and ignored too: answering 4xx would only make Terra retry it
for a day. Field units are in the field names; ``temperature_data.delta`` is a deviation.
Total sleep is ``asleep.duration_asleep_state_seconds`` (asleep in any stage);
``other.duration_in_bed_seconds`` is kept apart as ``time_in_bed``.

The heart-rate and HRV samples of ``heart_rate_data.detailed`` (``hr_samples`` in bpm,
``hrv_samples_rmssd`` and ``hrv_samples_sdnn`` in ms) are kept, one event per sample at its own
``timestamp`` (no end; a sample without a time zone, which Terra sends when it only knows the
local time, is skipped rather than guessed).

Terra retries every answer of 400 and above for a day, so only an envelope AUREN cannot use
(no user, ``data`` not an array, too many measurements) is refused. Within it, a measurement
that cannot be stored (a value out of range, a malformed time, an item of the wrong shape) is
skipped and reported in the answer's ``skipped`` by its field path, and the rest is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

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
    Subject,
    any_id,
    array,
    dig,
    encode,
    ident,
    namespaced,
    optional,
    reason_of,
    timestamp,
)
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    any_matches,
    body_digest,
    check_tolerance,
    hexdecode,
    hmac_sha256,
    load_json,
    parse_epoch,
    require_dict,
)

# (dotted path in a data item, metric, unit)
Field = tuple[str, str, str]

_HR = "heart_rate_data.summary"
_HEART: tuple[Field, ...] = (
    (f"{_HR}.avg_hr_bpm", "heart_rate", "/min"),
    (f"{_HR}.resting_hr_bpm", "resting_heart_rate", "/min"),
    (f"{_HR}.avg_hrv_rmssd", "hrv_rmssd", "ms"),
    (f"{_HR}.avg_hrv_sdnn", "hrv_sdnn", "ms"),
)
_CALORIES: tuple[Field, ...] = (
    ("calories_data.total_burned_calories", "total_energy", "kcal"),
    ("calories_data.net_activity_calories", "active_energy", "kcal"),
)
_OXYGEN: tuple[Field, ...] = (
    ("oxygen_data.avg_saturation_percentage", "spo2", "%"),
    ("oxygen_data.vo2max_ml_per_min_per_kg", "vo2_max", "mL/min/kg"),
)
_ASLEEP = "sleep_durations_data.asleep"

FIELDS: dict[str, tuple[Field, ...]] = {
    "sleep": (
        *_HEART,
        (f"{_ASLEEP}.duration_asleep_state_seconds", "sleep_duration", "s"),
        (f"{_ASLEEP}.duration_deep_sleep_state_seconds", "sleep_deep", "s"),
        (f"{_ASLEEP}.duration_light_sleep_state_seconds", "sleep_light", "s"),
        (f"{_ASLEEP}.duration_REM_sleep_state_seconds", "sleep_rem", "s"),
        ("sleep_durations_data.awake.duration_awake_state_seconds", "sleep_awake", "s"),
        ("sleep_durations_data.other.duration_in_bed_seconds", "time_in_bed", "s"),
        ("sleep_durations_data.sleep_efficiency", "sleep_efficiency", "%"),
        ("respiration_data.breaths_data.avg_breaths_per_min", "respiratory_rate", "/min"),
        ("respiration_data.oxygen_saturation_data.avg_saturation_percentage", "spo2", "%"),
        ("temperature_data.delta", "temperature_deviation", "Cel"),
    ),
    "daily": (
        *_HEART,
        ("distance_data.steps", "steps", "{steps}"),
        ("distance_data.distance_meters", "distance", "m"),
        *_CALORIES,
        *_OXYGEN,
    ),
    "activity": (
        *_HEART,
        ("distance_data.summary.steps", "steps", "{steps}"),
        ("distance_data.summary.distance_meters", "distance", "m"),
        *_CALORIES,
    ),
    "body": _OXYGEN,
}

# Sample lists inside a data item: (dotted path of the list, time key, fields of one sample).
Samples = tuple[str, str, tuple[Field, ...]]
_DETAILED = "heart_rate_data.detailed"
_HEART_SAMPLES: tuple[Samples, ...] = (
    (f"{_DETAILED}.hr_samples", "timestamp", (("bpm", "heart_rate", "/min"),)),
    (f"{_DETAILED}.hrv_samples_rmssd", "timestamp", (("hrv_rmssd", "hrv_rmssd", "ms"),)),
    (f"{_DETAILED}.hrv_samples_sdnn", "timestamp", (("hrv_sdnn", "hrv_sdnn", "ms"),)),
)
# Intraday series: capped by MAX_SAMPLES_PER_DELIVERY, beyond it skipped and reported.
INTRADAY = frozenset(path for path, _, _ in _HEART_SAMPLES)
SAMPLES: dict[str, tuple[Samples, ...]] = {
    "sleep": _HEART_SAMPLES,
    "daily": _HEART_SAMPLES,
    "activity": _HEART_SAMPLES,
    "body": (
        ("measurements_data.measurements", "measurement_time", (
            ("weight_kg", "weight", "kg"),
            ("bodyfat_percentage", "body_fat", "%"),
        )),
        ("temperature_data.body_temperature_samples", "timestamp", (
            ("temperature_celsius", "body_temperature", "Cel"),
        )),
        ("temperature_data.skin_temperature_samples", "timestamp", (
            ("temperature_celsius", "skin_temperature", "Cel"),
        )),
        ("blood_pressure_data.blood_pressure_samples", "timestamp", (
            ("systolic_bp", "blood_pressure_systolic", "mm[Hg]"),
            ("diastolic_bp", "blood_pressure_diastolic", "mm[Hg]"),
        )),
    ),
}

# Control events about a connection itself: each becomes a job for the fetcher.
LIFECYCLE = frozenset({"auth", "deauth", "access_revoked"})
CONTROL_TYPES = frozenset({
    "auth", "deauth", "user_reauth", "access_revoked", "connection_error",
    "google_no_datasource", "processing", "large_request_processing", "large_request_sending",
    "rate_limit_hit", "healthcheck", "permission_change",
})

_MAX_SIGNATURE_PARTS = 32


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body).hex()


class TerraProvider(WebhookProvider):
    name = "terra"
    secrets_field = "terra_signing_secret"
    signature_headers = ("terra-signature",)
    option_fields: ClassVar[dict[str, str]] = {
        "tolerance_s": "signature_tolerance_s",
        "max_events": "max_events_per_delivery",
        "max_samples": "max_samples_per_delivery",
    }

    def __init__(self, secrets: tuple[str, ...], *, tolerance_s: int = 300,
                 max_events: int = 5000, max_samples: int = 20_000) -> None:
        self._keys = tuple(encode(s) for s in secrets)
        self._tolerance_s = tolerance_s
        self._max_events = max_events
        self._max_samples = max_samples

    def verify(self, request: WebhookRequest, now: float) -> None:
        header = request.header("x-terra-signature", "terra-signature")
        if not header:
            raise SignatureInvalid("missing terra-signature header")
        stamp: str | None = None
        presented: list[bytes] = []
        for part in header.split(",", _MAX_SIGNATURE_PARTS)[:_MAX_SIGNATURE_PARTS]:
            key, _, value = part.strip().partition("=")
            if key == "t":
                if stamp is not None:
                    raise SignatureInvalid("terra-signature has more than one t")
                stamp = value.strip()
            elif key == "v1":
                decoded = hexdecode(value)
                if decoded is not None:
                    presented.append(decoded)
        check_tolerance(parse_epoch(stamp), now, self._tolerance_s)
        # parse_epoch accepted only ASCII digits, so this is the text Terra signed.
        signed = f"{stamp}.".encode() + request.body
        expected = [hmac_sha256(key, signed) for key in self._keys]
        if not presented or not any_matches(expected, presented):
            raise SignatureInvalid("no terra-signature v1 entry matches")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        key = self._delivery_key(request)
        kind = body.get("type")
        if not isinstance(kind, str) or not 1 <= len(kind) <= 64:
            raise InvalidPayload("type must be a string of 1 to 64 characters")
        if kind in LIFECYCLE:
            return Delivery(provider=self.name, delivery_key=key,
                            fetch_jobs=[self._lifecycle(kind, body, received_at)])
        if kind not in FIELDS:
            data = body.get("data")
            ignored = len(data) if kind not in CONTROL_TYPES and isinstance(data, list) else 0
            return Delivery(provider=self.name, delivery_key=key, ignored=ignored)
        try:
            user = body.get("user")
            if not isinstance(user, dict):
                raise ValueError("user must be an object")
            provider_user_id = ident(user, "user_id")
            # An unset reference arrives as null or, from some clients, as "".
            reference = optional(any_id, user, "reference_id") if user.get("reference_id") \
                else None
            items = array(body.get("data"), "data", self._max_events)
            subject = Subject(self.name, reference or namespaced(self.name, provider_user_id),
                              provider_user_id, received_at)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        batch = EventBatch(self._max_events, self._max_samples)
        ignored = 0
        for index, item in enumerate(items):
            before = (len(batch), batch.skipped_count)
            try:
                data_item(kind, item, subject, batch, self._max_events)
            except ValueError as exc:
                # The item as a whole cannot be read (its shape, its time frame): skipped.
                batch.skip(kind, reason_of(exc), f"data[{index}]: {exc}")
            if (len(batch), batch.skipped_count) == before:
                ignored += 1
        return Delivery(provider=self.name, delivery_key=key, events=batch.all_events,
                        ignored=ignored, skipped=batch.skipped)

    def _lifecycle(self, kind: str, body: dict[str, Any], received_at: datetime) -> FetchJob:
        """A connection's life at Terra (``auth``: connected through the widget, ``deauth`` or
        ``access_revoked``: gone) as a job, so that the fetcher records it (and, for ``auth``,
        starts the history) on the same durable path as data."""
        try:
            user = body.get("user")
            if not isinstance(user, dict):
                raise ValueError("user must be an object")
            terra_user = ident(user, "user_id")
            reference = optional(any_id, user, "reference_id") if user.get("reference_id") \
                else None
            resource = optional(ident, user, "provider")
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        return FetchJob(
            job_id=fetch_job_id(self.name, terra_user, kind, reference or "", iso(received_at)),
            provider=self.name, user_id=reference or namespaced(self.name, terra_user),
            provider_user_id=terra_user, kind=kind, object_id=None,
            params={"reference_id": reference, "resource": resource}, received_at=received_at)

    @staticmethod
    def _delivery_key(request: WebhookRequest) -> str:
        # The signed body, never the unsigned x-terra-trace-id (see the module's docstring).
        return body_digest(request.body)


def data_item(kind: str, item: Any, subject: Subject, batch: EventBatch,
              max_events: int) -> None:
    """Add the events of one data item of ``kind`` (pushed, or fetched with ``to_webhook=false``).

    Raises:
        ValueError: the item as a whole cannot be read (its shape, its time frame).
    """
    if not isinstance(item, dict):
        raise MeasurementError("must be an object", INVALID_ITEM)
    metadata = item.get("metadata")
    if not isinstance(metadata, dict):
        raise MeasurementError("metadata must be an object", INVALID_ITEM)
    now = subject.received_at
    start = check_instant(timestamp(metadata, "start_time"), now, "metadata.start_time")
    end = optional(timestamp, metadata, "end_time")
    if end is not None:
        check_instant(end, now, "metadata.end_time")
    record = optional(any_id, metadata, "summary_id")
    for path, metric, unit in FIELDS[kind]:
        try:
            value = dig(item, path)
        except ValueError as exc:
            batch.skip(path, INVALID_ITEM, str(exc))
            continue
        if value is not None:
            batch.measure(subject, path, metric, value, unit, field=path, start=start,
                          end=end, record=record)
    for path, time_key, fields in SAMPLES.get(kind, ()):
        intraday = path in INTRADAY
        # An intraday list longer than the cap is cut by it (reported), not thrown away.
        limit = 2**31 if intraday else max_events
        try:
            samples = array(dig(item, path), path, limit, required=False)
        except ValueError as exc:
            batch.skip(path, INVALID_ITEM, str(exc))
            continue
        for number, sample in enumerate(samples):
            where = f"{path}[{number}]"
            if not isinstance(sample, dict):
                batch.skip(path, INVALID_ITEM, f"{where} must be an object")
                continue
            try:
                at = timestamp(sample, time_key)
            except MeasurementError as exc:
                batch.skip(path, exc.reason, f"{where}.{exc}")
                continue
            for name, metric, unit in fields:
                value = sample.get(name)
                if value is not None:
                    batch.measure(subject, f"{path}.{name}", metric, value, unit,
                                  field=f"{where}.{name}", start=at, record=record,
                                  sample=intraday)


def signed_headers(secret: str, body: bytes, *, timestamp: int,
                   trace_id: str | None = None) -> dict[str, str]:
    """Headers Terra adds to a delivery (used by the simulator)."""
    headers = {
        "terra-signature": f"t={timestamp},v1={sign(secret, timestamp, body)}",
        "content-type": "application/json",
    }
    if trace_id is not None:
        headers["x-terra-trace-id"] = trace_id
    return headers
