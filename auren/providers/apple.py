"""Apple Health through the Health Auto Export (HAE) iOS app's "REST API" automation.

HealthKit has no cloud API; the app on the phone posts the data itself, in full. It signs
nothing: the user configures a header, ``api-key: <key>`` or ``Authorization: Bearer <key>``,
compared here in constant time against every key in ``HAE_API_KEYS``. An entry written
``user_id:key`` binds the key to one AUREN user; an unbound key names the user per request in
the ``user_id`` query parameter or the ``x-auren-user-id`` header.

Body (JSON export; the CSV export arrives as multipart and is refused with 415)::

    {"data": {"metrics": [
        {"name": "heart_rate", "units": "count/min",
         "data": [{"date": "2026-01-01 07:00:00 +0100", "Min": 52, "Avg": 58.4, "Max": 71}]},
        {"name": "heart_rate_variability", "units": "ms",
         "data": [{"date": "2026-01-01 06:58:12 +0100", "qty": 44.7}]}],
      "workouts": []}}

Units are whatever the user picked in the app, spelled as HealthKit prints them (``count/min``,
``ms``, ``%``, ``degC``, ``kcal``, ``kJ``, ``km``, ``mi``, ``hr``, ``mL/min·kg``…; see
:mod:`auren.events`), so every point is converted from its metric's ``units``. Apple's HRV is
SDNN and lands in ``hrv_sdnn``, never beside the RMSSD of the others. HAE sends dozens of
metric types; those AUREN has no metric for are counted as ignored. ``basal_energy_burned`` is
one of them: it is neither active nor total energy.

An export is many metrics at once and the phone re-sends a refused export forever, so a metric
whose unit AUREN cannot convert, a point whose value or time is invalid, or an entry of the
wrong shape is skipped and reported in the answer's ``skipped`` (by HAE's metric name, with a
reason), and everything else of the export is stored. Only an export AUREN cannot read at all
(not JSON, no ``data`` object, ``data.metrics`` not an array) or one larger than
``MAX_EVENTS_PER_DELIVERY`` is refused.

Sleep (aggregated ``sleep_analysis``, hours by default): total sleep is ``totalSleep``; an
export without it gives the asleep stages (``asleep`` + ``core`` + ``deep`` + ``rem``; in older
versions ``asleep`` alone is the total). ``inBed`` is kept apart as ``time_in_bed`` over
``inBedStart``..``inBedEnd``, never as sleep.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from auren.errors import (
    Forbidden,
    InvalidPayload,
    SignatureInvalid,
    UnsupportedMediaType,
)
from auren.events import (
    INVALID_ITEM,
    INVALID_TIME,
    UNKNOWN_UNIT,
    Delivery,
    MeasurementError,
    convertible,
    identifier,
    parse_time,
)
from auren.providers._common import EventBatch, Subject, array, encode, reason_of
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    body_digest,
    load_json,
    require_dict,
)

HAE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"

# HAE name → (metric, field holding the value)
SIMPLE_METRICS: dict[str, tuple[str, str]] = {
    "heart_rate": ("heart_rate", "Avg"),
    "heart_rate_variability": ("hrv_sdnn", "qty"),
    "resting_heart_rate": ("resting_heart_rate", "qty"),
    "blood_oxygen_saturation": ("spo2", "qty"),
    "respiratory_rate": ("respiratory_rate", "qty"),
    "body_temperature": ("body_temperature", "qty"),
    "apple_sleeping_wrist_temperature": ("skin_temperature", "qty"),
    "step_count": ("steps", "qty"),
    "active_energy": ("active_energy", "qty"),
    "walking_running_distance": ("distance", "qty"),
    "vo2_max": ("vo2_max", "qty"),
    "weight_body_mass": ("weight", "qty"),
    "body_fat_percentage": ("body_fat", "qty"),
}
# Percentages some HAE versions export as a fraction (0.97 for 97 %). Neither metric can be
# at or below 1 % in a living person, so such a value is read as a fraction.
_FRACTION_PERCENT = frozenset({"spo2", "body_fat"})
# Aggregated sleep_analysis fields (hours by default) → metric.
SLEEP_FIELDS = (("deep", "sleep_deep"), ("rem", "sleep_rem"), ("core", "sleep_light"),
                ("awake", "sleep_awake"))
# Without totalSleep, total sleep is the sum of the asleep stages that are present.
ASLEEP_FIELDS = ("asleep", "core", "deep", "rem")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: bytes
    user_id: str | None  # the AUREN user a bound key may only write for


def parse_keys(entries: tuple[str, ...]) -> tuple[ApiKey, ...]:
    """``key`` or ``user_id:key`` entries; a malformed one is a start-up error."""
    keys = []
    for entry in entries:
        user, bound, key = entry.partition(":")
        if not bound:
            user, key = "", entry
        if (bound and not user) or not key:
            raise ValueError("HAE_API_KEYS entries must be key or user_id:key")
        if user:
            identifier(user, "the user of an HAE_API_KEYS entry")
        keys.append(ApiKey(encode(key), user or None))
    return tuple(keys)


class AppleHealthProvider(WebhookProvider):
    name = "apple"
    secrets_field = "hae_api_keys"
    option_fields: ClassVar[dict[str, str]] = {"max_events": "max_events_per_delivery"}

    def __init__(self, keys: tuple[str, ...], *, max_events: int = 5000) -> None:
        self._keys = parse_keys(keys)
        self._max_events = max_events

    def verify(self, request: WebhookRequest, now: float) -> None:
        presented = _presented_keys(request)
        if not presented:
            raise SignatureInvalid("missing api-key or Authorization: Bearer header")
        if self._matching_key(request) is None:
            raise SignatureInvalid("the API key is not configured")

    def _matching_key(self, request: WebhookRequest) -> ApiKey | None:
        found = None
        presented = _presented_keys(request)
        # Every pair is compared, as base.any_matches does, so timing does not tell which key
        # matched; unlike any_matches this also says which one did, for the user binding.
        for candidate in self._keys:
            for value in presented:
                if hmac.compare_digest(candidate.key, value):
                    found = candidate
        return found

    def _user(self, request: WebhookRequest) -> str:
        key = self._matching_key(request)
        if key is None:
            raise SignatureInvalid("the API key is not configured")
        claimed = request.query.get("user_id") or request.header("x-auren-user-id")
        if key.user_id is not None:
            if claimed and claimed != key.user_id:
                raise Forbidden("this API key is bound to another user")
            return key.user_id
        if not claimed:
            raise InvalidPayload("an unbound API key needs the user_id query parameter or the "
                                 "x-auren-user-id header")
        try:
            return identifier(claimed, "user_id")
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        return self._parse(request, received_at, lambda: self._user(request))

    def reparse(self, request: WebhookRequest, received_at: datetime,
                user_ids: tuple[str, ...]) -> Delivery:
        """The archive keeps no API key: the user is the one the delivery named."""
        if not user_ids:
            raise InvalidPayload("the archived delivery names no user")
        return self._parse(request, received_at, lambda: user_ids[0])

    def _parse(self, request: WebhookRequest, received_at: datetime,
               resolve_user: Callable[[], str]) -> Delivery:
        content_type = request.header("content-type") or ""
        if content_type.strip().lower().startswith("multipart/"):
            raise UnsupportedMediaType("set Health Auto Export's format to JSON; CSV is not read")
        user = resolve_user()
        body = require_dict(load_json(request.body), "body")
        data = body.get("data")
        if not isinstance(data, dict):
            raise InvalidPayload("data must be an object")
        try:
            metrics = array(data.get("metrics"), "data.metrics", self._max_events,
                            required=False)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        # Workouts, medications, ECGs…: sent, counted, not stored.
        ignored = sum(len(v) for k, v in data.items() if k != "metrics" and isinstance(v, list))
        # The phone posts for the AUREN user directly: there is no separate provider account.
        try:
            subject = Subject(self.name, user, user, received_at)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        batch = EventBatch(self._max_events)
        for index, metric in enumerate(metrics):
            ignored += self._metric(index, metric, subject, batch)
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        events=batch.events, ignored=ignored, skipped=batch.skipped)

    def _metric(self, index: int, metric: Any, subject: Subject, batch: EventBatch) -> int:
        """Store one metric entry's points, skipping what is invalid; the count ignored."""
        name = metric.get("name") if isinstance(metric, dict) else None
        if not isinstance(name, str) or not name:
            batch.skip(f"data.metrics[{index}]", INVALID_ITEM, "must be an object with a name")
            return 0
        spec = READERS.get(name)
        if spec is None:
            return 1
        reader, canonical = spec
        points = metric.get("data")
        if not isinstance(points, list):
            batch.skip(name, INVALID_ITEM, "data must be an array")
            return 0
        default_units = "hr" if name == "sleep_analysis" else None
        units = metric.get("units", default_units) or default_units
        if not isinstance(units, str) or not convertible(canonical, units):
            shown = (repr(units[:32]) if isinstance(units, str)
                     else "missing" if units is None else "not text")
            batch.skip(name, UNKNOWN_UNIT, f"units {shown} cannot be converted to "
                                           f"{canonical}", count=max(1, len(points)))
            return 0
        ignored = 0
        for number, point in enumerate(points):
            try:
                if not isinstance(point, dict):
                    raise MeasurementError("must be an object", INVALID_ITEM)
                ignored += reader(name, point, units, subject, batch)
            except ValueError as exc:
                batch.skip(name, reason_of(exc), f"data.metrics[{index}].data[{number}]: {exc}")
        return ignored


# A reader stores one data point (skipping and reporting its invalid measurements) and returns
# how many points it ignored (0 or 1); a point it cannot place in time raises ValueError.
Reader = Callable[[str, dict[str, Any], str, Subject, EventBatch], int]


def _simple(canonical: str, key: str) -> Reader:
    def read(name: str, point: dict[str, Any], units: str, subject: Subject,
             batch: EventBatch) -> int:
        at = hae_time(point, "date")
        field = key if point.get(key) is not None or point.get("qty") is None else "qty"
        value = point.get(field)
        if (canonical in _FRACTION_PERCENT and isinstance(value, int | float)
                and not isinstance(value, bool) and 0 < value <= 1):
            value = value * 100
        batch.measure(subject, name, canonical, value, units, field=field, start=at)
        return 0
    return read


def _blood_pressure(name: str, point: dict[str, Any], units: str, subject: Subject,
                    batch: EventBatch) -> int:
    at = hae_time(point, "date")
    for key in ("systolic", "diastolic"):
        batch.measure(subject, name, f"blood_pressure_{key}", point.get(key), units, field=key,
                      start=at)
    return 0


def _sleep(name: str, point: dict[str, Any], units: str, subject: Subject,
           batch: EventBatch) -> int:
    if "startDate" in point and "value" in point:
        # One unaggregated stage segment: its meaning differs from the nightly totals stored
        # under the same metrics, so it is not mixed in. HAE's "aggregate sleep" gives totals.
        return 1
    if point.get("sleepStart") is not None and point.get("sleepEnd") is not None:
        start, end = hae_time(point, "sleepStart"), hae_time(point, "sleepEnd")
    else:
        start, end = hae_time(point, "date"), None
    total: Any = point.get("totalSleep")
    label = "totalSleep"
    if total is None:
        parts = [point[key] for key in ASLEEP_FIELDS if point.get(key) is not None]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in parts)
        total = (sum(parts) if numeric else "not a number") if parts else None
        label = " + ".join(key for key in ASLEEP_FIELDS if point.get(key) is not None)
    if total is not None:
        batch.measure(subject, name, "sleep_duration", total, units, field=label, start=start,
                      end=end)
    for key, metric in SLEEP_FIELDS:
        value = point.get(key)
        if value is not None:
            batch.measure(subject, name, metric, value, units, field=key, start=start, end=end)
    if point.get("inBed") is not None:
        if point.get("inBedStart") is not None and point.get("inBedEnd") is not None:
            start, end = hae_time(point, "inBedStart"), hae_time(point, "inBedEnd")
        batch.measure(subject, name, "time_in_bed", point["inBed"], units, field="inBed",
                      start=start, end=end)
    return 0


# HAE name → (reader, the canonical metric its units must convert to).
READERS: dict[str, tuple[Reader, str]] = {
    **{hae: (_simple(canonical, key), canonical)
       for hae, (canonical, key) in SIMPLE_METRICS.items()},
    "blood_pressure": (_blood_pressure, "blood_pressure_systolic"),
    "sleep_analysis": (_sleep, "sleep_duration"),
}


def hae_time(obj: dict[str, Any], key: str) -> datetime:
    """HAE's ``yyyy-MM-dd HH:mm:ss Z`` (ISO 8601 also accepted), in UTC."""
    value = obj.get(key)
    if isinstance(value, str) and len(value) <= 40:
        try:
            return datetime.strptime(value, HAE_TIME_FORMAT).astimezone(UTC)
        except (ValueError, OverflowError):
            pass
        try:
            return parse_time(value)
        except (ValueError, OverflowError):
            pass
    raise MeasurementError(f"{key} must be a time like 2026-01-01 07:00:00 +0100",
                           INVALID_TIME)


def _presented_keys(request: WebhookRequest) -> list[bytes]:
    presented = []
    api_key = request.header("api-key")
    if api_key and api_key.strip():
        presented.append(encode(api_key.strip()))
    authorization = request.header("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented.append(encode(token.strip()))
    return presented


def signed_headers(api_key: str, body: bytes, *, user_id: str | None = None) -> dict[str, str]:
    """Headers a Health Auto Export automation is set up to send (used by the simulator).

    ``api_key`` may be an ``HAE_API_KEYS`` entry: the phone sends only the key, never the
    ``user_id:`` binding in front of it. An unbound key needs ``user_id``.
    """
    key = api_key.partition(":")[2] or api_key
    headers = {"api-key": key, "content-type": "application/json"}
    if user_id is not None:
        headers["x-auren-user-id"] = user_id
    return headers
