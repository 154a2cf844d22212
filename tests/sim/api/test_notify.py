"""Notifications: when a connected user's next day appears, each provider's notification is
sent signed as the provider signs it, verified here by the bridge's real provider classes
(``verify`` then ``parse``), and every fetch job it yields is fetched back from the simulator
with the user's token and matches the new day of the seeded history."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from auren.errors import SignatureInvalid
from auren.events import Delivery, FetchJob
from auren.providers import PROVIDER_CLASSES
from auren.providers.base import WebhookRequest
from auren.sim.wearers import DayRecord
from tests.sim.api.kit import (
    DAYS,
    SETTINGS,
    Captured,
    Connection,
    Receiver,
    Sim,
    connect,
    histories,
    terra_headers,
    user_id,
)

# This module's wearers: its own range, so that no other test module connects them.
BASE = 48

HISTORIES = histories()


def verified(captured: Captured) -> Delivery:
    """What the bridge makes of a notification: signature checked first, then parsed."""
    provider = captured.path.rsplit("/", 1)[-1]
    checker = PROVIDER_CLASSES[provider].from_settings(SETTINGS)
    assert checker is not None
    request = WebhookRequest("POST", captured.headers, {}, captured.body, "127.0.0.1")
    checker.verify(request, time.time())
    return checker.parse(request, datetime.now(UTC))


def jobs(captured: list[Captured]) -> list[FetchJob]:
    return [job for c in captured for job in verified(c).fetch_jobs]


def prepare(sim: Sim, sink: Receiver, provider: str, index: int) -> Connection:
    """Connect, plus what the provider needs before it notifies anyone."""
    connection = connect(sim, provider, user_id(BASE + index))
    if provider == "fitbit":
        answer = connection.post("/1/user/-/apiSubscriptions/sub-1.json")
        assert answer.status_code == 201, answer.text
    elif provider == "polar":
        assert connection.post("/v3/users", json={"member-id": "m"}).status_code == 200
    elif provider == "withings":
        for appli in (44, 16, 1, 4):
            answer = connection.post("/notify", data={
                "action": "subscribe", "appli": appli,
                "callbackurl": sink.url + "/webhooks/withings"})
            assert answer.json() == {"status": 0, "body": {}}
        probes = sink.take()
        assert [c.method for c in probes] == ["HEAD"] * 4  # Withings probes the callback
    return connection


@pytest.mark.parametrize("provider", ["oura", "whoop", "fitbit", "polar", "withings",
                                      "garmin"])
def test_a_new_day_is_notified_signed_and_its_jobs_fetch_that_day(
        sim: Sim, sink: Receiver, provider: str) -> None:
    index = 1
    connection = prepare(sim, sink, provider, index)
    sink.take()
    result = sim.advance(user_id(BASE + index))
    record = HISTORIES[BASE + index].days[DAYS + _advanced(sim, index) - 1]
    mine = [n for n in result["notifications"] if n["provider"] == provider]
    assert mine and all(200 <= (n["status"] or 0) < 300 for n in mine), mine
    captured = [c for c in sink.wait_for(len(result["notifications"]))
                if c.path == f"/webhooks/{provider}"]
    assert len(captured) == len(mine)
    found = jobs(captured)
    assert found and all(job.provider_user_id == connection_user(connection) for job in found)
    for job in found:
        check_job(connection, job, record)


def test_terra_pushes_the_new_day_in_full_signed(sim: Sim, sink: Receiver) -> None:
    index = 2
    session = httpx.post(sim.url + "/terra/v2/auth/generateWidgetSession",
                         json={"reference_id": "auren-7"}, headers=terra_headers()).json()
    httpx.get(session["url"], params={"resource": "OURA", "sim_user": user_id(BASE + index)})
    auth = verified(sink.wait_for(1)[0])
    # A control event: no data; the bridge queues it as a job that connects the account.
    assert not auth.events and [job.kind for job in auth.fetch_jobs] == ["auth"]
    result = sim.advance(user_id(BASE + index))
    record = HISTORIES[BASE + index].days[DAYS + _advanced(sim, index) - 1]
    captured = [c for c in sink.wait_for(len(result["notifications"]))
                if c.path == "/webhooks/terra"]
    events = [e for c in captured for e in verified(c).events]
    by_metric = {e.metric: e for e in events}
    assert by_metric["hrv_rmssd"].value == record.hrv_rmssd_ms
    assert by_metric["hrv_sdnn"].value == record.hrv_sdnn_ms
    assert by_metric["temperature_deviation"].value == record.temperature_deviation_c
    assert {e.user_id for e in events} == {"auren-7"}  # the reference id names the person


def test_a_tampered_notification_does_not_verify(sim: Sim, sink: Receiver) -> None:
    for provider in ("oura", "whoop", "polar"):
        prepare(sim, sink, provider, 3)
    sink.take()
    result = sim.advance(user_id(BASE + 3))
    captured = sink.wait_for(len(result["notifications"]))
    assert {c.path for c in captured} == {"/webhooks/oura", "/webhooks/whoop",
                                          "/webhooks/polar"}
    for original in captured:
        tampered = Captured(original.method, original.path, original.headers,
                            original.body.replace(b"user_id", b"user_iD"))
        with pytest.raises(SignatureInvalid):
            verified(tampered)


def test_fitbit_and_withings_notify_only_subscribed_users(sim: Sim, sink: Receiver) -> None:
    connect(sim, "fitbit", user_id(BASE + 4))
    connect(sim, "withings", user_id(BASE + 4))
    result = sim.advance(user_id(BASE + 4))
    assert not [n for n in result["notifications"]
                if n["provider"] in ("fitbit", "withings")]
    sim.patch("fitbit", subscriptions_required=False)
    result = sim.advance(user_id(BASE + 4))
    assert [n["kind"] for n in result["notifications"] if n["provider"] == "fitbit"] == [
        "sleep+activities"]


def test_whoop_recovery_variant_with_a_cycle_id_fetches_by_cycle(sim: Sim,
                                                                 sink: Receiver) -> None:
    connection = prepare(sim, sink, "whoop", 5)
    sim.patch("whoop", variant={"recovery_id": "cycle"})
    result = sim.advance(user_id(BASE + 5))
    record = HISTORIES[BASE + 5].days[DAYS + _advanced(sim, 5) - 1]
    recovery = [j for j in jobs(sink.wait_for(len(result["notifications"])))
                if j.kind == "recovery.updated"]
    assert recovery and recovery[0].object_id is not None and recovery[0].object_id.isdigit()
    answer = connection.get(f"/developer/v2/cycle/{recovery[0].object_id}/recovery").json()
    assert answer["score"]["hrv_rmssd_milli"] == record.hrv_rmssd_ms


@pytest.mark.parametrize("provider,kind", [("fitbit", "userRevokedAccess"),
                                           ("withings", "unlink"),
                                           ("garmin", "deregistrations"),
                                           ("terra", "access_revoked")])
def test_a_user_revoking_at_the_provider_is_notified(sim: Sim, sink: Receiver, provider: str,
                                                     kind: str) -> None:
    if provider == "terra":
        session = httpx.post(sim.url + "/terra/v2/auth/generateWidgetSession",
                             json={"reference_id": "auren-8"}, headers=terra_headers()).json()
        httpx.get(session["url"], params={"resource": "GARMIN", "sim_user": user_id(BASE + 6)})
    else:
        prepare(sim, sink, provider, 6)
    sink.take()
    result = sim.admin("POST", f"/_sim/users/{user_id(BASE + 6)}/revoke",
                       params={"provider": provider})
    assert result["revoked"] == 1
    assert [n["kind"] for n in result["notifications"]] == [kind]
    captured = sink.wait_for(1)
    delivery = verified(captured[0])  # signed (or, Withings, well-formed) and parseable
    if provider == "fitbit":
        assert delivery.fetch_jobs[0].kind == "userRevokedAccess"
    if provider == "withings":
        assert delivery.fetch_jobs[0].kind == "46"
        assert delivery.fetch_jobs[0].params["action"] == "unlink"


# --- helpers -----------------------------------------------------------------------------------


def _advanced(sim: Sim, index: int) -> int:
    """How many days past the start the user's history now shows."""
    user = sim.admin("GET", "/_sim/users")[BASE + index]
    shown = datetime.fromisoformat(user["visible_through"]).date()
    return (shown - HISTORIES[BASE + index].days[DAYS - 1].day).days


def connection_user(connection: Connection) -> str:
    users = connection.sim.admin("GET", "/_sim/users")
    return str(next(u for u in users if u["id"] == connection.user)[
        "provider_user_ids"][connection.provider])


def check_job(connection: Connection, job: FetchJob, record: DayRecord) -> None:
    """Fetch what ``job`` names, as a fetcher would, and compare with the new day."""
    provider = connection.provider
    if provider == "oura":
        doc = connection.get(f"/v2/usercollection/{job.kind}/{job.object_id}").json()
        assert doc["day"] == str(record.day)
        if job.kind == "sleep":
            assert doc["average_hrv"] == round(record.hrv_rmssd_ms)
    elif provider == "whoop":
        sleep = connection.get(f"/developer/v2/activity/sleep/{job.object_id}").json()
        if job.kind == "sleep.updated":
            assert sleep["score"]["stage_summary"]["total_rem_sleep_time_milli"] == (
                record.rem_s * 1000)
        else:  # recovery.updated with a sleep UUID: sleep -> cycle -> recovery
            recovery = connection.get(
                f"/developer/v2/cycle/{sleep['cycle_id']}/recovery").json()
            assert recovery["score"]["hrv_rmssd_milli"] == record.hrv_rmssd_ms
    elif provider == "fitbit":
        assert job.object_id == str(record.day)
        if job.kind == "sleep":
            body = connection.get(f"/1.2/user/-/sleep/date/{job.object_id}.json").json()
            assert body["sleep"][0]["minutesAsleep"] == round(record.sleep_duration_s / 60)
        else:
            body = connection.get(f"/1/user/-/activities/date/{job.object_id}.json").json()
            assert body["summary"]["steps"] == record.steps
    elif provider == "polar":
        url = str(job.params["url"])
        body = connection.get(url.removeprefix("https://www.polaraccesslink.com")).json()
        if job.kind == "SLEEP":
            assert body["light_sleep"] == record.light_s
        else:
            assert body["steps"] == record.steps
    elif provider == "withings":
        check_withings(connection, job, record)
    elif provider == "garmin":
        url = str(job.params["callback_url"])
        items = connection.get(url.removeprefix("https://apis.garmin.com")).json()
        # The window is the upload's second: a day revealed by an earlier test in the same
        # second is in it too.
        (item,) = [i for i in items if i["calendarDate"] == str(record.day)]
        if job.kind == "hrv":
            assert item["lastNightAvg"] == record.hrv_rmssd_ms


def check_withings(connection: Connection, job: FetchJob, record: DayRecord) -> None:
    start, end = job.params["startdate"], job.params["enddate"]
    if job.kind == "44":
        day = datetime.fromtimestamp(int(end), UTC).date()
        series = connection.post("/v2/sleep", data={
            "action": "getsummary", "startdateymd": str(day), "enddateymd": str(day)}
        ).json()["body"]["series"]
        assert series[0]["data"]["total_sleep_time"] == record.sleep_duration_s
    elif job.kind == "16":
        activities = connection.post("/v2/measure", data={
            "action": "getactivity", "startdateymd": str(record.day),
            "enddateymd": str(record.day)}).json()["body"]["activities"]
        assert activities[0]["steps"] == record.steps
    else:
        groups = connection.post("/measure", data={
            "action": "getmeas", "startdate": start, "enddate": end}
        ).json()["body"]["measuregrps"]
        values = {m["type"]: m["value"] * 10 ** m["unit"] for g in groups for m in g["measures"]}
        if job.kind == "4":
            assert values[54] == pytest.approx(record.spo2_pct)
        else:
            assert 40 < values[1] < 120

