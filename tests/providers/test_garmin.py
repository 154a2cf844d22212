from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.garmin import GarminProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, request
from tests.providers.samples.garmin import CLIENT_ID, DAILY, START, USER


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def provider(ids: str = CLIENT_ID, *, max_events: int = 5000) -> GarminProvider:
    built = GarminProvider.from_settings(Settings(_env_file=None, garmin_client_id=ids,
                                                  max_events_per_delivery=max_events))
    assert built is not None
    return built


def parse(payload: dict[str, Any]):
    return provider().parse(request(encode(payload)), RECEIVED)


def values(delivery):
    """The summaries' values (an intraday sample is an instant: it has no end)."""
    return {event.metric: event.value for event in delivery.events if event.end is not None}


def samples(delivery, metric):
    return [(e.start, e.value) for e in delivery.events if e.metric == metric and e.end is None]


def test_not_configured_without_a_client_id():
    assert GarminProvider.from_settings(Settings(_env_file=None)) is None


def test_configured_client_id_passes():
    provider().verify(request(b"{}", {"garmin-client-id": CLIENT_ID}), NOW)


@pytest.mark.parametrize("headers", [{}, {"garmin-client-id": "someone-else"},
                                     {"garmin-client-id": ""}])
def test_missing_or_wrong_client_id_is_401(headers):
    with pytest.raises(SignatureInvalid):
        provider().verify(request(b"{}", headers), NOW)


@pytest.mark.parametrize("client_id", ["old-key", "new-key"])
def test_rotation_accepts_either_id(client_id):
    provider("old-key,new-key").verify(request(b"{}", {"garmin-client-id": client_id}), NOW)


def test_no_handshake():
    assert provider().handshake(request(method="GET")) is None


def test_dailies_push_with_its_heart_rate_samples():
    delivery = parse({"dailies": [DAILY]})
    assert values(delivery) == {"steps": 8412.0, "distance": 6230.5, "active_energy": 512.0,
                                "resting_heart_rate": 51.0, "heart_rate": 67.0}
    start = datetime.fromtimestamp(START, UTC)
    assert samples(delivery, "heart_rate") == [
        (start, 58.0), (start + timedelta(seconds=15), 59.0),
        (start + timedelta(seconds=30), 61.0)]
    assert len(delivery.events) == 8
    assert delivery.skipped == []
    event = delivery.events[0]
    assert (event.user_id, event.provider_user_id) == (f"garmin:{USER}", USER)
    assert event.source_record_id == "x153a9f3-5f0a2e80-6"
    assert event.start == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert event.end == event.start + timedelta(days=1)
    assert delivery.fetch_jobs == []


def test_event_ids_are_stable_across_parses():
    first, second = parse({"dailies": [DAILY]}), parse({"dailies": [DAILY]})
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]


def test_sleeps_hrv_and_skin_temperature():
    # durationInSeconds is the monitored period: deep + light + REM + awake.
    sleep = {"userId": USER, "summaryId": "s1", "startTimeInSeconds": START,
             "durationInSeconds": 27900, "deepSleepDurationInSeconds": 5400,
             "lightSleepDurationInSeconds": 15000, "remSleepInSeconds": 6600,
             "awakeDurationInSeconds": 900,
             "overallSleepScore": {"value": 82, "qualifierKey": "GOOD"}}
    hrv = {"userId": USER, "summaryId": "h1", "startTimeInSeconds": START,
           "durationInSeconds": 27000, "lastNightAvg": 48, "hrvValues": {"300": 45}}
    skin = {"userId": USER, "summaryId": "t1", "startTimeInSeconds": START,
            "durationInSeconds": 27000, "avgDeviationCelsius": -0.4}
    delivery = parse({"sleeps": [sleep], "hrv": [hrv], "skinTemp": [skin]})
    assert values(delivery) == {
        "sleep_duration": 27000.0, "time_in_bed": 27900.0, "sleep_deep": 5400.0,
        "sleep_light": 15000.0, "sleep_rem": 6600.0, "sleep_awake": 900.0, "sleep_score": 82.0,
        "hrv_rmssd": 48.0, "temperature_deviation": -0.4}
    assert samples(delivery, "hrv_rmssd") == [
        (datetime.fromtimestamp(START + 300, UTC), 45.0)]


@pytest.mark.parametrize(("stages", "total"), [
    ({"deepSleepDurationInSeconds": 3600}, 3600.0),
    ({"lightSleepDurationInSeconds": 3600, "remSleepInSeconds": 0}, 3600.0),
    ({}, None),
])
def test_total_sleep_is_the_sum_of_the_stages_present(stages, total):
    sleep = {"userId": USER, "summaryId": "s1", "startTimeInSeconds": START,
             "durationInSeconds": 28800, **stages}
    delivery = parse({"sleeps": [sleep]})
    assert values(delivery).get("sleep_duration") == total
    assert values(delivery)["time_in_bed"] == 28800.0


def test_body_composition_grams_become_kilograms_at_the_measurement_time():
    body = {"userId": USER, "summaryId": "b1", "measurementTimeInSeconds": START + 600,
            "weightInGrams": 72400, "bodyFatInPercent": 18.5}
    delivery = parse({"bodyComps": [body]})
    assert {e.metric: e.value for e in delivery.events} == {"weight": pytest.approx(72.4),
                                                            "body_fat": 18.5}
    weight = next(e for e in delivery.events if e.metric == "weight")
    assert weight.unit == "kg"
    assert weight.start == datetime(2025, 12, 31, 23, 10, tzinfo=UTC)
    assert weight.end is None


@pytest.mark.parametrize("name", ["timeOffsetEpochToBreaths", "timeOffsetRespirationValues"])
def test_sample_maps_become_one_event_per_offset(name):
    pulse = {"userId": USER, "summaryId": "p1", "startTimeInSeconds": START,
             "durationInSeconds": 3600, "timeOffsetSpo2Values": {"0": 97, "60": 96}}
    breath = {"userId": USER, "summaryId": "r1", "startTimeInSeconds": START,
              "durationInSeconds": 900, name: {"0": 14.6, "60": 14.4}}
    delivery = parse({"pulseox": [pulse], "allDayRespiration": [breath]})
    spo2 = [(e.start, e.value) for e in delivery.events if e.metric == "spo2"]
    assert spo2 == [(datetime.fromtimestamp(START, UTC), 97.0),
                    (datetime.fromtimestamp(START + 60, UTC), 96.0)]
    assert [e.value for e in delivery.events if e.metric == "respiratory_rate"] == [14.6, 14.4]


def test_ping_items_become_fetch_jobs():
    url = ("https://apis.garmin.com/wellness-api/rest/dailies?uploadStartTimeInSeconds=1"
           "&uploadEndTimeInSeconds=2&token=abc")
    delivery = parse({"dailies": [{"userId": USER, "callbackURL": url}]})
    assert delivery.events == []
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.object_id, job.params) == ("dailies", None, {"callback_url": url})
    assert job.user_id == f"garmin:{USER}"
    assert job.job_id == parse({"dailies": [{"userId": USER, "callbackURL": url}]}) \
        .fetch_jobs[0].job_id


@pytest.mark.parametrize("url", ["http://apis.garmin.com/x", "https://evil.example/x",
                                 "https://garmin.com.evil.example/x", "https://[::1/x", 5])
def test_ping_urls_must_be_garmin_https(url):
    with pytest.raises(InvalidPayload, match="callbackURL"):
        parse({"dailies": [{"userId": USER, "callbackURL": url}]})


def test_lifecycle_and_unmapped_summaries():
    delivery = parse({
        "deregistrations": [{"userId": USER, "userAccessToken": "x"}],
        "userPermissionsChange": [{"userId": USER, "permissions": []}],
        "epochs": [{"userId": USER, "startTimeInSeconds": START, "steps": 10}],
        "stressDetails": [{"userId": USER}],
    })
    assert delivery.events == []
    # A deregistration becomes a job: the fetcher marks that user's connection as revoked.
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.provider_user_id, job.params) == ("deregistrations", USER, {})
    assert delivery.ignored == 2


# (payload, reported name, reason, events still stored)
@pytest.mark.parametrize(("payload", "name", "reason", "stored"), [
    ({"dailies": [DAILY, {**DAILY, "startTimeInSeconds": "yesterday"}]}, "dailies",
     "invalid_time", 8),
    ({"dailies": [{**DAILY, "startTimeInSeconds": 946_684_799}]}, "dailies", "invalid_time",
     0),
    ({"dailies": [{**DAILY, "restingHeartRateInBeatsPerMinute": 0}]},
     "dailies.restingHeartRateInBeatsPerMinute", "invalid_value", 7),
    ({"dailies": [{**DAILY, "durationInSeconds": -1}]}, "dailies", "invalid_value", 0),
    ({"dailies": [{**DAILY, "summaryId": "\t"}]}, "dailies", "invalid_item", 0),
    ({"dailies": [{**DAILY, "timeOffsetHeartRateSamples": {"0": 58, "15": 400}}]},
     "dailies.timeOffsetHeartRateSamples", "invalid_value", 6),
    ({"dailies": [{**DAILY, "timeOffsetHeartRateSamples": [58]}]},
     "dailies.timeOffsetHeartRateSamples", "invalid_item", 5),
    ({"pulseox": [{"userId": USER, "startTimeInSeconds": START,
                   "timeOffsetSpo2Values": {"-5": 97, "0": 96}}]}, "pulseox.timeOffsetSpo2Values",
     "invalid_time", 1),
    ({"sleeps": [{"userId": USER, "startTimeInSeconds": START, "durationInSeconds": 100,
                  "deepSleepDurationInSeconds": "1h", "remSleepInSeconds": 60}]},
     "sleeps.sleep_duration", "invalid_value", 2),
])
def test_what_cannot_be_stored_is_skipped_and_reported(payload, name, reason, stored):
    delivery = parse(payload)
    assert len(delivery.events) == stored
    assert (name, reason) in {(s.metric, s.reason) for s in delivery.skipped}


def test_intraday_samples_past_their_cap_are_skipped_not_refused():
    daily = {**DAILY, "timeOffsetHeartRateSamples": {str(15 * i): 60 for i in range(10)}}
    garmin = GarminProvider.from_settings(Settings(_env_file=None, garmin_client_id=CLIENT_ID,
                                                   max_samples_per_delivery=4))
    assert garmin is not None
    delivery = garmin.parse(request(encode({"dailies": [daily]})), RECEIVED)
    assert len(samples(delivery, "heart_rate")) == 4
    assert len(values(delivery)) == 5
    (skipped,) = delivery.skipped
    assert (skipped.reason, skipped.count) == ("over_limit", 6)


@pytest.mark.parametrize(("payload", "match"), [
    ({"dailies": [{**DAILY, "userId": None}]}, r"dailies\[0\].*userId"),
    ({"dailies": {"userId": USER}}, "dailies must be an array"),
    ({"dailies": ["x"]}, "must be an object"),
    ({"dailies": [{**DAILY, "userId": "u" * 250}]}, "user id"),
])
def test_wrong_payloads_are_422(payload, match):
    with pytest.raises(InvalidPayload, match=match):
        parse(payload)


def test_too_many_summaries_is_422():
    with pytest.raises(InvalidPayload):
        provider(max_events=3).parse(request(encode({"dailies": [DAILY] * 4})), RECEIVED)


def test_malformed_body_is_400():
    with pytest.raises(MalformedPayload):
        provider().parse(request(b"[1, 2]"), RECEIVED)
