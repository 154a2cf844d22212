"""Each provider's data endpoints against a real simulator process: paged to the end, in the
provider's shapes and units, with values checked against the seeded histories.

Expected values are the histories' own numbers converted by the provider's documented unit
(seconds, milliseconds, minutes, kJ, ``value * 10^unit``, ratios), not the simulator's code.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest

from auren.sim.wearers import DayRecord
from tests.sim.api.kit import DAYS, END, Sim, connect, histories, terra_headers, user_id

# This module's wearers: its own range, so that no other test module connects them.
BASE = 16

HISTORIES = histories()


def visible(index: int) -> list[DayRecord]:
    return list(HISTORIES[BASE + index].days[:DAYS])


def test_oura_pages_with_next_token_and_keeps_deviations_and_rmssd(sim: Sim) -> None:
    sim.patch("oura", page_size=7)
    connection = connect(sim, "oura", user_id(BASE + 0))
    days = visible(0)
    params = {"start_date": str(days[0].day), "end_date": str(END)}
    docs: list[dict[str, Any]] = []
    pages = 0
    token = None
    while True:
        answer = connection.get("/v2/usercollection/sleep",
                                params={**params, **({"next_token": token} if token else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        docs += body["data"]
        pages += 1
        token = body["next_token"]
        if token is None:
            break
    assert pages == math.ceil(DAYS / 7) and len(docs) == DAYS
    assert len({d["id"] for d in docs}) == DAYS
    for doc, record in zip(docs, days, strict=True):
        assert doc["day"] == str(record.day)
        assert doc["average_hrv"] == round(record.hrv_rmssd_ms)  # RMSSD, an integer
        assert doc["total_sleep_duration"] == record.sleep_duration_s  # seconds
        assert doc["deep_sleep_duration"] == record.deep_s
        assert datetime.fromisoformat(doc["bedtime_start"]) == record.sleep_start
        offset = datetime.fromisoformat(doc["bedtime_start"]).utcoffset()
        assert offset == timedelta(minutes=record.utc_offset_min)  # local time with offset
    readiness = connection.get("/v2/usercollection/daily_readiness",
                               params={"start_date": str(days[-3].day),
                                       "end_date": str(END)}).json()["data"]
    assert [d["temperature_deviation"] for d in readiness] == [
        r.temperature_deviation_c for r in days[-3:]]
    single = connection.get(f"/v2/usercollection/sleep/{docs[5]['id']}")
    assert single.json() == docs[5]
    assert connection.get("/v2/usercollection/sleep/unknown-id").status_code == 404
    assert connection.get("/v2/usercollection/vo2_max").status_code == 404  # path is vO2_max
    assert connection.get("/v2/usercollection/vO2_max").json() == {"data": [],
                                                                    "next_token": None}
    bad = connection.get("/v2/usercollection/sleep", params={"start_date": "yesterday"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "start_date"]
    foreign = connection.get("/v2/usercollection/sleep",
                             params={**params, "next_token": "bm90IGEgdG9rZW4"})
    assert foreign.status_code == 400


def test_whoop_pages_newest_first_in_milliseconds_and_kilojoules(sim: Sim) -> None:
    connection = connect(sim, "whoop", user_id(BASE + 0))
    days = visible(0)
    profile = HISTORIES[BASE + 0].profile
    records: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"limit": 25}
        if token:
            params["nextToken"] = token  # request: nextToken; response: next_token
        body = connection.get("/developer/v2/cycle", params=params).json()
        records += body["records"]
        token = body.get("next_token")
        if not token:
            break
    assert len(records) == DAYS
    starts = [r["start"] for r in records]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert "end" not in records[0] and "end" in records[1]  # the current cycle is open
    basal = round(profile.weight_kg * 22.0)
    for cycle, record in zip(records, reversed(days), strict=True):
        kcal = cycle["score"]["kilojoule"] / 4.184
        assert kcal == pytest.approx(basal + record.active_energy_kcal, abs=0.05)
    sleep = connection.get("/developer/v2/activity/sleep", params={"limit": 1}).json()
    stages = sleep["records"][0]["score"]["stage_summary"]
    assert stages["total_slow_wave_sleep_time_milli"] == days[-1].deep_s * 1000
    recovery = connection.get(f"/developer/v2/cycle/{records[0]['id']}/recovery").json()
    assert recovery["score"]["hrv_rmssd_milli"] == days[-1].hrv_rmssd_ms
    assert recovery["score"]["skin_temp_celsius"] > 30  # absolute, not a deviation
    window = connection.get("/developer/v2/recovery", params={
        "start": days[10].sleep_start.isoformat(), "end": days[13].sleep_start.isoformat()})
    assert len(window.json()["records"]) == 3  # start inclusive, end exclusive
    assert connection.get("/developer/v2/recovery", params={"limit": 26}).status_code == 400
    assert window.headers["x-ratelimit-limit"].startswith("100")


def test_fitbit_local_times_minutes_units_by_language_and_range_limits(sim: Sim) -> None:
    connection = connect(sim, "fitbit", user_id(BASE + 0))
    days = visible(0)
    collected: list[dict[str, Any]] = []
    url: str | None = connection.url("/1.2/user/-/sleep/list.json")
    params: dict[str, Any] | None = {"afterDate": str(days[0].day - timedelta(days=1)),
                                     "sort": "asc", "limit": 9, "offset": 0}
    while url:
        body = httpx.get(url, params=params,
                         headers={"authorization": f"Bearer {connection.access}"}).json()
        collected += body["sleep"]
        url, params = body["pagination"]["next"] or None, None
    assert len(collected) == DAYS
    for log, record in zip(collected, days, strict=True):
        assert log["minutesAsleep"] == round(record.sleep_duration_s / 60)
        local = record.sleep_start.astimezone(timezone(timedelta(minutes=record.utc_offset_min)))
        assert log["startTime"] == local.replace(tzinfo=None).isoformat(timespec="milliseconds")
    day = days[-1]
    us = connection.get(f"/1/user/-/activities/date/{day.day}.json",
                        headers={"accept-language": "en_US"}).json()["summary"]
    metric = connection.get(f"/1/user/-/activities/date/{day.day}.json").json()["summary"]
    assert metric["distances"][0]["distance"] == round(day.distance_m / 1000, 2)
    assert us["distances"][0]["distance"] == round(day.distance_m / 1609.344, 2)
    future = connection.get(f"/1/user/-/activities/date/{END + timedelta(days=3)}.json")
    assert future.json()["summary"]["steps"] == 0  # Fitbit answers an empty day with zeros
    hrv = connection.get(f"/1/user/-/hrv/date/{days[-30].day}/{END}.json").json()["hrv"]
    assert [h["value"]["dailyRmssd"] for h in hrv] == [r.hrv_rmssd_ms for r in days[-30:]]
    too_long = connection.get(f"/1/user/-/hrv/date/{days[-31].day}/{END}.json")
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["errorType"] == "validation"
    skin = connection.get(f"/1/user/-/temp/skin/date/{END}.json").json()["tempSkin"]
    assert skin[0]["value"]["nightlyRelative"] == days[-1].temperature_deviation_c
    assert int(too_long.headers["fitbit-rate-limit-remaining"]) < 150
    other = connection.get("/1/user/ZZZZZZ/profile.json")
    assert other.status_code == 403


def test_polar_shows_only_what_was_uploaded_after_registration(sim: Sim) -> None:
    user = user_id(BASE + 12)
    connection = connect(sim, "polar", user)
    unregistered = connection.get("/v3/users/sleep")
    assert unregistered.status_code == 403 and unregistered.json()["errorType"]
    assert connection.post("/v3/users", json={"member-id": "m-12"}).status_code == 200
    assert connection.post("/v3/users", json={"member-id": "m-12"}).status_code == 409
    assert connection.get("/v3/users/sleep").json() == {"nights": []}  # no history at all
    sim.advance(user, 2)
    new_days = HISTORIES[BASE + 12].days[DAYS:DAYS + 2]
    nights = connection.get("/v3/users/sleep").json()["nights"]
    assert [n["date"] for n in nights] == [str(r.day) for r in new_days]
    assert [n["deep_sleep"] for n in nights] == [r.deep_s for r in new_days]  # seconds
    recharge = connection.get(f"/v3/users/nightly-recharge/{new_days[0].day}").json()
    assert recharge["heart_rate_variability_avg"] == round(new_days[0].hrv_rmssd_ms)
    activity = connection.get("/v3/users/activities",
                              params={"from": str(new_days[0].day),
                                      "to": str(new_days[1].day)}).json()
    assert [a["steps"] for a in activity] == [r.steps for r in new_days]
    assert activity[0]["active_duration"].startswith("PT")
    wide = connection.get("/v3/users/activities", params={
        "from": str(new_days[0].day - timedelta(days=28)), "to": str(new_days[0].day)})
    assert wide.status_code == 400
    old = connection.get(f"/v3/users/sleep/{HISTORIES[BASE + 12].days[DAYS - 1].day}")
    assert old.status_code == 404  # uploaded before registration
    info = connection.get(f"/v3/users/{connection.token['x_user_id']}").json()
    assert info["member-id"] == "m-12" and "registration-date" in info


def test_withings_scales_by_powers_of_ten_and_pages_with_more_and_offset(sim: Sim) -> None:
    sim.patch("withings", page_size=6)
    connection = connect(sim, "withings", user_id(BASE + 0))
    days = visible(0)
    groups: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = connection.post("/measure", data={
            "action": "getmeas", "meastypes": "54,11", "category": 1, "offset": offset}).json()
        assert body["status"] == 0
        groups += body["body"]["measuregrps"]
        if body["body"]["more"] == 0:  # getmeas: 0/1
            break
        offset = body["body"]["offset"]
    assert len(groups) == DAYS  # one watch group a morning
    by_day = {datetime.fromtimestamp(g["date"], UTC): g for g in groups}
    for record in days:
        group = by_day[record.sleep_end]
        values = {m["type"]: m["value"] * 10 ** m["unit"] for m in group["measures"]}
        assert values[54] == pytest.approx(record.spo2_pct)
        assert values[11] == record.resting_hr_bpm
    weights = connection.post("/measure", data={"action": "getmeas", "meastype": 1}).json()
    first = weights["body"]["measuregrps"][0]["measures"][0]
    assert first["unit"] == -3 and 40 < first["value"] * 10 ** first["unit"] < 120
    activity: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = connection.post("/v2/measure", data={
            "action": "getactivity", "startdateymd": str(days[0].day),
            "enddateymd": str(END), "offset": offset}).json()["body"]
        activity += body["activities"]
        if body["more"] is False:  # getactivity: true/false
            break
        offset = body["offset"]
    assert [a["steps"] for a in activity] == [r.steps for r in days]
    sleep = connection.post("/v2/sleep", data={
        "action": "getsummary", "startdateymd": str(END), "enddateymd": str(END)}).json()
    data = sleep["body"]["series"][0]["data"]
    assert data["sleep_efficiency"] == pytest.approx(days[-1].sleep_efficiency_pct / 100)
    assert data["total_sleep_time"] == days[-1].sleep_duration_s
    missing = connection.post("/v2/sleep", data={"action": "getsummary"})
    assert missing.status_code == 200 and missing.json()["status"] == 503


def test_garmin_pulls_by_upload_window_of_at_most_a_day(sim: Sim, sink: Any) -> None:
    user = user_id(BASE + 13)
    connection = connect(sim, "garmin", user)
    result = sim.advance(user, 1)
    record = HISTORIES[BASE + 13].days[DAYS]
    pings = [n for n in result["notifications"] if n["provider"] == "garmin"]
    assert {n["kind"] for n in pings} == {"dailies", "sleeps", "hrv", "pulseox", "skinTemp"}
    sleeps = next(n for n in pings if n["kind"] == "sleeps")
    item = orjson.loads(sleeps["body"])["sleeps"][0]
    path = item["callbackURL"].removeprefix("https://apis.garmin.com")
    pulled = connection.get(path).json()
    assert len(pulled) == 1
    assert pulled[0]["deepSleepDurationInSeconds"] == record.deep_s
    assert pulled[0]["startTimeInSeconds"] == int(record.sleep_start.timestamp())
    too_wide = connection.get("/wellness-api/rest/dailies", params={
        "uploadStartTimeInSeconds": 0, "uploadEndTimeInSeconds": 86_401})
    assert too_wide.status_code == 400 and "errorMessage" in too_wide.json()


def test_garmin_backfill_answers_202_then_pings_and_refuses_repeats(sim: Sim,
                                                                     sink: Any) -> None:
    user = user_id(BASE + 14)
    connection = connect(sim, "garmin", user)
    start = datetime.combine(END - timedelta(days=5), datetime.min.time(), UTC)
    params = {"summaryStartTimeInSeconds": int(start.timestamp()),
              "summaryEndTimeInSeconds": int((start + timedelta(days=5)).timestamp())}
    answer = connection.get("/wellness-api/rest/backfill/hrv", params=params)
    assert answer.status_code == 202 and answer.content == b""
    pings = [c for c in sink.wait_for(5) if c.path == "/webhooks/garmin"]
    assert len(pings) == 5
    assert connection.get("/wellness-api/rest/backfill/hrv",
                          params=params).status_code == 409
    wide = dict(params, summaryEndTimeInSeconds=params["summaryStartTimeInSeconds"] + 31 * 86_400)
    assert connection.get("/wellness-api/rest/backfill/hrv", params=wide).status_code == 400
    without = connect(sim, "garmin", user_id(BASE + 15), sim_scopes="ACTIVITY_EXPORT HEALTH_EXPORT")
    assert without.get("/wellness-api/rest/backfill/hrv", params=params).status_code == 403


def test_terra_answers_inline_only_when_asked_and_otherwise_sends_webhooks(
        sim: Sim, sink: Any) -> None:
    session = httpx.post(sim.url + "/terra/v2/auth/generateWidgetSession",
                         json={"reference_id": "ref-3"}, headers=terra_headers()).json()
    done = httpx.get(session["url"], params={"resource": "OURA", "sim_user": user_id(BASE + 3)})
    terra_user = done.json()["user_id"]
    sink.wait_for(1)  # the auth webhook
    days = visible(3)
    inline = httpx.get(sim.url + "/terra/v2/sleep", params={
        "user_id": terra_user, "start_date": str(days[-2].day), "end_date": str(END),
        "to_webhook": "false"}, headers=terra_headers()).json()
    summary = [d["heart_rate_data"]["summary"] for d in inline["data"]]
    assert [s["avg_hrv_rmssd"] for s in summary] == [r.hrv_rmssd_ms for r in days[-2:]]
    assert [s["avg_hrv_sdnn"] for s in summary] == [r.hrv_sdnn_ms for r in days[-2:]]
    assert [d["temperature_data"]["delta"] for d in inline["data"]] == [
        r.temperature_deviation_c for r in days[-2:]]
    ack = httpx.get(sim.url + "/terra/v2/daily", params={
        "user_id": terra_user, "start_date": str(days[-40].day), "end_date": str(END)},
        headers=terra_headers()).json()
    assert ack["status"] == "success" and "Large request" in ack["message"]
    chunks = sink.wait_for(2)
    assert len(chunks) == 2 and all(c.path == "/webhooks/terra" for c in chunks)


