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

Units are whatever the user picked in the app, so every point is converted from its metric's
``units``. Apple's HRV is SDNN and lands in ``hrv_sdnn``, never beside the RMSSD of the others.
HAE sends dozens of metric types; those AUREN has no metric for are counted as ignored.
``basal_energy_burned`` is one of them: it is neither active nor total energy.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auren.errors import (
    Forbidden,
    InvalidPayload,
    SignatureInvalid,
    UnsupportedMediaType,
)
from auren.events import Delivery, item_error, parse_time
from auren.providers._common import MAX_TEXT, EventBatch, Subject, array, encode, text
from auren.providers.base import (
    HandshakeResponse,
    WebhookRequest,
    body_digest,
    load_json,
    require_dict,
)
from auren.settings import Settings, secret_values

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
        keys.append(ApiKey(encode(key), user or None))
    return tuple(keys)


class AppleHealthProvider:
    name = "apple"

    def __init__(self, keys: tuple[str, ...], *, max_events: int = 5000) -> None:
        self._keys = parse_keys(keys)
        self._max_events = max_events

    @classmethod
    def from_settings(cls, settings: Settings) -> AppleHealthProvider | None:
        keys = secret_values(settings.hae_api_keys)
        if not keys:
            return None
        return cls(keys, max_events=settings.max_events_per_delivery)

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        return None

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
        if len(claimed) > MAX_TEXT or not claimed.isprintable():
            raise InvalidPayload(f"user_id must be printable and at most {MAX_TEXT} characters")
        return claimed

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        content_type = request.header("content-type") or ""
        if content_type.strip().lower().startswith("multipart/"):
            raise UnsupportedMediaType("set Health Auto Export's format to JSON; CSV is not read")
        user = self._user(request)
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
        subject = Subject(self.name, user, user, received_at)
        batch = EventBatch(self._max_events)
        for index, metric in enumerate(metrics):
            reader = _reader(metric)
            if reader is None:
                ignored += 1
                continue
            try:
                default_units = "hr" if metric.get("name") == "sleep_analysis" else None
                units = default_units if metric.get("units") is None else text(metric, "units")
                if units is None:
                    raise ValueError("units is required")
                points = array(metric.get("data"), "data", self._max_events)
            except ValueError as exc:
                raise item_error(index, str(exc), path="data.metrics") from None
            for number, point in enumerate(points):
                try:
                    if not isinstance(point, dict):
                        raise ValueError("must be an object")
                    ignored += reader(point, units, subject, batch)
                except ValueError as exc:
                    path = f"data.metrics[{index}].data"
                    raise item_error(number, str(exc), path=path) from None
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        events=batch.events, ignored=ignored)


# A reader stores one data point and returns how many points it ignored (0 or 1).
Reader = Callable[[dict[str, Any], str, Subject, EventBatch], int]


def _reader(metric: Any) -> Reader | None:
    if not isinstance(metric, dict):
        return None
    name = metric.get("name")
    if not isinstance(name, str):
        return None
    if name == "blood_pressure":
        return _blood_pressure
    if name == "sleep_analysis":
        return _sleep
    if name in SIMPLE_METRICS:
        canonical, key = SIMPLE_METRICS[name]
        return lambda point, units, subject, batch: _simple(canonical, key, point, units,
                                                            subject, batch)
    return None


def _simple(metric: str, key: str, point: dict[str, Any], units: str, subject: Subject,
            batch: EventBatch) -> int:
    at = hae_time(point, "date")
    if point.get(key) is None and point.get("qty") is not None:
        key = "qty"
    value = point.get(key)
    if (metric in _FRACTION_PERCENT and isinstance(value, int | float)
            and not isinstance(value, bool) and 0 < value <= 1):
        value = value * 100
    batch.add(subject.event(metric, value, units, field=key, start=at))
    return 0


def _blood_pressure(point: dict[str, Any], units: str, subject: Subject,
                    batch: EventBatch) -> int:
    at = hae_time(point, "date")
    for key in ("systolic", "diastolic"):
        batch.add(subject.event(f"blood_pressure_{key}", point.get(key), units, field=key,
                                start=at))
    return 0


def _sleep(point: dict[str, Any], units: str, subject: Subject, batch: EventBatch) -> int:
    if "startDate" in point and "value" in point:
        # One unaggregated stage segment: its meaning differs from the nightly totals stored
        # under the same metrics, so it is not mixed in. HAE's "aggregate sleep" gives totals.
        return 1
    if point.get("sleepStart") is not None and point.get("sleepEnd") is not None:
        start, end = hae_time(point, "sleepStart"), hae_time(point, "sleepEnd")
    else:
        start, end = hae_time(point, "date"), None
    total = "totalSleep" if point.get("totalSleep") is not None else "asleep"
    for key, metric in ((total, "sleep_duration"), *SLEEP_FIELDS):
        value = point.get(key)
        if value is not None:
            batch.add(subject.event(metric, value, units, field=key, start=start, end=end))
    return 0


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
    raise ValueError(f"{key} must be a time like 2026-01-01 07:00:00 +0100")


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
