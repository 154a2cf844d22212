"""Properties every provider keeps for any input.

1. ``handshake``, ``verify`` and ``parse`` either succeed or raise a ``ClientError``: whatever a
   sender puts in a request, the answer is a 4xx, never a 500.
2. For the HMAC schemes, changing any single byte of a correctly signed body fails ``verify``.

Bodies are drawn from raw bytes, form bodies and JSON built from the field names and value
shapes the parsers look for, so that the draws reach past the first ``isinstance`` check.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auren.errors import ClientError, SignatureInvalid
from auren.providers.apple import AppleHealthProvider
from auren.providers.base import Provider
from auren.providers.fitbit import FitbitProvider
from auren.providers.garmin import GarminProvider
from auren.providers.oura import OuraProvider
from auren.providers.polar import PolarProvider
from auren.providers.terra import TerraProvider
from auren.providers.whoop import WhoopProvider
from auren.providers.withings import WithingsProvider
from tests.providers._helpers import NOW, RECEIVED, hmac_b64, hmac_hex, request
from tests.providers.samples import apple, fitbit, garmin, oura, polar, terra, whoop

PROVIDERS: dict[str, Provider] = {
    "oura": OuraProvider(("s1", "s2"), verification_token="tok"),
    "whoop": WhoopProvider(("s1",)),
    "terra": TerraProvider(("s1",), max_events=50),
    "garmin": GarminProvider(("cid",), max_events=50),
    "fitbit": FitbitProvider(("s1",), verify_code="code", max_events=50),
    "polar": PolarProvider(("s1",)),
    "withings": WithingsProvider(("10.0.0.0/8", "2001:db8::/32")),
    "withings-open": WithingsProvider(()),
    "apple": AppleHealthProvider(("u1:sk-bound", "sk-open"), max_events=50),
}

FIELD_NAMES = [
    # envelopes and thin notifications
    "event_type", "data_type", "object_id", "event_time", "timestamp", "user_id", "id", "type",
    "trace_id", "user", "data", "event", "entity_id", "url", "date", "from", "to",
    "collectionType", "ownerId", "ownerType", "subscriptionId",
    # Terra
    "metadata", "start_time", "end_time", "summary_id", "reference_id", "heart_rate_data",
    "summary", "avg_hr_bpm", "avg_hrv_rmssd", "sleep_durations_data", "asleep",
    "duration_asleep_state_seconds", "measurements_data", "measurements", "measurement_time",
    "weight_kg", "temperature_data", "delta", "body_temperature_samples", "temperature_celsius",
    "distance_data", "steps",
    # Garmin
    "dailies", "sleeps", "pulseox", "allDayRespiration", "bodyComps", "skinTemp", "epochs",
    "deregistrations", "userId", "summaryId", "startTimeInSeconds", "durationInSeconds",
    "measurementTimeInSeconds", "callbackURL", "weightInGrams", "timeOffsetSpo2Values",
    "timeOffsetEpochToBreaths", "overallSleepScore", "value", "lastNightAvg",
    # Health Auto Export
    "metrics", "workouts", "name", "units", "qty", "Avg", "systolic", "diastolic",
    "sleepStart", "sleepEnd", "totalSleep", "deep", "startDate",
]
STRING_VALUES = [
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+01:00", "2026-01-01 07:00:00 +0100",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01", "2026-02-30",
    "https://apis.garmin.com/x", "https://[::1", "http://x", "sleep", "daily", "body",
    "activity", "healthcheck", "PING", "EXERCISE", "heart_rate", "sleep_analysis",
    "blood_pressure", "blood_oxygen_saturation", "step_count", "count/min", "hr", "degF", "%",
    "ms", "kg", "lb", "furlongs", "0", "60", "-5", "99999999", "²", "u1", "",
]
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(STRING_VALUES) | st.text(max_size=16))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)
FORMS = st.dictionaries(st.sampled_from(["userid", "appli", "startdate", "enddate", "date",
                                         "action"]) | st.text(max_size=6),
                        st.text(max_size=12) | st.integers().map(str), max_size=8)
BODIES = (st.binary(max_size=300)
          | JSON_VALUES.map(lambda v: json.dumps(v).encode())
          | FORMS.map(lambda f: urlencode(f).encode()))

HEADER_NAMES = [
    "x-oura-signature", "x-oura-timestamp", "x-whoop-signature",
    "x-whoop-signature-timestamp", "terra-signature", "x-terra-signature", "x-terra-trace-id",
    "garmin-client-id", "x-fitbit-signature", "polar-webhook-signature", "polar-webhook-event",
    "api-key", "authorization", "x-auren-user-id", "content-type",
]
HEADER_VALUES = (st.text(max_size=80)
                 | st.sampled_from([str(NOW), str(NOW * 1000), "²", "1" * 40, "PING", "cid",
                                    "sk-open", "sk-bound", "Bearer sk-open", "Bearer ",
                                    f"t={NOW},v1=" + "0" * 64, "t=,v1=,t=", "multipart/x",
                                    "2026-01-01T00:00:00Z", "=" * 8, "AAAA"]))
HEADERS = st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=10), HEADER_VALUES,
                          max_size=6)
QUERIES = st.dictionaries(st.sampled_from(["verification_token", "challenge", "verify",
                                           "user_id"]) | st.text(max_size=6),
                          st.text(max_size=20) | st.sampled_from(["tok", "code", "u1"]),
                          max_size=4)
IPS = st.none() | st.text(max_size=20) | st.ip_addresses().map(str)
METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "get", ""])
NOWS = st.just(float(NOW)) | st.floats(allow_nan=False) | st.integers(0, 2**40).map(float)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def only_client_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(ClientError):
        call()


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@FAST
@given(method=METHODS, headers=HEADERS, query=QUERIES, body=BODIES, ip=IPS, now=NOWS)
def test_any_request_gets_a_client_error_or_success(name, method, headers, query, body, ip,
                                                    now):
    provider = PROVIDERS[name]
    req = request(body, headers, method=method, query=query, client_ip=ip)
    only_client_errors(lambda: provider.handshake(req))
    only_client_errors(lambda: provider.verify(req, now))
    only_client_errors(lambda: provider.parse(req, RECEIVED))


@FAST
@given(body=BODIES, user=st.none() | st.text(max_size=300), bound=st.booleans())
def test_apple_parses_any_body_from_an_authorized_sender(body, user, bound):
    # Apple's parse resolves the key before the body; a valid key gets the body looked at.
    headers = {"api-key": "sk-bound" if bound else "sk-open"}
    if user is not None:
        headers["x-auren-user-id"] = user
    only_client_errors(lambda: PROVIDERS["apple"].parse(request(body, headers), RECEIVED))


# Realistic payloads from the per-provider tests, each with headers that pass parse's own checks.
REALISTIC: dict[str, tuple[Any, dict[str, str]]] = {
    "oura": (json.loads(oura.BODY), {}),
    "whoop": (json.loads(whoop.BODY), {}),
    "terra": ({**terra.BODY_DATA,
               "data": terra.SLEEP["data"] + terra.BODY_DATA["data"]}, {}),
    "garmin": ({"dailies": [garmin.DAILY],
                "pulseox": [{"userId": "u", "startTimeInSeconds": garmin.START,
                             "timeOffsetSpo2Values": {"0": 97}}],
                "sleeps": [{"userId": "u", "callbackURL": "https://apis.garmin.com/x"}]}, {}),
    "fitbit": (json.loads(fitbit.BODY), {}),
    "polar": (json.loads(polar.BODY), {}),
    "apple": ({"data": {"metrics": [
        *apple.PAYLOAD["data"]["metrics"],
        apple.metric("blood_pressure", "mmHg",
                          {"date": apple.T, "systolic": 118, "diastolic": 76}),
        apple.metric("sleep_analysis", "hr",
                          {"date": apple.T, "totalSleep": 7.5, "deep": 1.5,
                           "sleepStart": apple.T, "sleepEnd": apple.T}),
    ]}}, {"api-key": "sk-bound"}),
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = (value.items() if isinstance(value, dict)
                else enumerate(value) if isinstance(value, list) else ())
    for key, child in children:
        yield from _paths(child, (*prefix, key))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    result = copy.deepcopy(value)
    node = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return result


@pytest.mark.parametrize("name", sorted(REALISTIC))
@FAST
@given(data=st.data())
def test_a_realistic_payload_with_any_one_value_replaced_is_parsed_or_refused(name, data):
    payload, headers = REALISTIC[name]
    path = data.draw(st.sampled_from(list(_paths(payload))), label="path")
    mutated = _replaced(payload, path, data.draw(JSON_VALUES, label="value"))
    req = request(json.dumps(mutated).encode(), headers)
    only_client_errors(lambda: PROVIDERS[name].parse(req, RECEIVED))


def _oura(body: bytes) -> dict[str, str]:
    return {"x-oura-timestamp": str(NOW),
            "x-oura-signature": hmac_hex(b"s2", str(NOW).encode() + body).upper()}


def _whoop(body: bytes) -> dict[str, str]:
    stamp = str(NOW * 1000)
    return {"x-whoop-signature-timestamp": stamp,
            "x-whoop-signature": hmac_b64(b"s1", stamp.encode() + body)}


def _terra(body: bytes) -> dict[str, str]:
    return {"terra-signature": f"t={NOW},v1={hmac_hex(b's1', f'{NOW}.'.encode() + body)}"}


def _fitbit(body: bytes) -> dict[str, str]:
    return {"x-fitbit-signature": hmac_b64(b"s1&", body, "sha1")}


def _polar(body: bytes) -> dict[str, str]:
    return {"polar-webhook-signature": hmac_hex(b"s1", body)}


SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "oura": _oura, "whoop": _whoop, "terra": _terra, "fitbit": _fitbit, "polar": _polar,
}


@pytest.mark.parametrize("name", sorted(SIGNERS))
@FAST
@given(body=st.binary(min_size=1, max_size=200), data=st.data())
def test_changing_any_byte_of_a_signed_body_fails(name, body, data):
    provider = PROVIDERS[name]
    headers = SIGNERS[name](body)
    provider.verify(request(body, headers), NOW)
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    changed = bytearray(body)
    changed[index] ^= mask
    with pytest.raises(SignatureInvalid):
        provider.verify(request(bytes(changed), headers), NOW)
