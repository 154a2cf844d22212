"""Canonical biometric events, fetch jobs, the delivery that carries them, the metric registry
and unit conversion. Pure: no I/O.

One record per measurement. ``event_id`` is a UUIDv5 over everything that identifies the
measurement (provider, provider user, metric, time frame, source record), so a re-delivery of
the same data maps to the same id and the store's unique key deduplicates it exactly.

Units are UCUM codes. Conversion goes through one base unit per dimension; deviations (a
temperature *difference*) convert by scale only, never by offset: +1 [degF] of deviation is
+0.556 Cel, not -17.2 Cel.

The input rules every provider and endpoint applies live here too, so that there is one of
each: :func:`identifier` (user, record and delivery ids) and :func:`check_instant` (the
plausible time range of any instant, from :data:`EARLIEST_INSTANT` to the receiving clock plus
:data:`FUTURE_TOLERANCE`). A measurement that breaks a rule raises :class:`MeasurementError`,
a ``ValueError`` that also says *why* in a few fixed words (``reason``), so that full-data
providers can skip it, report it and keep the rest of the delivery.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from auren.errors import InvalidPayload

EVENT_NAMESPACE = uuid.UUID("6a1b3c5e-2f4d-5e8a-9b0c-1d2e3f405162")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes

# --- the input rules ---------------------------------------------------------------------------

# Why a measurement was not stored: a fixed vocabulary (answer bodies and a Prometheus label).
UNKNOWN_METRIC = "unknown_metric"
UNKNOWN_UNIT = "unknown_unit"
INVALID_VALUE = "invalid_value"
INVALID_TIME = "invalid_time"
INVALID_ITEM = "invalid_item"
# An intraday sample beyond the delivery's sample cap (MAX_SAMPLES_PER_DELIVERY).
OVER_LIMIT = "over_limit"
SKIP_REASONS = (UNKNOWN_METRIC, UNKNOWN_UNIT, INVALID_VALUE, INVALID_TIME, INVALID_ITEM,
                OVER_LIMIT)

MAX_IDENTIFIER = 256
# No wearable recorded anything before 2000; a date before it is a broken clock or a default.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
# How far past the receiving clock an instant may lie. Not seconds: a day summary starts at
# local midnight and ends 24 h later, so in UTC+14 its end is up to a day and 14 h ahead of
# UTC "now", and device clocks drift. Two days covers both and still refuses year 9999.
FUTURE_TOLERANCE = timedelta(days=2)


class MeasurementError(ValueError):
    """A measurement (or one of its fields) that cannot be stored, and the reason in one word.

    A ``ValueError``, so every caller that already turns ``ValueError`` into a 422 keeps doing so.
    """

    def __init__(self, message: str, reason: str = INVALID_VALUE) -> None:
        super().__init__(message)
        self.reason = reason


def is_identifier(value: object) -> bool:
    """The one rule for identifiers: 1..256 printable characters, no space at either end.

    ``str.isprintable`` is false for NUL, every control character, line and paragraph
    separators and lone surrogates; a value of spaces only fails the end check.
    """
    return (isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER and value.isprintable()
            and not value[0].isspace() and not value[-1].isspace())


def identifier(value: object, what: str) -> str:
    """``value`` if it is an identifier, else a ``MeasurementError`` naming ``what``."""
    if not is_identifier(value):
        raise MeasurementError(f"{what} must be 1 to {MAX_IDENTIFIER} printable characters "
                               "without leading or trailing spaces", INVALID_ITEM)
    return value  # type: ignore[return-value]  # is_identifier proved it a str


def latest_instant(now: datetime) -> datetime:
    return now + FUTURE_TOLERANCE


def check_instant(moment: datetime, now: datetime, what: str = "time") -> datetime:
    """``moment`` if it lies in the plausible range relative to ``now``, else a
    ``MeasurementError`` (``invalid_time``).

    ``now`` is the receiving clock (a webhook's ``received_at``, the read API's wall clock).
    """
    if not EARLIEST_INSTANT <= moment <= now + FUTURE_TOLERANCE:
        raise MeasurementError(
            f"{what} {moment.isoformat()} is outside the accepted range (from "
            f"{EARLIEST_INSTANT.date().isoformat()} to {FUTURE_TOLERANCE.days} days after the "
            "time of receipt)", INVALID_TIME)
    return moment


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
        # The whole period in bed or monitored (asleep and awake). Never total sleep: Garmin's
        # sleep durationInSeconds and HealthKit's inBed are this, and storing them as
        # sleep_duration overstated sleep by the time awake.
        _m("time_in_bed", "s", "Time in bed", minimum=0, maximum=86_400 * 2),
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
# Spellings are looked up exactly first, then case-folded; a folded spelling that two units
# share ("Cal" is the kilocalorie, "cal" the calorie) is only accepted exactly.
_UNITS: dict[str, _Unit] = {}
_FOLDED: dict[str, _Unit | None] = {}


def _units(dimension: str, scale: float, *aliases: str, offset: float = 0.0) -> None:
    unit = _Unit(dimension, scale, offset)
    for alias in aliases:
        _UNITS[alias] = unit
        folded = alias.casefold()
        known = _FOLDED.get(folded, unit)
        _FOLDED[folded] = unit if known == unit else None


def _lookup(unit: str) -> _Unit | None:
    text = unit.strip()
    found = _UNITS.get(text)
    return found if found is not None else _FOLDED.get(text.casefold())


# HealthKit's own spellings (``HKUnit.unitString``, which Health Auto Export prints as a
# metric's ``units``) are listed with the UCUM codes: count/min, ms, %, degC, degF, kcal, Cal,
# cal, kJ, m, km, mi, ft, yd, in, cm, hr, min, s, d, kg, g, lb, oz, st, mmHg, count and
# mL/min·kg (VO2 max; HealthKit writes the product with a middle dot, some exports with a
# hyphen or U+22C5). kcal/hr·kg (physical effort, METs) has no metric here.
_units("time", 1.0, "s", "sec", "secs", "second", "seconds")
_units("time", 0.001, "ms", "msec", "millisecond", "milliseconds")
_units("time", 60.0, "min", "minute", "minutes", "mins")
_units("time", 3600.0, "h", "hr", "hrs", "hour", "hours")
_units("time", 86400.0, "d", "day", "days")
_units("mass", 1.0, "kg", "kilogram", "kilograms")
_units("mass", 0.001, "g", "gram", "grams")
_units("mass", 0.028349523125, "[oz_av]", "oz", "ounce", "ounces")
_units("mass", 0.45359237, "[lb_av]", "lb", "lbs", "pound", "pounds")
_units("mass", 6.35029318, "[stone_av]", "st", "stone")
_units("energy", 1.0, "kcal", "Cal", "[Cal]", "kilocalorie", "kilocalories", "calories")
_units("energy", 0.001, "cal", "cal_th", "[cal]")
_units("energy", 1 / 4.184, "kJ", "kilojoule", "kilojoules")
_units("energy", 1 / 4184.0, "J", "joule", "joules")
_units("temperature", 1.0, "Cel", "degC", "°C", "C", "celsius")
_units("temperature", 5 / 9, "[degF]", "degF", "°F", "F", "fahrenheit", offset=-32 * 5 / 9)
_units("temperature", 1.0, "K", "kelvin", offset=-273.15)
_units("length", 1.0, "m", "meter", "meters", "metre", "metres")
_units("length", 1000.0, "km", "kilometer", "kilometers", "kilometre", "kilometres")
_units("length", 0.01, "cm")
_units("length", 1609.344, "[mi_i]", "mi", "mile", "miles")
_units("length", 0.9144, "[yd_i]", "yd", "yard", "yards")
_units("length", 0.3048, "[ft_i]", "ft", "feet")
_units("length", 0.0254, "[in_i]", "in", "inch", "inches")
_units("frequency", 1.0, "/min", "bpm", "beats/min", "count/min", "{beats}/min", "breaths/min",
       "{breaths}/min", "1/min", "rpm")
_units("fraction", 1.0, "%", "percent", "pct")
_units("count", 1.0, "{steps}", "steps", "count", "{count}", "1")
_units("score", 1.0, "{score}", "score", "points")
_units("vo2", 1.0, "mL/min/kg", "mL/kg/min", "mL/(kg.min)", "mL/(kg·min)", "mL/(kg*min)",
       "mL/(min·kg)", "mL/min·kg", "mL/min⋅kg", "mL/min-kg", "mL/kg·min", "mL/min*kg",
       "mL/(kg⋅min)")
_units("pressure", 1.0, "mm[Hg]", "mmHg", "mm hg")
_units("pressure", 7.50061683, "kPa")

# HRV is a time in milliseconds; a duration metric's canonical unit is seconds. Both are the
# "time" dimension, so ms→s and s→ms follow from the table.


def convert(metric: Metric, value: float, unit: str) -> float:
    """Convert ``value`` in ``unit`` to the metric's canonical unit.

    Raises:
        MeasurementError: the unit is unknown or measures another dimension (``unknown_unit``).
    """
    if unit == metric.unit:
        return value  # the usual case: the sender already speaks the canonical unit
    source = _lookup(unit) if unit else None
    target = _UNITS[metric.unit]
    if source is None:
        raise MeasurementError(
            f"unknown unit {unit[:32]!r} for {metric.name} (expects {metric.unit})", UNKNOWN_UNIT)
    if source.dimension != target.dimension:
        raise MeasurementError(
            f"unit {unit[:32]!r} cannot be converted to {metric.unit} for {metric.name}",
            UNKNOWN_UNIT)
    if source is target or (source.scale == target.scale and source.offset == target.offset):
        return value
    if metric.is_delta:
        return value * source.scale / target.scale
    return (value * source.scale + source.offset - target.offset) / target.scale


def convertible(metric: str, unit: object) -> bool:
    """Whether ``unit`` is a spelling of a unit of ``metric``'s dimension."""
    spec = METRICS.get(metric)
    if spec is None or not isinstance(unit, str):
        return False
    if unit == spec.unit:
        return True
    source = _lookup(unit)
    return source is not None and source.dimension == _UNITS[spec.unit].dimension


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is rejected, never guessed.

    Raises:
        MeasurementError: no time zone, or an instant UTC cannot hold (year 9999 at a negative
            offset, year 1 at a positive one) (``invalid_time``).
    """
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise MeasurementError("timestamp has no time zone", INVALID_TIME)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise MeasurementError("timestamp is outside the range of dates", INVALID_TIME) from None


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: the one textual form stored and hashed."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp with an offset into UTC.

    Only the form is checked here; whether the instant is plausible is :func:`check_instant`'s
    business, against the clock of whoever received it.

    Raises:
        MeasurementError: not an ASCII timestamp, no time zone, or not representable in UTC
            (``invalid_time``).
    """
    if (not isinstance(text, str) or not 10 <= len(text) <= 40 or not text.isascii()
            or not text.isprintable()):
        raise MeasurementError("timestamp must be an RFC 3339 string", INVALID_TIME)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise MeasurementError("timestamp must be an RFC 3339 string", INVALID_TIME) from None
    return utc(moment)


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


# How an event reached AUREN: pushed by the provider in a webhook, fetched from its API because
# a notification named it, fetched as history (a backfill on connect, a re-sync), or rebuilt
# from an archived raw payload by `auren reprocess` (an event it added, or whose value it
# corrected; an event whose value it confirmed keeps its provenance).
PUSH = "push"
FETCH = "fetch"
BACKFILL = "backfill"
REPROCESS = "reprocess"
PROVENANCES = (PUSH, FETCH, BACKFILL, REPROCESS)


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
    # Not part of the identity: the same measurement pushed and later fetched is one event.
    provenance: str = PUSH
    # When the fetcher received it from the provider's API; None for pushed data.
    fetched_at: datetime | None = None

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
            "provenance": self.provenance,
            "fetched_at": iso(self.fetched_at) if self.fetched_at else None,
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
    provenance: str = PUSH,
    fetched_at: datetime | None = None,
) -> CanonicalEvent:
    """Validate one measurement against the registry and build its canonical event.

    ``start`` and ``end`` must lie in the plausible range relative to ``received_at``
    (:func:`check_instant`). Identifiers are checked once per delivery by the callers
    (:func:`identifier`), not again for every event of it.

    Raises:
        MeasurementError: unknown metric, unconvertible unit, non-finite or implausible value,
            an instant outside the range, or an end before the start; ``reason`` says which.
            Callers turn it into a 422 naming the item, or skip and report the measurement.
    """
    spec = METRICS.get(metric)
    if spec is None:
        raise MeasurementError(f"unknown metric {metric[:64]!r}", UNKNOWN_METRIC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeasurementError("value must be a number", INVALID_VALUE)
    number = float(value)
    if not math.isfinite(number):
        raise MeasurementError("value must be finite", INVALID_VALUE)
    number = convert(spec, number, unit)
    if not spec.minimum <= number <= spec.maximum:
        raise MeasurementError(
            f"{metric} value {number:g} {spec.unit} is outside [{spec.minimum:g}, "
            f"{spec.maximum:g}]", INVALID_VALUE)
    start = check_instant(utc(start), received_at, "start")
    end = check_instant(utc(end), received_at, "end") if end is not None else None
    if end is not None and end < start:
        raise MeasurementError("end is before start", INVALID_TIME)
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
        provenance=provenance,
        fetched_at=fetched_at,
    )


@dataclass(frozen=True, slots=True)
class FetchJob:
    """A thin notification: what to fetch from the provider later, and for whom.

    ``object_id`` names one record; a notification that names none gives a time ``window``
    (``window_start`` .. ``window_end``) to fetch instead. The window is also written into
    ``params``, which is what every store and the Kafka record keep of a job, so it survives
    without a change of schema.
    """

    job_id: str
    provider: str
    user_id: str
    provider_user_id: str
    kind: str
    object_id: str | None
    params: dict[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    window_start: datetime | None = None
    window_end: datetime | None = None

    def __post_init__(self) -> None:
        if (self.window_start is None) != (self.window_end is None):
            raise ValueError("a fetch window needs both its start and its end")
        if self.window_start is not None and self.window_end is not None:
            if self.window_end < self.window_start:
                raise ValueError("the fetch window ends before it starts")
            # Frozen: a new params dict, so a caller's dict is never changed behind its back.
            object.__setattr__(self, "params", {**self.params, **self.window})

    @property
    def window(self) -> dict[str, str]:
        if self.window_start is None or self.window_end is None:
            return {}
        return {"window_start": iso(self.window_start), "window_end": iso(self.window_end)}

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


@dataclass(slots=True)
class Skipped:
    """Measurements of one kind a delivery carried but that were not stored, and why.

    ``metric`` is the sender's own name for them (a Health Auto Export metric, a Terra or Garmin
    field path), so the sender can find what to fix; ``reason`` is one of
    :data:`SKIP_REASONS`; ``detail`` is the first such problem's message.
    """

    metric: str
    reason: str
    count: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "reason": self.reason, "count": self.count,
                "detail": self.detail}


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
    # Measurements AUREN keeps but that were invalid in this delivery (skipped, the rest
    # stored): full-data multi-metric providers only; the others refuse the whole delivery.
    skipped: list[Skipped] = field(default_factory=list)
    # The status a successful first delivery answers (Fitbit wants 204).
    success_status: int = 202
    # The sealed raw payload (ARCHIVE_RAW_PAYLOADS), made durable with the delivery.
    raw: RawPayload | None = None


@dataclass(frozen=True, slots=True)
class RawPayload:
    """A verified delivery's raw payload as archived: what identifies it in the clear (to find,
    expire and erase it) and the rest sealed (``sealed``: the body, the headers and query that
    parsing reads, encrypted; see ``auren.ingest.archive``)."""

    provider: str
    delivery_key: str
    received_at: str  # RFC 3339, the instant the webhook was received (parse's clock)
    user_ids: tuple[str, ...]  # the users its items name; empty when it names none
    sealed: str


def item_error(index: int, message: str, *, path: str = "events") -> InvalidPayload:
    """A 422 that names the index of the bad item; nothing of the delivery is stored."""
    return InvalidPayload(f"{path}[{index}]: {message}", errors=[{"index": index, "path": path,
                                                                 "message": message}])
