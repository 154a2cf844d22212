"""Sample payloads in each vendor's documented shape, signed as each vendor documents, through
the real provider classes: verified, parsed, and every stored value checked with its unit and
time frame (expected values worked out by hand from the fixture, not by the code under test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auren.events import Delivery
from auren.providers import PROVIDER_CLASSES
from auren.providers.base import Provider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, request
from tests.providers.vendors import HAE_USER, SECRETS, fixture, signed, thin

SETTINGS = Settings(_env_file=None, **{k.lower(): v for k, v in SECRETS.items()})


def provider(name: str) -> Provider:
    built = PROVIDER_CLASSES[name].from_settings(SETTINGS)
    assert built is not None
    return built


def deliver(name: str, payload: Any) -> Delivery:
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    req = request(body, signed(name, body, NOW), client_ip="203.0.113.9")
    chosen = provider(name)
    assert chosen.handshake(req) is None
    chosen.verify(req, NOW)
    return chosen.parse(req, RECEIVED)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def table(delivery: Delivery) -> set[tuple[str, float, str, datetime, datetime | None]]:
    return {(e.metric, round(e.value, 4), e.unit, e.start, e.end) for e in delivery.events}


# --- Garmin (push) -----------------------------------------------------------------------------

DAY, NIGHT, HOUR = 1_767_135_600, 1_767_134_400, 1_767_139_200


def test_garmin_push_of_every_summary_type():
    delivery = deliver("garmin", fixture("garmin_push.json"))
    day_end, night_end = at(DAY + 86_400), at(NIGHT + 26_880)
    assert table(delivery) == {
        # dailies
        ("steps", 9120.0, "{steps}", at(DAY), day_end),
        ("distance", 6980.5, "m", at(DAY), day_end),
        ("active_energy", 512.0, "kcal", at(DAY), day_end),
        ("resting_heart_rate", 52.0, "/min", at(DAY), day_end),
        ("heart_rate", 68.0, "/min", at(DAY), day_end),
        *{("heart_rate", bpm, "/min", at(DAY + offset), None)
          for offset, bpm in ((0, 58.0), (15, 59.0), (30, 61.0), (45, 60.0))},
        # sleeps: durationInSeconds (26880) is deep + light + REM + awake, the time in bed;
        # total sleep is deep + light + REM = 25560.
        ("sleep_duration", 25560.0, "s", at(NIGHT), night_end),
        ("time_in_bed", 26880.0, "s", at(NIGHT), night_end),
        ("sleep_deep", 5460.0, "s", at(NIGHT), night_end),
        ("sleep_light", 14220.0, "s", at(NIGHT), night_end),
        ("sleep_rem", 5880.0, "s", at(NIGHT), night_end),
        ("sleep_awake", 1320.0, "s", at(NIGHT), night_end),
        ("sleep_score", 81.0, "{score}", at(NIGHT), night_end),
        *{("respiratory_rate", rate, "/min", at(NIGHT + offset), None)
          for offset, rate in ((60, 14.9), (120, 15.2), (180, 14.6))},
        *{("spo2", pct, "%", at(NIGHT + offset), None)
          for offset, pct in ((0, 95.0), (60, 96.0), (120, 94.0))},
        # hrv: the nightly RMSSD and its 5-minute values
        ("hrv_rmssd", 47.0, "ms", at(NIGHT), night_end),
        *{("hrv_rmssd", ms, "ms", at(NIGHT + offset), None)
          for offset, ms in ((300, 45.0), (600, 51.0), (900, 48.0))},
        # pulseox, allDayRespiration
        ("spo2", 96.0, "%", at(HOUR), None), ("spo2", 95.0, "%", at(HOUR + 60), None),
        *{("respiratory_rate", rate, "/min", at(HOUR + offset), None)
          for offset, rate in ((0, 14.6), (60, 14.4), (120, 15.1))},
        # bodyComps: grams become kilograms, at the measurement time
        ("weight", 72.4, "kg", at(1_767_165_120), None),
        ("body_fat", 18.5, "%", at(1_767_165_120), None),
    }
    assert len(delivery.events) == 33
    assert delivery.ignored == 2  # epochs and stressDetails: no metric kept for them
    assert delivery.skipped == []
    assert {e.user_id for e in delivery.events} == {"garmin:4aa0e1d7-8b2c-4d3e-9f10-a1b2c3d4e5f6"}
    assert len({e.event_id for e in delivery.events}) == 33
    again = deliver("garmin", fixture("garmin_push.json"))
    assert [e.event_id for e in again.events] == [e.event_id for e in delivery.events]


# --- Terra -------------------------------------------------------------------------------------


def test_terra_sleep_with_its_heart_rate_and_hrv_samples():
    delivery = deliver("terra", fixture("terra_sleep.json"))
    start, end = utc("2025-12-30T23:42:00+01:00"), utc("2025-12-31T07:18:30+01:00")
    sample = utc("2025-12-31T00:00:00+01:00")
    later = sample + timedelta(minutes=5)
    assert table(delivery) == {
        ("heart_rate", 53.2, "/min", start, end),
        ("resting_heart_rate", 48.0, "/min", start, end),
        ("hrv_rmssd", 57.4, "ms", start, end),
        ("sleep_duration", 24930.0, "s", start, end),
        ("sleep_deep", 5130.0, "s", start, end),
        ("sleep_light", 13920.0, "s", start, end),
        ("sleep_rem", 5880.0, "s", start, end),
        ("sleep_awake", 1260.0, "s", start, end),
        ("time_in_bed", 27390.0, "s", start, end),
        ("sleep_efficiency", 91.0, "%", start, end),
        ("respiratory_rate", 14.4, "/min", start, end),
        ("spo2", 95.8, "%", start, end),
        ("temperature_deviation", -0.21, "Cel", start, end),
        ("heart_rate", 54.0, "/min", sample, None), ("heart_rate", 52.0, "/min", later, None),
        ("hrv_rmssd", 55.1, "ms", sample, None), ("hrv_rmssd", 61.0, "ms", later, None),
    }
    assert {e.user_id for e in delivery.events} == {"acct_1234"}
    assert {e.source_record_id for e in delivery.events} == {"5c3a9e1f-sleep-2025-12-31"}
    assert (delivery.ignored, delivery.skipped) == (0, [])


def test_terra_daily():
    delivery = deliver("terra", fixture("terra_daily.json"))
    start, end = utc("2025-12-31T00:00:00+01:00"), utc("2026-01-01T00:00:00+01:00")
    first = utc("2025-12-31T08:00:00+01:00")
    assert table(delivery) == {
        ("heart_rate", 68.0, "/min", start, end),
        ("resting_heart_rate", 52.0, "/min", start, end),
        ("steps", 9120.0, "{steps}", start, end),
        ("distance", 6980.5, "m", start, end),
        ("total_energy", 2214.0, "kcal", start, end),
        ("active_energy", 512.0, "kcal", start, end),
        ("spo2", 96.1, "%", start, end),
        ("vo2_max", 44.0, "mL/min/kg", start, end),
        *{("heart_rate", bpm, "/min", first + timedelta(seconds=offset), None)
          for offset, bpm in ((0, 71.0), (15, 74.0), (30, 77.0))},
    }


def test_terra_samples_in_local_time_only_are_skipped_not_guessed():
    payload = fixture("terra_sleep.json")
    samples = payload["data"][0]["heart_rate_data"]["detailed"]["hr_samples"]
    samples.append({"timestamp": "2025-12-31T00:10:00.000000", "bpm": 50})
    delivery = deliver("terra", payload)
    assert len(delivery.events) == 17
    (skipped,) = delivery.skipped
    assert (skipped.metric, skipped.reason, skipped.count) == (
        "heart_rate_data.detailed.hr_samples", "invalid_time", 1)


# --- Health Auto Export ------------------------------------------------------------------------


def test_health_auto_export_with_healthkits_own_unit_spellings():
    delivery = deliver("apple", fixture("hae_export.json"))
    sleep = (utc("2025-12-30T23:38:00+01:00"), utc("2025-12-31T07:02:00+01:00"))
    in_bed = (utc("2025-12-30T23:20:00+01:00"), utc("2025-12-31T06:56:00+01:00"))

    def point(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").astimezone(UTC)

    midnight = point("2025-12-31 00:00:00 +0100")
    assert table(delivery) == {
        ("heart_rate", 58.4, "/min", point("2025-12-31 07:00:00 +0100"), None),
        ("heart_rate", 57.0, "/min", point("2025-12-31 07:01:00 +0100"), None),
        ("resting_heart_rate", 51.0, "/min", midnight, None),
        ("hrv_sdnn", 44.7, "ms", point("2025-12-31 06:58:12 +0100"), None),  # SDNN, not RMSSD
        ("spo2", 96.0, "%", point("2025-12-31 03:12:40 +0100"), None),
        ("respiratory_rate", 14.5, "/min", point("2025-12-31 03:00:00 +0100"), None),
        ("steps", 8432.0, "{steps}", midnight, None),
        ("active_energy", 500.0, "kcal", midnight, None),  # 2092 kJ
        ("distance", 5874.1056, "m", midnight, None),  # 3.65 mi
        ("vo2_max", 45.2, "mL/min/kg", point("2025-12-31 09:00:00 +0100"), None),  # mL/min·kg
        ("skin_temperature", 35.3, "Cel", point("2025-12-31 06:00:00 +0100"), None),  # 95.54 °F
        ("weight", 72.3933, "kg", point("2025-12-31 07:30:00 +0100"), None),  # 159.6 lb
        ("body_fat", 18.5, "%", point("2025-12-31 07:30:00 +0100"), None),
        ("blood_pressure_systolic", 118.0, "mm[Hg]", point("2025-12-31 08:00:00 +0100"), None),
        ("blood_pressure_diastolic", 76.0, "mm[Hg]", point("2025-12-31 08:00:00 +0100"), None),
        # hours become seconds; total sleep is totalSleep, time in bed apart with its window
        ("sleep_duration", 25380.0, "s", *sleep),
        ("sleep_light", 14040.0, "s", *sleep),
        ("sleep_deep", 4500.0, "s", *sleep),
        ("sleep_rem", 6840.0, "s", *sleep),
        ("sleep_awake", 1260.0, "s", *sleep),
        ("time_in_bed", 27360.0, "s", *in_bed),
    }
    assert {e.user_id for e in delivery.events} == {HAE_USER}
    # basal_energy_burned, physical_effort (kcal/hr·kg) and time_in_daylight: no metric here.
    assert (delivery.ignored, delivery.skipped) == (3, [])


@pytest.mark.parametrize(("extra", "reason", "count"), [
    ({"name": "body_temperature", "units": "degR",
      "data": [{"date": "2025-12-31 06:00:00 +0100", "qty": 558.0},
               {"date": "2025-12-31 07:00:00 +0100", "qty": 559.0}]}, "unknown_unit", 2),
    ({"name": "vo2_max", "units": "kcal/hr·kg",
      "data": [{"date": "2025-12-31 09:00:00 +0100", "qty": 45.2}]}, "unknown_unit", 1),
    ({"name": "body_temperature", "units": "degC",
      "data": [{"date": "2025-12-31 06:00:00", "qty": 36.6}]}, "invalid_time", 1),
])
def test_one_bad_metric_never_costs_the_rest_of_the_export(extra, reason, count):
    payload = fixture("hae_export.json")
    payload["data"]["metrics"].insert(3, extra)
    delivery = deliver("apple", payload)
    assert len(delivery.events) == 21
    (skipped,) = delivery.skipped
    assert (skipped.metric, skipped.reason, skipped.count) == (extra["name"], reason, count)


# --- thin notifications ------------------------------------------------------------------------


def test_oura_notifications_with_and_without_an_object():
    (job,) = deliver("oura", thin("oura")).fetch_jobs
    assert (job.kind, job.object_id, job.window_start) == (
        "daily_readiness", "b1e0c8d2-5a55-4e0f-9c44-0d6f1a2b3c4d", None)
    (window,) = deliver("oura", thin("oura_without_object")).fetch_jobs
    assert (window.kind, window.object_id) == ("sleep", None)
    assert (window.window_start, window.window_end) == (
        datetime(2025, 12, 29, 7, 42, 10, tzinfo=UTC), datetime(2025, 12, 31, 7, 42, 10,
                                                                tzinfo=UTC))
    assert window.user_id == "oura:ou_8c31f0"


@pytest.mark.parametrize(("name", "kind", "object_id"), [
    ("whoop_v2", "sleep.updated", "ecfcea6a-4d44-4a8f-a6b9-2f3bb7e11a90"),
    ("whoop_v1", "recovery.updated", "93845"),
])
def test_whoop_v1_and_v2_notifications(name, kind, object_id):
    delivery = deliver("whoop", thin(name))
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.object_id, job.user_id) == (kind, object_id, "whoop:10129")
    assert delivery.delivery_key == thin(name)["trace_id"]


def test_fitbit_batched_notifications():
    delivery = deliver("fitbit", thin("fitbit"))
    assert [(j.kind, j.object_id, j.user_id) for j in delivery.fetch_jobs] == [
        ("sleep", "2025-12-31", "fitbit:7QX3KD"), ("activities", "2025-12-31", "fitbit:7QX3KD")]
    assert delivery.success_status == 204


@pytest.mark.parametrize(("name", "object_id"), [("polar_exercise", "Kq83zP"),
                                                 ("polar_sleep", "2025-12-31")])
def test_polar_notifications(name, object_id):
    (job,) = deliver("polar", thin(name)).fetch_jobs
    assert (job.object_id, job.params["url"]) == (object_id, thin(name)["url"])


def test_withings_notification_and_its_window():
    (job,) = deliver("withings", thin("withings")).fetch_jobs
    assert (job.kind, job.user_id) == ("44", "withings:3318842")
    assert (job.window_start, job.window_end) == (at(1_767_134_400), at(1_767_163_800))
