"""The whole chain on the embedded bridge, per provider: connect through the simulator's OAuth
(or Terra's widget), the history on connect, a new day's signed notification, the fetch, and
the events checked against what the simulator served, in the provider's units.

One simulator and one bridge process (fetcher in process) serve the module; each test uses a
wearer of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from auren.events import iso
from tests.connections.kit import System, record, revealed_day, system

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system(tmp_path_factory.mktemp("fetch")) as found:
        yield found


def one(events: list[dict[str, Any]], metric: str, provider: str, **where: Any) -> float:
    found = [e for e in events if e["metric"] == metric and e["provider"] == provider
             and all(e[k] == v for k, v in where.items())]
    assert len(found) == 1, (metric, where, found)
    assert found[0]["provenance"] in ("fetch", "backfill", "push")
    value: float = found[0]["value"]
    return value


def connect_and_advance(world: System, provider: str, wearer: int
                        ) -> tuple[str, date, list[dict[str, Any]]]:
    name = f"{provider}-person-{wearer}"
    connected = world.connect(provider, name, wearer)
    assert connected["status"] == "active" and connected["user_id"] == name
    world.wait_idle(60)
    result = world.advance(wearer)
    assert {n["status"] for n in result["notifications"] if n["provider"] == provider} <= {
        200, 202, 204}, result
    world.wait_idle(60)
    return name, revealed_day(result), world.events(name)


def test_oura_documents_become_events_with_rmssd_and_the_temperature_deviation(world):
    _, day, events = connect_and_advance(world, "oura", 1)
    r = record(world.end, 1, day)
    at_night = {"start": iso(r.sleep_start)}
    assert one(events, "hrv_rmssd", "oura", **at_night) == round(r.hrv_rmssd_ms)
    assert one(events, "sleep_duration", "oura", **at_night) == r.sleep_duration_s
    assert one(events, "time_in_bed", "oura", **at_night) == r.time_in_bed_s
    assert one(events, "resting_heart_rate", "oura", **at_night) == r.resting_hr_bpm
    assert one(events, "temperature_deviation", "oura", start=iso(r.day_start)) == \
        pytest.approx(r.temperature_deviation_c)
    # A deviation from baseline is never stored as an absolute temperature.
    assert not [e for e in events if e["metric"] in ("skin_temperature", "body_temperature")]
    assert one(events, "steps", "oura", start=iso(r.day_start)) == r.steps
    fetched = [e for e in events if e["start"] == at_night["start"]]
    assert {e["provenance"] for e in fetched} == {"fetch"}
    assert all(e["fetched_at"] for e in fetched)
    # The history fetched on connect: the earlier visible days, as a backfill.
    earlier = record(world.end, 1, day - timedelta(days=1))
    assert [e["provenance"] for e in events if e["metric"] == "hrv_rmssd"
            and e["start"] == iso(earlier.sleep_start)] == ["backfill"]


def test_whoop_energy_is_converted_from_kilojoules_and_skin_temperature_is_absolute(world):
    _, day, events = connect_and_advance(world, "whoop", 2)
    r = record(world.end, 2, day)
    night = {"start": iso(r.sleep_start), "end": iso(r.sleep_end)}
    assert one(events, "hrv_rmssd", "whoop", **night) == pytest.approx(r.hrv_rmssd_ms)
    assert one(events, "sleep_duration", "whoop", **night) == r.light_s + r.deep_s + r.rem_s
    assert one(events, "time_in_bed", "whoop", **night) == r.time_in_bed_s
    assert one(events, "skin_temperature", "whoop", **night) == pytest.approx(
        round(33.6 + r.temperature_deviation_c, 2))
    # The cycle that ended as this night began: WHOOP's kilojoules, stored as kcal.
    previous = record(world.end, 2, day - timedelta(days=1))
    weight = world_weight(world, 2)
    kilojoules = round((round(weight * 22.0) + previous.active_energy_kcal) * 4.184, 1)
    energy = [e for e in events if e["metric"] == "total_energy"
              and e["start"] == iso(previous.sleep_start)]
    assert len(energy) == 1 and energy[0]["unit"] == "kcal"
    assert energy[0]["value"] == pytest.approx(kilojoules / 4.184)


def world_weight(world: System, wearer: int) -> float:
    from tests.connections.kit import histories

    return histories(world.end)[wearer].profile.weight_kg


def test_fitbit_local_times_and_the_nightly_series(world):
    _, day, events = connect_and_advance(world, "fitbit", 3)
    r = record(world.end, 3, day)
    assert one(events, "hrv_rmssd", "fitbit", source_record_id=day.isoformat()) == \
        pytest.approx(r.hrv_rmssd_ms)
    assert one(events, "temperature_deviation", "fitbit",
               source_record_id=day.isoformat()) == pytest.approx(r.temperature_deviation_c)
    # Sleep minutes are rounded by Fitbit; local wall-clock times placed with the offset.
    assert one(events, "sleep_duration", "fitbit", start=iso(r.sleep_start)) == \
        round(r.sleep_duration_s / 60) * 60
    assert one(events, "steps", "fitbit", source_record_id=day.isoformat()) == r.steps
    assert one(events, "distance", "fitbit", source_record_id=day.isoformat()) == \
        pytest.approx(round(r.distance_m / 1000, 2) * 1000)


def test_polar_registers_and_moves_its_urls_onto_the_configured_api(world):
    _, day, events = connect_and_advance(world, "polar", 4)
    r = record(world.end, 4, day)
    record_id = f"sleep:{day.isoformat()}"
    assert one(events, "sleep_duration", "polar", source_record_id=record_id) == \
        r.light_s + r.deep_s + r.rem_s
    assert one(events, "hrv_rmssd", "polar") == round(r.hrv_rmssd_ms)
    # Absolute skin temperature and the deviation from baseline: two metrics.
    assert one(events, "skin_temperature", "polar") == pytest.approx(
        round(33.6 + r.temperature_deviation_c, 2))
    assert one(events, "temperature_deviation", "polar") == pytest.approx(
        r.temperature_deviation_c)
    assert one(events, "steps", "polar") == r.steps
    # Nothing before the registration is visible at Polar: only the new day came.
    assert {e["start"][:10] for e in events if e["metric"] == "sleep_duration"} == {
        iso(r.sleep_start)[:10]}


def test_withings_values_are_scaled_by_powers_of_ten(world):
    _, day, events = connect_and_advance(world, "withings", 5)
    r = record(world.end, 5, day)
    spo2 = [e for e in events if e["metric"] == "spo2" and e["start"] == iso(r.sleep_end)]
    assert [e["value"] for e in spo2] == [pytest.approx(round(r.spo2_pct * 10) / 10)]
    skin = round(33.6 + r.temperature_deviation_c, 2)
    assert one(events, "skin_temperature", "withings", start=iso(r.sleep_end)) == \
        pytest.approx(round(skin * 1000) / 1000)
    weight = world_weight(world, 5)
    day_number = (day - date(2000, 1, 1)).days
    expected = round(round(weight + 0.4 * math.sin(day_number / 9.0), 2) * 1000) / 1000
    assert one(events, "weight", "withings",
               start=iso(r.sleep_end + timedelta(seconds=900))) == pytest.approx(expected)
    # The sleep efficiency ratio (0.91) is a percentage.
    assert one(events, "sleep_efficiency", "withings", start=iso(r.sleep_start)) == \
        pytest.approx(round(r.sleep_efficiency_pct / 100, 3) * 100)
    assert one(events, "sleep_duration", "withings", start=iso(r.sleep_start)) == \
        r.sleep_duration_s


def test_garmin_pings_are_pulled_from_the_configured_api(world):
    _, day, events = connect_and_advance(world, "garmin", 6)
    r = record(world.end, 6, day)
    assert one(events, "hrv_rmssd", "garmin", start=iso(r.sleep_start)) == \
        pytest.approx(r.hrv_rmssd_ms)
    assert one(events, "steps", "garmin", start=iso(r.day_start)) == r.steps
    assert one(events, "time_in_bed", "garmin", start=iso(r.sleep_start)) == r.time_in_bed_s
    assert one(events, "sleep_duration", "garmin", start=iso(r.sleep_start)) == \
        r.deep_s + r.light_s + r.rem_s
    assert one(events, "temperature_deviation", "garmin", start=iso(r.sleep_start)) == \
        pytest.approx(r.temperature_deviation_c)


def test_terra_connects_through_its_widget_and_keeps_rmssd_apart_from_sdnn(world):
    _, day, events = connect_and_advance(world, "terra", 7)
    r = record(world.end, 7, day)
    night = {"start": iso(r.sleep_start)}
    rmssd = one(events, "hrv_rmssd", "terra", **night)
    sdnn = one(events, "hrv_sdnn", "terra", **night)
    assert (rmssd, sdnn) == (pytest.approx(r.hrv_rmssd_ms), pytest.approx(r.hrv_sdnn_ms))
    assert rmssd != sdnn
    assert one(events, "temperature_deviation", "terra", **night) == pytest.approx(
        r.temperature_deviation_c)
    # The new day was pushed; the days before came with the connection's history.
    pushed = [e for e in events if e["start"] == night["start"]]
    assert {e["provenance"] for e in pushed} == {"push"}
    earlier = record(world.end, 7, day - timedelta(days=1))
    assert [e["provenance"] for e in events if e["metric"] == "hrv_rmssd"
            and e["start"] == iso(earlier.sleep_start)] == ["backfill"]


def test_connections_and_coverage_show_each_account(world):
    name, _, _ = connect_and_advance(world, "oura", 8)
    listed = world.api("GET", f"/api/v1/users/{name}/connections").json()["connections"]
    (oura,) = listed
    assert oura["status"] == "active" and oura["last_success_at"]
    assert "access_token" not in str(listed) and "refresh" not in str(listed)
    coverage = world.api("GET", f"/api/v1/users/{name}/coverage", params={"days": 10}).json()
    (source,) = coverage["sources"]
    assert source["provider"] == "oura" and source["connected"] and not source["stale"]
    sleep = next(m for m in source["metrics"] if m["metric"] == "sleep_duration")
    assert sleep["days_with_data"] >= 4 and sleep["last_fetched"]  # BACKFILL_DAYS 5: today too


def test_the_fetchers_metrics_are_the_embedded_bridges(world):
    text = world.api("GET", "/metrics").text
    assert "auren_fetch_jobs_dead 0.0" in text
    assert 'auren_fetch_jobs_total{outcome="done",provider="oura"}' in text
    assert "auren_fetch_latency_seconds_bucket" in text
    assert 'auren_connections{provider="oura",status="active"}' in text
