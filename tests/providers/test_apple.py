from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from auren.errors import (
    Forbidden,
    InvalidPayload,
    MalformedPayload,
    SignatureInvalid,
    UnsupportedMediaType,
)
from auren.providers.apple import AppleHealthProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, request
from tests.providers.samples.apple import KEYS, PAYLOAD, T, metric


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def provider(keys: str = KEYS) -> AppleHealthProvider:
    built = AppleHealthProvider.from_settings(Settings(_env_file=None, hae_api_keys=keys))
    assert built is not None
    return built


def bound(body: bytes, **extra: str):
    return request(body, {"api-key": "sk-bound-key", **extra})


def parse_metrics(*metrics: dict[str, Any]):
    return provider().parse(bound(encode({"data": {"metrics": list(metrics)}})), RECEIVED)


def values(delivery):
    return {event.metric: event.value for event in delivery.events}


def test_not_configured_without_keys():
    assert AppleHealthProvider.from_settings(Settings(_env_file=None)) is None


@pytest.mark.parametrize("entry", [":key", "user:", ""])
def test_malformed_key_entries_fail_at_start_up(entry):
    with pytest.raises(ValueError, match="HAE_API_KEYS"):
        AppleHealthProvider((entry,))


@pytest.mark.parametrize("headers", [
    {"api-key": "sk-bound-key"}, {"api-key": "sk-open-key"},
    {"authorization": "Bearer sk-open-key"}, {"authorization": "bearer  sk-bound-key "},
    {"api-key": "wrong", "authorization": "Bearer sk-open-key"},
])
def test_configured_keys_pass(headers):
    provider().verify(request(b"{}", headers), NOW)


@pytest.mark.parametrize("headers", [
    {}, {"api-key": "sk-unknown"}, {"authorization": "Basic sk-open-key"},
    {"authorization": "Bearer"}, {"api-key": "u_42:sk-bound-key"}, {"api-key": ""},
])
def test_missing_or_wrong_keys_are_401(headers):
    with pytest.raises(SignatureInvalid):
        provider().verify(request(b"{}", headers), NOW)


@pytest.mark.parametrize("key", ["old-key", "new-key"])
def test_rotation_accepts_either_key(key):
    provider("old-key,new-key").verify(request(b"{}", {"api-key": key}), NOW)


def test_no_handshake():
    assert provider().handshake(request(method="GET")) is None


def test_bound_key_writes_for_its_user():
    delivery = provider().parse(bound(encode(PAYLOAD)), RECEIVED)
    assert {e.user_id for e in delivery.events} == {"u_42"}
    assert {e.provider_user_id for e in delivery.events} == {"u_42"}
    same = provider().parse(bound(encode(PAYLOAD), **{"x-auren-user-id": "u_42"}), RECEIVED)
    assert {e.user_id for e in same.events} == {"u_42"}


def test_bound_key_cannot_write_for_another_user():
    with pytest.raises(Forbidden):
        provider().parse(bound(encode(PAYLOAD), **{"x-auren-user-id": "u_7"}), RECEIVED)


def test_unbound_key_names_the_user_by_query_or_header():
    body = encode(PAYLOAD)
    by_query = request(body, {"api-key": "sk-open-key"}, query={"user_id": "u_7"})
    by_header = request(body, {"api-key": "sk-open-key", "x-auren-user-id": "u_8"})
    assert provider().parse(by_query, RECEIVED).events[0].user_id == "u_7"
    assert provider().parse(by_header, RECEIVED).events[0].user_id == "u_8"


def test_unbound_key_without_a_user_is_422():
    with pytest.raises(InvalidPayload, match="user_id"):
        provider().parse(request(encode(PAYLOAD), {"api-key": "sk-open-key"}), RECEIVED)


def test_parse_without_a_valid_key_is_401():
    with pytest.raises(SignatureInvalid):
        provider().parse(request(encode(PAYLOAD), {"api-key": "nope"}), RECEIVED)


def test_heart_rate_uses_avg_and_hrv_is_sdnn():
    delivery = provider().parse(bound(encode(PAYLOAD)), RECEIVED)
    assert values(delivery) == {"heart_rate": 58.4, "hrv_sdnn": 44.7, "steps": 312.0}
    assert "hrv_rmssd" not in values(delivery)
    heart = delivery.events[0]
    assert heart.start == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    assert heart.end is None
    assert heart.unit == "/min"


def test_event_ids_are_stable_across_parses():
    first = provider().parse(bound(encode(PAYLOAD)), RECEIVED)
    second = provider().parse(bound(encode(PAYLOAD)), datetime.now(UTC))
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]


def test_units_are_converted():
    delivery = parse_metrics(
        metric("body_temperature", "degF", {"date": T, "qty": 98.6}),
        metric("weight_body_mass", "lb", {"date": T, "qty": 165.3}),
        metric("walking_running_distance", "km", {"date": T, "qty": 2.5}),
        metric("active_energy", "kJ", {"date": T, "qty": 418.4}),
        metric("vo2_max", "ml/(kg·min)", {"date": T, "qty": 42.1}),
        metric("apple_sleeping_wrist_temperature", "degC", {"date": T, "qty": 34.9}),
        metric("respiratory_rate", "count/min", {"date": T, "qty": 14.5}),
        metric("resting_heart_rate", "count/min", {"date": T, "qty": 52}),
    )
    assert values(delivery) == {
        "body_temperature": pytest.approx(37.0),
        "weight": pytest.approx(74.979, abs=1e-3),
        "distance": pytest.approx(2500.0),
        "active_energy": pytest.approx(100.0),
        "vo2_max": 42.1,
        "skin_temperature": 34.9,
        "respiratory_rate": 14.5,
        "resting_heart_rate": 52.0,
    }


def test_percentages_sent_as_fractions_are_scaled():
    delivery = parse_metrics(
        metric("blood_oxygen_saturation", "%", {"date": T, "qty": 0.97},
               {"date": "2026-01-01 08:00:00 +0100", "qty": 96}),
        metric("body_fat_percentage", "%", {"date": T, "qty": 0.185}),
    )
    assert [(e.metric, e.value) for e in delivery.events] == [
        ("spo2", pytest.approx(97.0)), ("spo2", 96.0), ("body_fat", pytest.approx(18.5))]


def test_blood_pressure_makes_two_events():
    delivery = parse_metrics(
        metric("blood_pressure", "mmHg", {"date": T, "systolic": 118, "diastolic": 76}))
    assert values(delivery) == {"blood_pressure_systolic": 118.0,
                                "blood_pressure_diastolic": 76.0}


def test_aggregated_sleep_hours_become_seconds():
    night = {"date": "2026-01-01 00:00:00 +0100", "totalSleep": 7.5, "asleep": 0,
             "core": 4.0, "deep": 1.5, "rem": 2.0, "awake": 0.25,
             "sleepStart": "2025-12-31 23:30:00 +0100", "sleepEnd": "2026-01-01 07:15:00 +0100",
             "inBed": 7.9}
    delivery = parse_metrics(metric("sleep_analysis", "hr", night))
    # inBed is time in bed, kept apart: never sleep.
    assert values(delivery) == {"sleep_duration": 27000.0, "sleep_light": 14400.0,
                                "sleep_deep": 5400.0, "sleep_rem": 7200.0, "sleep_awake": 900.0,
                                "time_in_bed": pytest.approx(28440.0)}
    event = delivery.events[0]
    assert event.start == datetime(2025, 12, 31, 22, 30, tzinfo=UTC)
    assert event.end == datetime(2026, 1, 1, 6, 15, tzinfo=UTC)


def test_time_in_bed_has_its_own_window_when_given():
    night = {"date": "2026-01-01 00:00:00 +0100", "totalSleep": 7.0, "inBed": 8.0,
             "sleepStart": "2025-12-31 23:30:00 +0100", "sleepEnd": "2026-01-01 07:15:00 +0100",
             "inBedStart": "2025-12-31 23:00:00 +0100", "inBedEnd": "2026-01-01 07:00:00 +0100"}
    events = {e.metric: e for e in parse_metrics(metric("sleep_analysis", "hr", night)).events}
    assert (events["time_in_bed"].start, events["time_in_bed"].end) == (
        datetime(2025, 12, 31, 22, tzinfo=UTC), datetime(2026, 1, 1, 6, tzinfo=UTC))
    assert events["sleep_duration"].value == 25200.0


@pytest.mark.parametrize(("night", "total"), [
    # Stages without totalSleep: the asleep stages add up; "asleep" is the unstaged part.
    ({"asleep": 0.5, "core": 4.0, "deep": 1.0, "rem": 1.5, "awake": 0.5, "inBed": 8.0}, 25200.0),
    ({"core": 4.0, "deep": 1.0, "rem": 1.5}, 23400.0),
    # No stages and no total: nothing is called sleep, time in bed is still kept.
    ({"awake": 0.5, "inBed": 8.0}, None),
])
def test_total_sleep_without_total_sleep_is_the_asleep_stages(night, total):
    point = {"date": "2026-01-01 00:00:00 +0100", **night}
    delivery = parse_metrics(metric("sleep_analysis", "hr", point))
    assert values(delivery).get("sleep_duration") == total


def test_older_sleep_uses_asleep_and_defaults_to_hours():
    night = {"date": "2026-01-01 00:00:00 +0100", "asleep": 7.0}
    assert values(parse_metrics(metric("sleep_analysis", None, night))) == {
        "sleep_duration": 25200.0}


def test_unknown_and_unaggregated_items_are_counted_not_rejected():
    delivery = provider().parse(bound(encode({"data": {
        "metrics": [
            metric("basal_energy_burned", "kcal", {"date": T, "qty": 1600}),
            metric("walking_asymmetry_percentage", "%", {"date": T, "qty": 0.5}),
            {"name": 7},
            metric("sleep_analysis", "hr", {"startDate": T, "endDate": T, "qty": 0.5,
                                            "value": "Core"}),
            *PAYLOAD["data"]["metrics"],
        ],
        "workouts": [{"name": "Run"}], "stateOfMind": [],
    }})), RECEIVED)
    assert len(delivery.events) == 3
    assert delivery.ignored == 4
    assert [(e.metric, e.reason) for e in delivery.skipped] == [
        ("data.metrics[2]", "invalid_item")]


def test_iso_dates_are_accepted_too():
    delivery = parse_metrics(metric("step_count", "count",
                                    {"date": "2026-01-01T07:00:00+01:00", "qty": 1}))
    assert delivery.events[0].start == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


# (metric entry, reason reported, points skipped, events stored); the step count beside each
# is always stored: one bad metric never costs the export.
@pytest.mark.parametrize(("item", "reason", "count", "stored"), [
    (metric("heart_rate", "count/min", {"date": T, "Avg": 58}, {"date": "today", "Avg": 60}),
     "invalid_time", 1, 1),
    (metric("heart_rate", "furlongs", {"date": T, "Avg": 58}, {"date": T, "Avg": 59}),
     "unknown_unit", 2, 0),
    (metric("heart_rate", None, {"date": T, "Avg": 58}), "unknown_unit", 1, 0),
    (metric("heart_rate", 5, {"date": T, "Avg": 58}), "unknown_unit", 1, 0),
    (metric("weight_body_mass", "count/min", {"date": T, "qty": 70}), "unknown_unit", 1, 0),
    (metric("heart_rate", "count/min", {"date": T, "Avg": 900}), "invalid_value", 1, 0),
    (metric("step_count", "count", {"date": "2026-01-01 07:00:00", "qty": 1}), "invalid_time",
     1, 0),
    (metric("step_count", "count", {"date": "1999-12-31 23:00:00 +0000", "qty": 1}),
     "invalid_time", 1, 0),
    (metric("step_count", "count", {"date": T, "qty": "12"}), "invalid_value", 1, 0),
    (metric("step_count", "count", {"date": T, "qty": 12}, "not a point"), "invalid_item", 1,
     1),
    (metric("blood_pressure", "mmHg", {"date": T, "systolic": 118}), "invalid_value", 1, 1),
    ({"name": "step_count", "units": "count", "data": {}}, "invalid_item", 1, 0),
])
def test_what_cannot_be_stored_is_skipped_and_the_rest_kept(item, reason, count, stored):
    steps = metric("walking_running_distance", "km", {"date": T, "qty": 1.2})
    delivery = parse_metrics(item, steps)
    assert len(delivery.events) == stored + 1
    assert delivery.events[-1].metric == "distance"
    (skipped,) = delivery.skipped
    assert (skipped.metric, skipped.reason, skipped.count) == (item["name"], reason, count)


def test_a_user_id_must_follow_the_identifier_rule():
    for user in (" ", "u\x00", "u\n", " u", "x" * 257):
        req = request(encode(PAYLOAD), {"api-key": "sk-open-key", "x-auren-user-id": user})
        with pytest.raises(InvalidPayload, match="user_id"):
            provider().parse(req, RECEIVED)
    with pytest.raises(ValueError, match="HAE_API_KEYS"):
        AppleHealthProvider((" :key",))


def test_missing_data_is_422_and_bad_json_is_400():
    with pytest.raises(InvalidPayload, match="data"):
        provider().parse(bound(b'{"metrics": []}'), RECEIVED)
    with pytest.raises(MalformedPayload):
        provider().parse(bound(b'{"data": '), RECEIVED)


def test_csv_export_is_415():
    req = request(b"--x\r\n", {"api-key": "sk-bound-key",
                               "content-type": "multipart/form-data; boundary=x"})
    with pytest.raises(UnsupportedMediaType):
        provider().parse(req, RECEIVED)
