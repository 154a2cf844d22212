from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auren.events import (
    EARLIEST_INSTANT,
    FUTURE_TOLERANCE,
    INVALID_ITEM,
    INVALID_TIME,
    METRICS,
    SKIP_REASONS,
    FetchJob,
    MeasurementError,
    check_instant,
    convert,
    convertible,
    event_id,
    identifier,
    is_identifier,
    iso,
    make_event,
    parse_time,
)

RECEIVED = datetime(2026, 1, 2, tzinfo=UTC)
START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)

FIXED_UNITS = {
    "heart_rate": "/min", "resting_heart_rate": "/min", "respiratory_rate": "/min",
    "hrv_rmssd": "ms", "hrv_sdnn": "ms", "spo2": "%", "sleep_efficiency": "%", "body_fat": "%",
    "body_temperature": "Cel", "skin_temperature": "Cel", "temperature_deviation": "Cel",
    "steps": "{steps}", "distance": "m", "active_energy": "kcal", "total_energy": "kcal",
    "sleep_duration": "s", "sleep_deep": "s", "sleep_light": "s", "sleep_rem": "s",
    "sleep_awake": "s", "sleep_score": "{score}", "readiness_score": "{score}",
    "recovery_score": "{score}", "strain": "{score}", "vo2_max": "mL/min/kg", "weight": "kg",
    "blood_pressure_systolic": "mm[Hg]", "blood_pressure_diastolic": "mm[Hg]",
    "time_in_bed": "s",
}


def test_registry_holds_the_fixed_names_and_units():
    for name, unit in FIXED_UNITS.items():
        assert METRICS[name].unit == unit, name


@pytest.mark.parametrize(
    ("metric", "value", "unit", "expected"),
    [
        ("active_energy", 418.4, "kJ", 100.0),
        ("body_temperature", 98.6, "[degF]", 37.0),
        ("sleep_duration", 7.5, "h", 27_000.0),
        ("sleep_deep", 90, "min", 5_400.0),
        ("sleep_rem", 5_400_000, "ms", 5_400.0),
        ("weight", 154.3236, "[lb_av]", 70.0),
        ("weight", 70_000, "g", 70.0),
        ("distance", 6.2305, "km", 6_230.5),
        ("heart_rate", 58, "count/min", 58.0),
        ("hrv_sdnn", 44.7, "ms", 44.7),
        # A deviation converts by scale only: +0.9 °F of deviation is +0.5 °C, not -17 °C.
        ("temperature_deviation", 0.9, "[degF]", 0.5),
    ],
)
def test_unit_conversion_to_the_canonical_unit(metric, value, unit, expected):
    assert convert(METRICS[metric], value, unit) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("metric", "unit"), [("steps", "kg"), ("heart_rate", "ms"),
                                              ("weight", "furlongs"), ("spo2", "")])
def test_unconvertible_units_are_refused(metric, unit):
    with pytest.raises(ValueError, match="unit"):
        convert(METRICS[metric], 1.0, unit)


def test_event_id_is_a_deterministic_uuid5_over_the_identity():
    a = event_id("oura", "u1", "hrv_rmssd", START, None, "rec-1")
    assert uuid.UUID(a).version == 5
    same_instant = START.astimezone(timezone(timedelta(hours=2)))
    assert event_id("oura", "u1", "hrv_rmssd", same_instant, None, "rec-1") == a
    assert event_id("oura", "u1", "hrv_sdnn", START, None, "rec-1") != a
    assert event_id("oura", "u2", "hrv_rmssd", START, None, "rec-1") != a
    assert event_id("whoop", "u1", "hrv_rmssd", START, None, "rec-1") != a
    assert event_id("oura", "u1", "hrv_rmssd", START, None, "rec-2") != a
    assert event_id("oura", "u1", "hrv_rmssd", START, START + timedelta(hours=1), "rec-1") != a


def test_make_event_validates_and_normalises():
    event = make_event(provider="auren", user_id="u", provider_user_id="u", metric="weight",
                       value=150, unit="lb", start=START, received_at=RECEIVED)
    assert event.unit == "kg"
    assert event.value == pytest.approx(68.0388555)
    assert event.as_dict()["start"] == "2026-01-01T06:00:00.000000Z"
    with pytest.raises(ValueError, match="unknown metric"):
        make_event(provider="auren", user_id="u", provider_user_id="u", metric="mood", value=1,
                   unit="1", start=START, received_at=RECEIVED)
    with pytest.raises(ValueError, match="outside"):
        make_event(provider="auren", user_id="u", provider_user_id="u", metric="spo2",
                   value=140, unit="%", start=START, received_at=RECEIVED)
    with pytest.raises(ValueError, match="before start"):
        make_event(provider="auren", user_id="u", provider_user_id="u", metric="steps",
                   value=1, unit="{steps}", start=START, end=START - timedelta(seconds=1),
                   received_at=RECEIVED)
    for bad in (True, "12", None, math.nan, math.inf):
        with pytest.raises(ValueError):
            make_event(provider="auren", user_id="u", provider_user_id="u", metric="steps",
                       value=bad, unit="{steps}", start=START, received_at=RECEIVED)


def test_parse_time_requires_an_offset():
    assert parse_time("2026-01-01T07:00:00+01:00") == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert iso(parse_time("2026-01-01T06:00:00Z")) == "2026-01-01T06:00:00.000000Z"
    for bad in ("2026-01-01T06:00:00", "yesterday", "", "2026-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_time(bad)


_any_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                             st.text(max_size=20))


@given(metric=st.one_of(st.sampled_from(sorted(METRICS)), st.text(max_size=20)),
       value=_any_json_scalar, unit=st.text(max_size=12))
def test_make_event_raises_only_value_error_on_any_input(metric, value, unit):
    try:
        event = make_event(provider="auren", user_id="u", provider_user_id="u", metric=metric,
                           value=value, unit=unit, start=START, received_at=RECEIVED)
    except ValueError:
        return
    spec = METRICS[event.metric]
    assert spec.minimum <= event.value <= spec.maximum
    assert math.isfinite(event.value)


@given(value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
       unit=st.sampled_from(["s", "ms", "min", "h"]))
def test_time_conversion_round_trips(value, unit):
    seconds = convert(METRICS["sleep_duration"], value, unit)
    factor = {"s": 1, "ms": 0.001, "min": 60, "h": 3600}[unit]
    assert seconds == pytest.approx(value * factor, rel=1e-9, abs=1e-9)


@given(provider=st.text(max_size=10), user=st.text(max_size=10), metric=st.text(max_size=10),
       record=st.one_of(st.none(), st.text(max_size=10)),
       seconds=st.integers(min_value=0, max_value=4_000_000_000))
def test_event_id_equals_the_standard_library_uuid5(provider, user, metric, record, seconds):
    start = datetime.fromtimestamp(seconds, UTC)
    name = "|".join((provider, user, metric, iso(start), "", record or ""))
    assert event_id(provider, user, metric, start, None, record) == str(
        uuid.uuid5(uuid.UUID("6a1b3c5e-2f4d-5e8a-9b0c-1d2e3f405162"), name))


# --- the input rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["u_42", "acct 1234", "ä-ü", "x" * 256, "7QX3KD", "a.b:c@d"])
def test_identifiers_that_follow_the_rule(value):
    assert is_identifier(value)
    assert identifier(value, "id") == value


@pytest.mark.parametrize("value", ["", " ", "   ", " u", "u ", "u\x00", "u\n1", "\tu", "u\x7f",
                                   "u\u2028", "\ud800", "x" * 257, 42, None, ["u"]])
def test_identifiers_that_break_the_rule(value):
    assert not is_identifier(value)
    with pytest.raises(MeasurementError, match="printable") as info:
        identifier(value, "id")
    assert info.value.reason == INVALID_ITEM


def test_the_plausible_range_of_instants():
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    for ok in (EARLIEST_INSTANT, now, now + FUTURE_TOLERANCE,
               datetime(2026, 6, 3, 12, tzinfo=timezone(timedelta(hours=14)))):
        assert check_instant(ok, now) == ok
    for bad in (EARLIEST_INSTANT - timedelta(microseconds=1),
                now + FUTURE_TOLERANCE + timedelta(microseconds=1),
                datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)):
        with pytest.raises(MeasurementError, match="outside the accepted range") as info:
            check_instant(bad, now, "start")
        assert info.value.reason == INVALID_TIME


@pytest.mark.parametrize("text", [
    "9999-12-31T23:59:59-01:00",  # past datetime.max once in UTC: was an OverflowError (500)
    "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC
    "２０２６-01-01T00:00:00+00:00",  # Unicode digits
    "2026-01-01T00:00:00+00:00\x00",
])
def test_parse_time_refuses_what_utc_cannot_hold_with_a_value_error(text):
    with pytest.raises(MeasurementError) as info:
        parse_time(text)
    assert info.value.reason == INVALID_TIME


def test_make_event_refuses_instants_outside_the_range_relative_to_receipt():
    def event(start, end=None):
        return make_event(provider="auren", user_id="u", provider_user_id="u", metric="steps",
                          value=1, unit="{steps}", start=start, end=end, received_at=RECEIVED)
    assert event(RECEIVED + FUTURE_TOLERANCE).start == RECEIVED + FUTURE_TOLERANCE
    for start, end in ((datetime(1999, 12, 31, tzinfo=UTC), None),
                       (START, RECEIVED + FUTURE_TOLERANCE + timedelta(seconds=1)),
                       (datetime(9999, 1, 1, tzinfo=UTC), None)):
        with pytest.raises(MeasurementError, match="outside") as info:
            event(start, end)
        assert info.value.reason == INVALID_TIME


@pytest.mark.parametrize(("metric", "value", "unit", "reason"), [
    ("mood", 1, "1", "unknown_metric"),
    ("steps", 1, "kg", "unknown_unit"),
    ("vo2_max", 40, "furlongs", "unknown_unit"),
    ("spo2", 140, "%", "invalid_value"),
    ("steps", "12", "{steps}", "invalid_value"),
    ("steps", math.nan, "{steps}", "invalid_value"),
])
def test_every_refusal_says_why_in_one_word(metric, value, unit, reason):
    with pytest.raises(MeasurementError) as info:
        make_event(provider="auren", user_id="u", provider_user_id="u", metric=metric,
                   value=value, unit=unit, start=START, received_at=RECEIVED)
    assert info.value.reason == reason
    assert reason in SKIP_REASONS


# HealthKit's own unit strings, as Health Auto Export prints them in a metric's "units".
@pytest.mark.parametrize(("metric", "value", "unit", "expected"), [
    ("vo2_max", 45.2, "mL/min·kg", 45.2),
    ("vo2_max", 45.2, "mL/min⋅kg", 45.2),
    ("vo2_max", 45.2, "ml/(kg·min)", 45.2),
    ("vo2_max", 45.2, "mL/kg/min", 45.2),
    ("heart_rate", 61, "count/min", 61.0),
    ("heart_rate", 61, "bpm", 61.0),
    ("hrv_sdnn", 44.7, "ms", 44.7),
    ("spo2", 97, "%", 97.0),
    ("skin_temperature", 95.0, "degF", 35.0),
    ("body_temperature", 36.8, "degC", 36.8),
    ("active_energy", 420, "kcal", 420.0),
    ("active_energy", 420, "Cal", 420.0),  # HealthKit's large calorie is the kilocalorie
    ("active_energy", 420_000, "cal", 420.0),  # and its small calorie a thousandth of it
    ("active_energy", 418.4, "kJ", 100.0),
    ("distance", 3.1, "mi", 4988.9664),
    ("distance", 5.87, "km", 5870.0),
    ("distance", 1000, "yd", 914.4),
    ("distance", 100, "in", 2.54),
    ("distance", 250, "cm", 2.5),
    ("sleep_duration", 7.25, "hr", 26_100.0),
    ("sleep_deep", 95, "min", 5_700.0),
    ("steps", 8432, "count", 8432.0),
    ("weight", 165.3, "lb", 74.978819),
    ("weight", 16, "oz", 0.4535924),
    ("blood_pressure_systolic", 118, "mmHg", 118.0),
])
def test_healthkit_unit_spellings(metric, value, unit, expected):
    assert convertible(metric, unit)
    assert convert(METRICS[metric], value, unit) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("metric", "unit"), [
    ("active_energy", "CAL"),  # neither Cal nor cal: ambiguous, so unknown
    ("vo2_max", "kcal/hr·kg"),  # METs, physical effort: not VO2 max
    ("heart_rate", "km/hr"), ("steps", None), ("steps", 5),
])
def test_units_that_are_not_convertible(metric, unit):
    assert not convertible(metric, unit)


def test_a_fetch_window_travels_in_params():
    job = FetchJob(job_id="j", provider="oura", user_id="oura:u", provider_user_id="u",
                   kind="sleep", object_id=None, params={"event_type": "update"},
                   received_at=RECEIVED, window_start=START, window_end=RECEIVED)
    assert job.params == {"event_type": "update",
                          "window_start": "2026-01-01T06:00:00.000000Z",
                          "window_end": "2026-01-02T00:00:00.000000Z"}
    assert job.as_dict()["params"] == job.params
    with pytest.raises(ValueError, match="both"):
        FetchJob(job_id="j", provider="oura", user_id="u", provider_user_id="u", kind="sleep",
                 object_id=None, window_start=START)
    with pytest.raises(ValueError, match="before"):
        FetchJob(job_id="j", provider="oura", user_id="u", provider_user_id="u", kind="sleep",
                 object_id=None, window_start=RECEIVED, window_end=START)
