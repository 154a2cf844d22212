"""A real bridge process with every provider configured, fed each vendor's sample payloads
signed as the vendor signs them: the answers, ``/metrics`` and what the read API gives back.
Also the read API's own input rules (the same ones every provider applies)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import ServerProcess, run_server
from tests.providers.vendors import HAE_USER, SECRETS, fixture, signed, thin

pytestmark = pytest.mark.slow

GARMIN_USER = "garmin:4aa0e1d7-8b2c-4d3e-9f10-a1b2c3d4e5f6"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with run_server("bridge", tmp_path_factory.mktemp("vendors"), dict(SECRETS)) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def post(client: httpx.Client, provider: str, payload: Any) -> httpx.Response:
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    return client.post(f"/webhooks/{provider}", content=body,
                       headers=signed(provider, body, int(time.time())))


def read(client: httpx.Client, user: str, metric: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/users/{user}/events",
                          params={"metric": metric, "limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def counter(client: httpx.Client, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    text = client.get("/metrics").text
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_every_sample_payload_is_accepted_whole(bridge: httpx.Client):
    answers = {
        "garmin": post(bridge, "garmin", fixture("garmin_push.json")),
        "terra-sleep": post(bridge, "terra", fixture("terra_sleep.json")),
        "terra-daily": post(bridge, "terra", fixture("terra_daily.json")),
        "apple": post(bridge, "apple", fixture("hae_export.json")),
        "oura": post(bridge, "oura", thin("oura_without_object")),
        "whoop": post(bridge, "whoop", thin("whoop_v2")),
        "polar": post(bridge, "polar", thin("polar_sleep")),
        "withings": post(bridge, "withings", thin("withings")),
    }
    assert {k: r.status_code for k, r in answers.items()} == {
        "garmin": 202, "terra-sleep": 202, "terra-daily": 202, "apple": 202, "oura": 202,
        "whoop": 202, "polar": 202, "withings": 200}
    assert answers["garmin"].json() == {"accepted": 33, "duplicates": 0, "ignored": 2}
    assert answers["terra-sleep"].json() == {"accepted": 17, "duplicates": 0}
    assert answers["apple"].json() == {"accepted": 21, "duplicates": 0, "ignored": 3}
    fitbit = post(bridge, "fitbit", thin("fitbit"))
    assert (fitbit.status_code, fitbit.content) == (204, b"")

    # Garmin's sleep: total sleep is the stages; the monitored period is time in bed.
    (sleep,) = read(bridge, GARMIN_USER, "sleep_duration")
    (in_bed,) = read(bridge, GARMIN_USER, "time_in_bed")
    assert (sleep["value"], sleep["unit"], in_bed["value"]) == (25560.0, "s", 26880.0)
    heart = {(e["start"], e["end"], e["value"]) for e in read(bridge, GARMIN_USER, "heart_rate")}
    assert heart == {("2025-12-30T23:00:00.000000Z", "2025-12-31T23:00:00.000000Z", 68.0),
                     ("2025-12-30T23:00:00.000000Z", None, 58.0),
                     ("2025-12-30T23:00:15.000000Z", None, 59.0),
                     ("2025-12-30T23:00:30.000000Z", None, 61.0),
                     ("2025-12-30T23:00:45.000000Z", None, 60.0)}
    # HealthKit's units, converted.
    (vo2,) = read(bridge, HAE_USER, "vo2_max")
    (energy,) = read(bridge, HAE_USER, "active_energy")
    assert (vo2["value"], vo2["unit"]) == (45.2, "mL/min/kg")
    assert (round(energy["value"], 6), energy["unit"]) == (500.0, "kcal")
    assert [e["value"] for e in read(bridge, "acct_1234", "hrv_rmssd")] == [57.4, 55.1, 61.0]


def test_an_export_with_one_unknown_unit_stores_the_rest_and_reports_it(bridge: httpx.Client):
    before = counter(bridge, "auren_webhook_items_skipped_total", provider="apple",
                     reason="unknown_unit")
    # The same export three days earlier: new measurements, not duplicates of the first test's.
    text = (json.dumps(fixture("hae_export.json")).replace("2025-12-30", "2025-12-27")
            .replace("2025-12-31", "2025-12-28"))
    export = json.loads(text)
    export["data"]["metrics"].append(
        {"name": "body_temperature", "units": "degR",
         "data": [{"date": "2025-12-28 06:00:00 +0100", "qty": 558.0},
                  {"date": "2025-12-28 07:00:00 +0100", "qty": 559.0}]})
    answer = post(bridge, "apple", export)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 21
    assert body["skipped"] == [{"metric": "body_temperature", "reason": "unknown_unit",
                                "count": 2, "detail": "units 'degR' cannot be converted to "
                                                      "body_temperature"}]
    assert counter(bridge, "auren_webhook_items_skipped_total", provider="apple",
                   reason="unknown_unit") == before + 2
    # The phone re-sends: answered as a duplicate, still saying what was skipped, counted once.
    again = post(bridge, "apple", export)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["skipped"][0]["reason"] == "unknown_unit"
    assert counter(bridge, "auren_webhook_items_skipped_total", provider="apple",
                   reason="unknown_unit") == before + 2


def test_terra_redelivery_is_recognised_by_its_body_not_its_trace_id(bridge: httpx.Client):
    payload = fixture("terra_daily.json")
    payload["data"][0]["metadata"]["start_time"] = "2025-12-20T00:00:00.000000+01:00"
    payload["data"][0]["metadata"]["end_time"] = "2025-12-21T00:00:00.000000+01:00"
    payload["data"][0]["heart_rate_data"]["detailed"]["hr_samples"] = []
    body = json.dumps(payload).encode()
    headers = signed("terra", body, int(time.time()))
    first = bridge.post("/webhooks/terra", content=body, headers=headers)
    assert first.status_code == 202 and first.json()["accepted"] == 8
    # The same signed delivery replayed with another (unsigned) trace id is still a duplicate.
    replay = bridge.post("/webhooks/terra", content=body,
                         headers={**headers, "x-terra-trace-id": "someone-elses-trace"})
    assert replay.status_code == 200 and replay.json()["duplicate"] is True


def _cursor(start: str, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([start, event_id])).decode().rstrip("=")


@pytest.mark.parametrize(("params", "status"), [
    ({"since": "9999-12-31T23:59:59-01:00"}, 400),  # not representable in UTC: malformed
    ({"until": "0001-01-01T00:00:00+01:00"}, 400),
    ({"since": "9999-12-31T00:00:00Z"}, 422),  # well formed, outside the plausible range
    ({"until": "1999-12-31T23:59:59Z"}, 422),
    ({"since": "２０２６-01-01T00:00:00Z"}, 400),
    ({"cursor": _cursor("9999-12-31T23:59:59-01:00", "x")}, 400),
    ({"cursor": _cursor("0001-01-01T00:00:00Z", "x")}, 400),
    ({"cursor": _cursor("2025-12-31T00:00:00Z", "x\u0000")}, 400),
    ({"cursor": base64.urlsafe_b64encode(b"[1, 2, 3]").decode()}, 400),
])
def test_read_api_instants_outside_the_rules_are_4xx(bridge: httpx.Client, params, status):
    response = bridge.get(f"/api/v1/users/{HAE_USER}/events", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("user", ["%00", "u%00", "%20", "%20%20", "u%0A", "%1B%5B31m", "u%20",
                                  "%E2%80%A8"])
def test_read_api_user_ids_outside_the_identifier_rule_are_422(bridge: httpx.Client, user):
    response = bridge.get(f"/api/v1/users/{user}/events")
    assert response.status_code == 422, response.text


def test_native_events_that_overflowed_into_a_500_are_422(tmp_path: Path):
    from tests.helpers import native_body, native_headers

    with run_server("bridge", tmp_path) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as client:
        for start in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                      "9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z"):
            body = native_body("u1", [{"metric": "steps", "value": 1, "unit": "{steps}",
                                       "start": start}])
            response = client.post("/webhooks/auren", content=body, headers=native_headers(body))
            assert response.status_code == 422, (start, response.text)
        for user in ("u\u0000", "   ", "u\u001b", ""):
            body = native_body(user, [{"metric": "steps", "value": 1, "unit": "{steps}",
                                       "start": "2026-01-01T00:00:00Z"}])
            response = client.post("/webhooks/auren", content=body, headers=native_headers(body))
            assert response.status_code == 422, (user, response.text)
        assert _server_errors(server) == 0


def _server_errors(server: ServerProcess) -> int:
    return server.log().count('"level":"ERROR"')
