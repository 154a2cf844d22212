"""Properties every provider keeps for any input.

1. ``handshake``, ``verify`` and ``parse`` either succeed or raise a ``ClientError``: whatever a
   sender puts in a request, the answer is a 4xx, never a 500.
2. What ``parse`` accepts keeps the input rules: every identifier follows the one rule, every
   instant lies in the plausible range, every value within its metric's bounds in its
   canonical unit, every fetch window in order, every skip has a known reason, and the answer
   can be encoded. Realistic payloads (the vendors' samples in ``fixtures/`` among them) have
   any of their values, or several at once, replaced by arbitrary JSON to get there.
3. For the HMAC schemes, changing any single byte of a correctly signed body fails ``verify``.

Bodies are drawn from raw bytes, form bodies and JSON built from the field names and value
shapes the parsers look for, so that the draws reach past the first ``isinstance`` check.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auren.errors import ClientError, SignatureInvalid
from auren.events import (
    EARLIEST_INSTANT,
    FUTURE_TOLERANCE,
    METRICS,
    SKIP_REASONS,
    Delivery,
    is_identifier,
)
from auren.providers.apple import AppleHealthProvider
from auren.providers.base import Provider
from auren.providers.fitbit import FitbitProvider
from auren.providers.garmin import GarminProvider
from auren.providers.native import NativeProvider
from auren.providers.oura import OuraProvider
from auren.providers.polar import PolarProvider
from auren.providers.terra import TerraProvider
from auren.providers.whoop import WhoopProvider
from auren.providers.withings import WithingsProvider
from tests.providers._helpers import NOW, RECEIVED, hmac_b64, hmac_hex, request
from tests.providers.samples import apple, fitbit, garmin, oura, polar, terra, whoop
from tests.providers.vendors import fixture, thin

NATIVE_KEY = b"native-property-key-0123456789ab"

PROVIDERS: dict[str, Provider] = {
    "auren": NativeProvider(("whsec_" + base64.b64encode(NATIVE_KEY).decode().rstrip("="),),
                            max_events=50),
    "oura": OuraProvider(("s1", "s2"), verification_token="tok"),
    "whoop": WhoopProvider(("s1",)),
    "terra": TerraProvider(("s1",), max_events=50, max_samples=20),
    "garmin": GarminProvider(("cid",), max_events=50, max_samples=20),
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
    "sleepStart", "sleepEnd", "totalSleep", "deep", "startDate", "inBed", "inBedStart",
    "inBedEnd", "core", "rem", "asleep",
    # intraday series, windows, native
    "timeOffsetHeartRateSamples", "timeOffsetSleepSpo2", "timeOffsetSleepRespiration",
    "hrvValues", "detailed", "hr_samples", "hrv_samples_rmssd", "bpm", "hrv_rmssd",
    "start_datetime", "end_datetime", "events", "metric", "unit", "start", "end",
]
STRING_VALUES = [
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+01:00", "2026-01-01 07:00:00 +0100",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01", "2026-02-30",
    "https://apis.garmin.com/x", "https://[::1", "http://x", "sleep", "daily", "body",
    "activity", "healthcheck", "PING", "EXERCISE", "heart_rate", "sleep_analysis",
    "blood_pressure", "blood_oxygen_saturation", "step_count", "count/min", "hr", "degF", "%",
    "ms", "kg", "lb", "furlongs", "0", "60", "-5", "99999999", "²", "u1", "",
    # the input rules: identifiers, instants, HealthKit units, hosts
    "u\x00", " ", "  u", "u\n", "\u2028", "x" * 300, "1999-12-31T23:59:59Z",
    "2026-01-01T00:00:00+00:00\x00", "２０２６-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
    "2026-01-01 07:00:00", "0001-01-01 00:00:00 +0100", "9999-12-31 23:59:59 -0100",
    "mL/min·kg", "kcal/hr·kg", "Cal", "cal", "CAL", "degC", "mi", "count",
    "https://www.polaraccesslink.com/v3/x", "https://www.polaraccesslink.com:8443/x",
    "https://evil.example/x", "America",
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


def assert_within_the_rules(delivery: Delivery) -> None:
    """What a provider accepted keeps every input rule, and its answer can be encoded."""
    latest = RECEIVED + FUTURE_TOLERANCE
    for event in delivery.events:
        assert is_identifier(event.user_id) and is_identifier(event.provider_user_id)
        assert event.source_record_id is None or is_identifier(event.source_record_id)
        assert EARLIEST_INSTANT <= event.start <= latest
        assert event.end is None or event.start <= event.end <= latest
        spec = METRICS[event.metric]
        assert event.unit == spec.unit
        assert math.isfinite(event.value) and spec.minimum <= event.value <= spec.maximum
    for job in delivery.fetch_jobs:
        assert is_identifier(job.user_id) and is_identifier(job.provider_user_id)
        if job.window_start is not None and job.window_end is not None:
            assert EARLIEST_INSTANT <= job.window_start <= job.window_end <= latest
    for skipped in delivery.skipped:
        assert skipped.reason in SKIP_REASONS and skipped.count >= 1
    orjson.dumps({"skipped": [s.as_dict() for s in delivery.skipped],
                  "jobs": [j.as_dict() for j in delivery.fetch_jobs],
                  "events": [e.as_dict() for e in delivery.events]})


def parsed_or_refused(name: str, req: Any) -> None:
    try:
        delivery = PROVIDERS[name].parse(req, RECEIVED)
    except ClientError:
        return
    assert_within_the_rules(delivery)


# Realistic payloads from the per-provider tests and the vendors' samples, each with headers
# that pass parse's own checks.
REALISTIC: dict[str, tuple[str, Any, dict[str, str]]] = {
    "oura": ("oura", json.loads(oura.BODY), {}),
    "oura-sample": ("oura", thin("oura"), {}),
    "oura-without-object": ("oura", thin("oura_without_object"), {}),
    "whoop": ("whoop", json.loads(whoop.BODY), {}),
    "whoop-v1": ("whoop", thin("whoop_v1"), {}),
    "terra": ("terra", {**terra.BODY_DATA,
                        "data": terra.SLEEP["data"] + terra.BODY_DATA["data"]}, {}),
    "terra-sleep": ("terra", fixture("terra_sleep.json"), {}),
    "terra-daily": ("terra", fixture("terra_daily.json"), {}),
    "garmin": ("garmin", {"dailies": [garmin.DAILY],
                          "pulseox": [{"userId": "u", "startTimeInSeconds": garmin.START,
                                       "timeOffsetSpo2Values": {"0": 97}}],
                          "sleeps": [{"userId": "u",
                                      "callbackURL": "https://apis.garmin.com/x"}]}, {}),
    "garmin-push": ("garmin", fixture("garmin_push.json"), {}),
    "fitbit": ("fitbit", json.loads(fitbit.BODY), {}),
    "fitbit-sample": ("fitbit", thin("fitbit"), {}),
    "polar": ("polar", json.loads(polar.BODY), {}),
    "polar-sleep": ("polar", thin("polar_sleep"), {}),
    "apple": ("apple", {"data": {"metrics": [
        *apple.PAYLOAD["data"]["metrics"],
        apple.metric("blood_pressure", "mmHg",
                          {"date": apple.T, "systolic": 118, "diastolic": 76}),
        apple.metric("sleep_analysis", "hr",
                          {"date": apple.T, "totalSleep": 7.5, "deep": 1.5,
                           "sleepStart": apple.T, "sleepEnd": apple.T}),
    ]}}, {"api-key": "sk-bound"}),
    "apple-export": ("apple", fixture("hae_export.json"), {"api-key": "sk-bound"}),
    "auren": ("auren", thin("auren"), {"webhook-id": "msg_1"}),
}
# Withings is a form: its fields, each replaced by arbitrary text.
WITHINGS_FORM = dict(parse_qsl(thin("withings")))


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


@pytest.mark.parametrize("case", sorted(REALISTIC))
@FAST
@given(data=st.data())
def test_a_realistic_payload_with_any_one_value_replaced_is_parsed_or_refused(case, data):
    name, payload, headers = REALISTIC[case]
    path = data.draw(st.sampled_from(list(_paths(payload))), label="path")
    mutated = _replaced(payload, path, data.draw(JSON_VALUES, label="value"))
    parsed_or_refused(name, request(json.dumps(mutated).encode(), headers))


@pytest.mark.parametrize("case", sorted(REALISTIC))
@FAST
@given(data=st.data())
def test_a_realistic_payload_with_several_values_replaced_is_parsed_or_refused(case, data):
    name, payload, headers = REALISTIC[case]
    paths = list(_paths(payload))[1:]
    mutated = payload
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=2, max_size=6),
                          label="paths"):
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier one replaced it
            mutated = _replaced(mutated, path, data.draw(SCALARS, label="value"))
    parsed_or_refused(name, request(json.dumps(mutated).encode(), headers))


# Values that break a rule, tried in every leaf of every realistic payload: instants outside
# the plausible range (or beyond what UTC holds) in each provider's notation, epochs, and
# identifiers that break the one rule.
HOSTILE = [
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1999-12-31T23:59:59Z",
    "2026-01-03T00:00:06Z", "2100-01-01T00:00:00+14:00", "9999-12-31 23:59:59 -0100",
    "0001-01-01 00:00:00 +0100", "1999-12-31 23:59:59 +0000", "2026-01-03 00:00:06 +0000",
    "1999-12-31", "2100-01-01", 0, 946_684_799, 1_767_398_406, 7_258_118_400, 10**12, -1,
    "", " ", "u\x00", "u\n", "\u2028", " u", "x" * 300,
]


def _leaves(value: Any) -> list[tuple[Any, ...]]:
    def walk(node: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            for key, child in node.items():
                yield from walk(child, (*prefix, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                yield from walk(child, (*prefix, index))
        elif prefix:
            yield prefix
    return list(walk(value, ()))


@pytest.mark.parametrize("case", sorted(REALISTIC))
def test_every_leaf_of_a_realistic_payload_with_each_hostile_value(case):
    name, payload, headers = REALISTIC[case]
    for path in _leaves(payload):
        for value in HOSTILE:
            parsed_or_refused(name, request(json.dumps(_replaced(payload, path, value))
                                            .encode(), headers))


@FAST
@given(field=st.sampled_from(sorted(WITHINGS_FORM)), value=st.text(max_size=20)
       | st.sampled_from(["0", "99999999999", "946684799", "1767249000", "2026-02-30",
                          "2100-01-01", "1999-12-31", "٣٣١٨٨٤٢"]))
def test_a_withings_form_with_any_field_replaced_is_parsed_or_refused(field, value):
    form = {**WITHINGS_FORM, field: value}
    parsed_or_refused("withings-open", request(urlencode(form).encode()))


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


def _native(body: bytes) -> dict[str, str]:
    return {"webhook-id": "msg_1", "webhook-timestamp": str(NOW),
            "webhook-signature": "v1," + hmac_b64(NATIVE_KEY, f"msg_1.{NOW}.".encode() + body)}


SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "oura": _oura, "whoop": _whoop, "terra": _terra, "fitbit": _fitbit, "polar": _polar,
    "auren": _native,
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
