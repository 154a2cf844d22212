from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auren.events import METRICS, convert, event_id, iso, make_event, parse_time

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
