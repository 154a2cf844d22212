"""Canonical biometric events, fetch jobs, the delivery that carries them, the metric registry
and unit conversion. Pure: no I/O.

One record per measurement. ``event_id`` is a UUIDv5 over everything that identifies the
measurement (provider, provider user, metric, time frame, source record), so a re-delivery of
the same data maps to the same id and the store's unique key deduplicates it exactly.

Units are UCUM codes. Conversion goes through one base unit per dimension; deviations (a
temperature *difference*) convert by scale only, never by offset: +1 [degF] of deviation is
+0.556 Cel, not -17.2 Cel.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auren.errors import InvalidPayload

EVENT_NAMESPACE = uuid.UUID("6a1b3c5e-2f4d-5e8a-9b0c-1d2e3f405162")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    description: str
    omh_schema: str | None = None
    loinc: str | None = None
    # A difference from a baseline: converts by scale only.
    is_delta: bool = False
    # Physically plausible bounds in the canonical unit; outside is a 422.
    minimum: float = -math.inf
    maximum: float = math.inf


def _m(name: str, unit: str, description: str, **kw: Any) -> tuple[str, Metric]:
    return name, Metric(name, unit, description, **kw)


METRICS: dict[str, Metric] = dict(
    [
        _m("heart_rate", "/min", "Heart rate", omh_schema="omh:heart-rate:2.0", loinc="8867-4",
           minimum=15, maximum=300),
        _m("resting_heart_rate", "/min", "Resting heart rate", omh_schema="omh:heart-rate:2.0",
           loinc="40443-4", minimum=15, maximum=250),
        _m("respiratory_rate", "/min", "Respiratory rate", omh_schema="omh:respiratory-rate:2.0",
           loinc="9279-1", minimum=1, maximum=80),
        # RMSSD (Oura, WHOOP, Garmin, Fitbit) and SDNN (Apple) are different statistics: two
        # metrics, never mixed. LOINC 80404-7 is SDNN only; RMSSD has no standard code.
        _m("hrv_rmssd", "ms", "Heart rate variability, RMSSD",
           omh_schema="auren:heart-rate-variability:1.0", minimum=0, maximum=1000),
        _m("hrv_sdnn", "ms", "Heart rate variability, SDNN",
           omh_schema="auren:heart-rate-variability:1.0", loinc="80404-7", minimum=0, maximum=1000),
        _m("spo2", "%", "Oxygen saturation", omh_schema="omh:oxygen-saturation:2.0",
           loinc="59408-5", minimum=0, maximum=100),
        _m("sleep_efficiency", "%", "Sleep efficiency", omh_schema="omh:sleep-episode:1.1",
           minimum=0, maximum=100),
        _m("body_fat", "%", "Body fat percentage", loinc="41982-0", minimum=0, maximum=100),
        _m("body_temperature", "Cel", "Body temperature", omh_schema="omh:body-temperature:4.0",
           loinc="8310-5", minimum=20, maximum=46),
        # Absolute skin temperature (WHOOP), distinct from a deviation from baseline.
        _m("skin_temperature", "Cel", "Skin temperature", loinc="8328-7", minimum=0, maximum=50),
        # Oura and Terra report a deviation from the personal baseline.
        _m("temperature_deviation", "Cel", "Temperature deviation from baseline", is_delta=True,
           minimum=-10, maximum=10),
        _m("steps", "{steps}", "Step count", omh_schema="omh:step-count:3.0", loinc="55423-8",
           minimum=0, maximum=1_000_000),
        _m("distance", "m", "Distance", minimum=0, maximum=1_000_000),
        _m("active_energy", "kcal", "Active energy burned", omh_schema="omh:calories-burned:2.0",
           minimum=0, maximum=50_000),
        _m("total_energy", "kcal", "Total energy burned", omh_schema="omh:calories-burned:2.0",
           minimum=0, maximum=50_000),
        _m("sleep_duration", "s", "Total sleep time", omh_schema="omh:total-sleep-time:1.0",
           loinc="93832-4", minimum=0, maximum=86_400 * 2),
        _m("sleep_deep", "s", "Deep sleep", loinc="93831-6", minimum=0, maximum=86_400 * 2),
        _m("sleep_light", "s", "Light sleep", loinc="93830-8", minimum=0, maximum=86_400 * 2),
        _m("sleep_rem", "s", "REM sleep", loinc="93829-0", minimum=0, maximum=86_400 * 2),
        _m("sleep_awake", "s", "Awake time in bed", minimum=0, maximum=86_400 * 2),
        _m("sleep_score", "{score}", "Sleep score", minimum=0, maximum=100),
        _m("readiness_score", "{score}", "Readiness score", minimum=0, maximum=100),
        _m("recovery_score", "{score}", "Recovery score", minimum=0, maximum=100),
        _m("strain", "{score}", "Day strain", minimum=0, maximum=100),
        _m("vo2_max", "mL/min/kg", "VO2 max", minimum=0, maximum=120),
        _m("weight", "kg", "Body weight", loinc="29463-7", minimum=0, maximum=700),
        _m("blood_pressure_systolic", "mm[Hg]", "Systolic blood pressure", loinc="8480-6",
           minimum=20, maximum=300),
        _m("blood_pressure_diastolic", "mm[Hg]", "Diastolic blood pressure", loinc="8462-4",
           minimum=10, maximum=250),
    ]
)


@dataclass(frozen=True, slots=True)
class _Unit:
    dimension: str
    scale: float  # value_in_base = value * scale + offset
    offset: float = 0.0


# Base units: s, kg, kcal, Cel, m, /min, %, {steps}, {score}, ms (HRV), mL/min/kg, mm[Hg].
_UNITS: dict[str, _Unit] = {}


def _units(dimension: str, scale: float, *aliases: str, offset: float = 0.0) -> None:
    for alias in aliases:
        _UNITS[alias.lower()] = _Unit(dimension, scale, offset)


_units("time", 1.0, "s", "sec", "second", "seconds")
_units("time", 0.001, "ms", "msec", "millisecond", "milliseconds")
_units("time", 60.0, "min", "minute", "minutes", "mins")
_units("time", 3600.0, "h", "hr", "hrs", "hour", "hours")
_units("time", 86400.0, "d", "day", "days")
_units("mass", 1.0, "kg", "kilogram", "kilograms")
_units("mass", 0.001, "g", "gram", "grams")
_units("mass", 0.45359237, "[lb_av]", "lb", "lbs", "pound", "pounds")
_units("mass", 6.35029318, "[stone_av]", "st", "stone")
_units("energy", 1.0, "kcal", "cal_th", "[cal]", "calories", "kilocalories", "Cal")
_units("energy", 1 / 4.184, "kJ", "kilojoule", "kilojoules")
_units("energy", 1 / 4184.0, "J", "joule", "joules")
_units("temperature", 1.0, "Cel", "degC", "°C", "C", "celsius")
_units("temperature", 5 / 9, "[degF]", "degF", "°F", "F", "fahrenheit", offset=-32 * 5 / 9)
_units("temperature", 1.0, "K", "kelvin", offset=-273.15)
_units("length", 1.0, "m", "meter", "meters", "metre", "metres")
_units("length", 1000.0, "km", "kilometer", "kilometers")
_units("length", 0.01, "cm")
_units("length", 1609.344, "[mi_i]", "mi", "mile", "miles")
_units("length", 0.3048, "[ft_i]", "ft", "feet")
_units("frequency", 1.0, "/min", "bpm", "beats/min", "count/min", "{beats}/min", "breaths/min",
       "{breaths}/min", "1/min", "rpm")
_units("fraction", 1.0, "%", "percent", "pct")
_units("count", 1.0, "{steps}", "steps", "count", "{count}", "1")
_units("score", 1.0, "{score}", "score", "points")
_units("vo2", 1.0, "mL/min/kg", "ml/kg/min", "mL/kg/min", "ml/(kg·min)", "ml/(kg*min)",
       "ml/min/kg", "mL/(kg.min)")
_units("pressure", 1.0, "mm[Hg]", "mmHg", "mm hg", "mmhg")
_units("pressure", 7.50061683, "kPa")

# HRV is a time in milliseconds; a duration metric's canonical unit is seconds. Both are the
# "time" dimension, so ms→s and s→ms follow from the table.


def convert(metric: Metric, value: float, unit: str) -> float:
    """Convert ``value`` in ``unit`` to the metric's canonical unit.

    Raises:
        ValueError: the unit is unknown or measures another dimension.
    """
    if unit == metric.unit:
        return value  # the usual case: the sender already speaks the canonical unit
    source = _UNITS.get(unit.strip().lower()) if unit else None
    target = _UNITS[metric.unit.lower()]
    if source is None:
        raise ValueError(f"unknown unit {unit!r} for {metric.name} (expects {metric.unit})")
    if source.dimension != target.dimension:
        raise ValueError(f"unit {unit!r} cannot be converted to {metric.unit} for {metric.name}")
    if source is target or (source.scale == target.scale and source.offset == target.offset):
        return value
    if metric.is_delta:
        return value * source.scale / target.scale
    return (value * source.scale + source.offset - target.offset) / target.scale


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is rejected, never guessed."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: the one textual form stored and hashed."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp with an offset into UTC.

    Raises:
        ValueError: not a timestamp, or no time zone.
    """
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise ValueError("timestamp must be an RFC 3339 string")
    return utc(datetime.fromisoformat(text.replace("z", "Z")))


def event_id(
    provider: str,
    provider_user_id: str,
    metric: str,
    start: datetime,
    end: datetime | None,
    source_record_id: str | None,
) -> str:
    """UUIDv5 (RFC 9562) of the measurement's identity, as its canonical string.

    Equal to ``str(uuid.uuid5(EVENT_NAMESPACE, name))``; computed directly because it runs
    for every event on the webhook hot path and ``uuid.UUID`` objects are costly to build.
    """
    return _event_id(provider, provider_user_id, metric, iso(start), iso(end) if end else "",
                     source_record_id)


def _event_id(provider: str, provider_user_id: str, metric: str, start: str, end: str,
              source_record_id: str | None) -> str:
    name = "|".join((provider, provider_user_id, metric, start, end, source_record_id or ""))
    # SHA-1 is what UUIDv5 is defined on; this is an identifier, not a security measure.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Not frozen: a frozen dataclass sets each of its fields through object.__setattr__, which
# doubled the cost of building the events of a delivery on the webhook hot path. Treat as
# immutable.
@dataclass(slots=True)
class CanonicalEvent:
    event_id: str
    user_id: str
    provider: str
    provider_user_id: str
    metric: str
    value: float
    unit: str
    start: datetime
    end: datetime | None
    source_record_id: str | None
    received_at: datetime
    # The RFC 3339 forms, rendered once (they are hashed into event_id and stored as text).
    start_text: str = field(default="", repr=False, compare=False)
    end_text: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.start_text:
            self.start_text = iso(self.start)
            self.end_text = iso(self.end) if self.end else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "provider": self.provider,
            "provider_user_id": self.provider_user_id,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "start": self.start_text,
            "end": self.end_text,
            "source_record_id": self.source_record_id,
            "received_at": iso(self.received_at),
        }


def make_event(
    *,
    provider: str,
    user_id: str,
    provider_user_id: str,
    metric: str,
    value: Any,
    unit: str,
    start: datetime,
    end: datetime | None = None,
    source_record_id: str | None = None,
    received_at: datetime,
) -> CanonicalEvent:
    """Validate one measurement against the registry and build its canonical event.

    Raises:
        ValueError: unknown metric, unconvertible unit, non-finite or implausible value, or an
            end before the start. Callers turn it into a 422 naming the item.
    """
    spec = METRICS.get(metric)
    if spec is None:
        raise ValueError(f"unknown metric {metric!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("value must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("value must be finite")
    number = convert(spec, number, unit)
    if not spec.minimum <= number <= spec.maximum:
        raise ValueError(
            f"{metric} value {number:g} {spec.unit} is outside [{spec.minimum:g}, {spec.maximum:g}]"
        )
    start = utc(start)
    end = utc(end) if end is not None else None
    if end is not None and end < start:
        raise ValueError("end is before start")
    start_text = iso(start)
    end_text = iso(end) if end is not None else None
    return CanonicalEvent(
        event_id=_event_id(provider, provider_user_id, metric, start_text, end_text or "",
                           source_record_id),
        user_id=user_id,
        provider=provider,
        provider_user_id=provider_user_id,
        metric=metric,
        value=number,
        unit=spec.unit,
        start=start,
        end=end,
        source_record_id=source_record_id,
        received_at=received_at,
        start_text=start_text,
        end_text=end_text,
    )


@dataclass(frozen=True, slots=True)
class FetchJob:
    """A thin notification: what to fetch from the provider later, and for whom."""

    job_id: str
    provider: str
    user_id: str
    provider_user_id: str
    kind: str
    object_id: str | None
    params: dict[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "provider": self.provider,
            "user_id": self.user_id,
            "provider_user_id": self.provider_user_id,
            "kind": self.kind,
            "object_id": self.object_id,
            "params": self.params,
            "received_at": iso(self.received_at),
        }


def fetch_job_id(provider: str, *parts: object) -> str:
    """Deterministic id of a fetch job, so a re-sent notification is one job."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "fetch|" + provider + "|" + "|".join(map(str, parts))))



# Not frozen, like CanonicalEvent: one is built per webhook on the hot path. Treat as immutable.
@dataclass(slots=True)
class Delivery:
    """One verified, parsed webhook: the unit that must become durable before the answer."""

    provider: str
    # Identifies this delivery across the provider's retries (webhook-id, trace id, or a body
    # digest when the provider gives none).
    delivery_key: str
    events: list[CanonicalEvent] = field(default_factory=list)
    fetch_jobs: list[FetchJob] = field(default_factory=list)
    # Items the provider sent that AUREN has no metric for (counted, not stored).
    ignored: int = 0
    # The status a successful first delivery answers (Fitbit wants 204).
    success_status: int = 202

def item_error(index: int, message: str, *, path: str = "events") -> InvalidPayload:
    """A 422 that names the index of the bad item; nothing of the delivery is stored."""
    return InvalidPayload(f"{path}[{index}]: {message}", errors=[{"index": index, "path": path,
                                                                 "message": message}])
