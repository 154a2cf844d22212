"""Records fetched from the providers' APIs become canonical events through the provider
modules' pure normalizers: in the providers' documented shapes and units, with provenance and
fetch time, skipping (and reporting) what cannot be stored.

The documents are written here in the providers' published shapes, with invented values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auren.providers import fitbit, garmin, oura, polar, terra, whoop, withings
from auren.providers._common import Subject, fetched_batch

FETCHED = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def subject(provider: str, provenance: str = "fetch") -> Subject:
    return Subject(provider, "alice", "p-1", FETCHED, provenance=provenance, fetched_at=FETCHED)


def values(batch) -> dict[str, float]:
    events = batch.all_events
    assert len({e.metric for e in events}) == len(events), "one event per metric expected"
    assert all(e.user_id == "alice" and e.fetched_at == FETCHED for e in events)
    return {e.metric: e.value for e in events}


def test_oura_sleep_is_rmssd_in_its_bedtime_and_a_rest_period_is_not_sleep():
    batch = fetched_batch()
    ignored = oura.documents("sleep", [
        {"id": "8f9a", "day": "2026-03-02", "type": "long_sleep",
         "bedtime_start": "2026-03-01T23:12:00+01:00", "bedtime_end": "2026-03-02T07:03:30+01:00",
         "time_in_bed": 28290, "total_sleep_duration": 25980, "deep_sleep_duration": 5400,
         "light_sleep_duration": 14100, "rem_sleep_duration": 6480, "awake_time": 2310,
         "efficiency": 92, "average_hrv": 61, "lowest_heart_rate": 46, "average_breath": 14.6},
        {"id": "r1", "day": "2026-03-02", "type": "rest", "bedtime_start": "x"}],
        subject("oura"), batch)
    assert ignored == 1
    found = values(batch)
    assert found["sleep_duration"] == 25980 and found["time_in_bed"] == 28290
    assert found["hrv_rmssd"] == 61 and found["resting_heart_rate"] == 46
    start = batch.all_events[0].start
    assert start == datetime(2026, 3, 1, 22, 12, tzinfo=UTC)
    assert {e.provenance for e in batch.all_events} == {"fetch"}


def test_oura_readiness_is_a_temperature_deviation_never_a_temperature():
    batch = fetched_batch()
    oura.documents("daily_readiness", [{"id": "d1", "day": "2026-03-02", "score": 82,
                                        "timestamp": "2026-03-02T00:00:00+01:00",
                                        "temperature_deviation": -0.21}],
                   subject("oura"), batch)
    assert values(batch) == {"readiness_score": 82, "temperature_deviation": -0.21}
    event = batch.all_events[0]
    assert (event.start, event.end) == (datetime(2026, 3, 1, 23, tzinfo=UTC),
                                        datetime(2026, 3, 2, 23, tzinfo=UTC))
    assert oura.api_path("vo2_max") == "vO2_max"


def test_whoop_cycles_are_kilojoules_and_recovery_skin_temperature_is_absolute():
    batch = fetched_batch()
    whoop.cycle({"id": 93845, "start": "2026-03-01T22:00:00.000Z",
                 "end": "2026-03-02T22:30:00.000Z", "score_state": "SCORED",
                 "score": {"strain": 11.2, "kilojoule": 8368.0}}, subject("whoop"), batch)
    whoop.cycle({"id": 93846, "start": "2026-03-02T22:30:00.000Z", "score_state": "SCORED",
                 "score": {"kilojoule": 300.0}}, subject("whoop"), batch)  # current: left out
    whoop.recovery({"cycle_id": 93845, "score_state": "SCORED",
                    "score": {"recovery_score": 72.5, "resting_heart_rate": 51.2,
                              "hrv_rmssd_milli": 68.4, "spo2_percentage": 96.7,
                              "skin_temp_celsius": 33.4}},
                   (datetime(2026, 3, 1, 22, tzinfo=UTC), datetime(2026, 3, 2, 6, tzinfo=UTC)),
                   subject("whoop"), batch)
    whoop.recovery({"cycle_id": 1, "score_state": "PENDING_SCORE"},
                   (FETCHED, None), subject("whoop"), batch)
    found = values(batch)
    assert found["total_energy"] == pytest.approx(2000.0)  # 8368 kJ / 4.184
    assert found["skin_temperature"] == 33.4 and found["hrv_rmssd"] == 68.4
    assert "temperature_deviation" not in found


def test_whoop_total_sleep_is_the_stages_in_milliseconds():
    batch = fetched_batch()
    whoop.sleep({"id": "s1", "start": "2026-03-01T22:00:00Z", "end": "2026-03-02T06:00:00Z",
                 "score_state": "SCORED", "score": {"stage_summary": {
                     "total_in_bed_time_milli": 28_800_000, "total_awake_time_milli": 1_800_000,
                     "total_light_sleep_time_milli": 14_400_000,
                     "total_slow_wave_sleep_time_milli": 5_400_000,
                     "total_rem_sleep_time_milli": 7_200_000}}}, subject("whoop"), batch)
    found = values(batch)
    assert found["sleep_duration"] == 27_000 and found["time_in_bed"] == 28_800


def test_withings_measures_are_scaled_by_powers_of_ten():
    batch = fetched_batch()
    withings.measure_group({"grpid": 4716596696, "date": 1_772_400_000, "category": 1,
                            "measures": [{"value": 36712, "type": 71, "unit": -3},
                                         {"value": 967, "type": 54, "unit": -1},
                                         {"value": 72450, "type": 1, "unit": -3},
                                         {"value": 88, "type": 999, "unit": 0},
                                         {"value": 5, "type": 11, "unit": 99}]},
                           subject("withings"), batch)
    assert values(batch) == {"body_temperature": pytest.approx(36.712),
                             "spo2": pytest.approx(96.7), "weight": pytest.approx(72.45)}
    assert [(s.metric, s.reason) for s in batch.skipped] == [("measure.11", "invalid_value")]


def test_withings_sleep_efficiency_is_a_ratio_stored_as_a_percentage():
    batch = fetched_batch()
    withings.sleep_summary({"id": 1, "startdate": 1_772_400_000, "enddate": 1_772_428_800,
                            "data": {"total_sleep_time": 25_000, "sleep_efficiency": 0.91}},
                           subject("withings"), batch)
    assert values(batch) == {"sleep_duration": 25_000, "sleep_efficiency": pytest.approx(91)}


def test_fitbit_places_local_times_and_skips_a_day_without_data():
    batch = fetched_batch()
    fitbit.sleep_logs({"sleep": [{"logId": 1, "startTime": "2026-03-01T23:10:00.000",
                                  "endTime": "2026-03-02T07:00:00.000", "minutesAsleep": 430,
                                  "timeInBed": 470, "efficiency": 91}]}, 60,
                      subject("fitbit"), batch)
    fitbit.activity_summary("2026-03-02", {"summary": {"steps": 0, "caloriesOut": 1600,
                                                       "distances": []}}, 60,
                            subject("fitbit"), batch)
    fitbit.daily_series("temp", {"tempSkin": [{"dateTime": "2026-03-02",
                                               "value": {"nightlyRelative": -0.4}}]}, 60,
                        subject("fitbit"), batch)
    found = values(batch)
    assert found["sleep_duration"] == 430 * 60 and found["temperature_deviation"] == -0.4
    assert "steps" not in found  # zeros are Fitbit's answer for a day with no data
    sleep = next(e for e in batch.all_events if e.metric == "sleep_duration")
    assert sleep.start == datetime(2026, 3, 1, 22, 10, tzinfo=UTC)


def test_polar_keeps_absolute_skin_temperature_apart_from_its_deviation():
    batch = fetched_batch()
    nights: polar.Nights = {}
    polar.night({"date": "2026-03-02", "sleep_start_time": "2026-03-01T23:00:00.000+01:00",
                 "sleep_end_time": "2026-03-02T07:00:00.000+01:00", "light_sleep": 15_000,
                 "deep_sleep": 5_000, "rem_sleep": 6_000, "total_interruption_duration": 1_800},
                subject("polar"), batch, nights)
    polar.skin_temperature({"sleep_date": "2026-03-02",
                            "sleep_time_skin_temperature_celsius": 33.4,
                            "deviation_from_baseline_celsius": -0.2},
                           subject("polar"), batch, nights)
    found = values(batch)
    assert found["sleep_duration"] == 26_000
    assert (found["skin_temperature"], found["temperature_deviation"]) == (33.4, -0.2)
    skin = next(e for e in batch.all_events if e.metric == "skin_temperature")
    assert skin.start == datetime(2026, 3, 1, 22, tzinfo=UTC)  # placed in the night


def test_garmin_pulled_summaries_go_through_the_push_parser():
    batch = fetched_batch()
    kept = garmin.summary_events("pulseox", {"summaryId": "x1", "startTimeInSeconds":
                                             1_772_400_000, "durationInSeconds": 3600,
                                             "timeOffsetSpo2Values": {"0": 95, "60": 96}},
                                 subject("garmin"), batch)
    assert kept and [e.value for e in batch.all_events] == [95, 96]
    assert not garmin.summary_events("epochs", {"steps": 1}, subject("garmin"), batch)


def test_terra_history_items_are_backfill_with_rmssd_apart_from_sdnn():
    batch = fetched_batch()
    terra.data_item("sleep", {"metadata": {"start_time": "2026-03-01T23:00:00+01:00",
                                           "end_time": "2026-03-02T07:00:00+01:00"},
                              "heart_rate_data": {"summary": {"avg_hrv_rmssd": 61.5,
                                                              "avg_hrv_sdnn": 88.0}}},
                    subject("terra", "backfill"), batch, 1000)
    assert values(batch) == {"hrv_rmssd": 61.5, "hrv_sdnn": 88.0}
    assert {e.provenance for e in batch.all_events} == {"backfill"}
