"""Property tests against a real bridge process: whatever a correctly signed sender puts in the
body (native events, or any vendor's sample payload with its values replaced), whatever an
attacker puts in the headers, and whatever a reader puts in the read API's parameters, the
answer is a documented success or 4xx, never a 5xx."""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ServerProcess, native_headers, run_server
from tests.providers.vendors import SECRETS, fixture, signed, thin

pytestmark = pytest.mark.slow

# Values that break the input rules: instants outside the plausible range or beyond what UTC
# holds (in ISO, HAE and epoch notation), and identifiers that break the one rule.
_hostile = st.sampled_from([
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z", "9999-12-31 23:59:59 -0100", "0001-01-01 00:00:00 +0100",
    "２０２６-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00\x00", 0, 946_684_799, 7_258_118_400,
    10**12, "", " ", "u\x00", "u\n", "\u2028", " u", "x" * 300, "mL/min·kg", "degR",
])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
                     _hostile)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
_event = st.fixed_dictionaries(
    {"metric": st.one_of(st.sampled_from(["hrv_rmssd", "steps", "weight", "sleep_duration",
                                          "temperature_deviation"]), st.text(max_size=12)),
     "value": _scalars,
     "unit": st.one_of(st.sampled_from(["ms", "{steps}", "lb", "h", "[degF]", "kJ"]),
                       st.text(max_size=8)),
     "start": st.one_of(st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00"]),
                        st.text(max_size=30), st.integers(), _hostile)},
    optional={"end": _scalars, "id": _scalars})
_native = st.fixed_dictionaries(
    {"type": st.one_of(st.just("biometrics.recorded"), st.text(max_size=10)),
     "user_id": st.one_of(st.text(min_size=1, max_size=20), _scalars, _hostile),
     "events": st.one_of(st.lists(st.one_of(_event, _json), max_size=5), _json)})


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory):
    # Every provider configured, so that every route parses what it is sent.
    with run_server("bridge", tmp_path_factory.mktemp("props"), dict(SECRETS)) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield server, client


_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_settings
@given(body=st.one_of(_native, _json))
def test_signed_arbitrary_json_never_gets_a_5xx(bridge: tuple[ServerProcess, httpx.Client], body):
    _, client = bridge
    # The stdlib encoder also writes integers beyond 64 bits: hostile input the server must take.
    raw = json.dumps(body).encode()
    response = client.post("/webhooks/auren", content=raw, headers=native_headers(raw))
    assert response.status_code in {200, 202, 400, 422}, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@_settings
@given(raw=st.binary(max_size=300))
def test_signed_arbitrary_bytes_never_get_a_5xx(bridge: tuple[ServerProcess, httpx.Client], raw):
    _, client = bridge
    response = client.post("/webhooks/auren", content=raw, headers=native_headers(raw))
    assert response.status_code in {200, 202, 400, 422}, response.text


# HTTP clients refuse header values with outer whitespace, so the generator strips it.
_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                       max_size=60).map(str.strip)


@_settings
@given(msg_id=_header_text, timestamp=_header_text, signature=_header_text,
       provider=st.sampled_from(["auren", "oura", "whoop", "terra", "garmin", "fitbit",
                                 "polar", "withings", "apple"]))
def test_hostile_headers_get_a_4xx(bridge: tuple[ServerProcess, httpx.Client], msg_id,
                                   timestamp, signature, provider):
    _, client = bridge
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": signature, "x-oura-timestamp": timestamp,
               "x-oura-signature": signature, "x-whoop-signature": signature,
               "x-whoop-signature-timestamp": timestamp, "terra-signature": signature,
               "garmin-client-id": msg_id, "x-fitbit-signature": signature,
               "polar-webhook-signature": signature, "api-key": msg_id}
    response = client.post(f"/webhooks/{provider}", content=b'{"type": "x"}', headers=headers)
    assert 400 <= response.status_code < 500, response.text


# The vendors' sample payloads: (route, payload). Withings' form is replaced field by field.
_SAMPLES: list[tuple[str, Any]] = [
    ("garmin", fixture("garmin_push.json")), ("terra", fixture("terra_sleep.json")),
    ("terra", fixture("terra_daily.json")), ("apple", fixture("hae_export.json")),
    ("oura", thin("oura")), ("oura", thin("oura_without_object")), ("whoop", thin("whoop_v2")),
    ("fitbit", thin("fitbit")), ("polar", thin("polar_exercise")), ("auren", thin("auren")),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    children = (value.items() if isinstance(value, dict)
                else enumerate(value) if isinstance(value, list) else ())
    for key, child in children:
        found += _paths(child, (*prefix, key))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    result = copy.deepcopy(value)
    node = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return result


def _post_signed(client: httpx.Client, route: str, body: bytes) -> httpx.Response:
    headers = native_headers(body) if route == "auren" else signed(route, body, int(time.time()))
    return client.post(f"/webhooks/{route}", content=body, headers=headers)


@_settings
@given(data=st.data())
def test_signed_vendor_samples_with_values_replaced_never_get_a_5xx(
        bridge: tuple[ServerProcess, httpx.Client], data):
    _, client = bridge
    route, payload = data.draw(st.sampled_from(_SAMPLES), label="sample")
    for path in data.draw(st.lists(st.sampled_from(_paths(payload)), min_size=1, max_size=3),
                          label="paths"):
        try:
            payload = _replaced(payload, path, data.draw(_json, label="value"))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed the path
    response = _post_signed(client, route, json.dumps(payload).encode())
    assert response.status_code in {200, 202, 204, 400, 422}, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@_settings
@given(form=st.fixed_dictionaries({}, optional={
    "userid": st.text(max_size=14) | st.sampled_from(["3318842", "0"]),
    "appli": st.text(max_size=4) | st.sampled_from(["44", "1"]),
    "startdate": st.text(max_size=14) | st.sampled_from(["0", "1767134400", "99999999999"]),
    "enddate": st.text(max_size=14) | st.sampled_from(["1767163800", "999999999999"]),
    "date": st.text(max_size=12) | st.sampled_from(["2026-02-30", "9999-12-31", "2025-12-31"]),
}))
def test_withings_forms_never_get_a_5xx(bridge: tuple[ServerProcess, httpx.Client], form):
    _, client = bridge
    response = client.post("/webhooks/withings", content=urlencode(form).encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code in {200, 400, 422}, response.text


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


_instants = st.one_of(
    st.sampled_from(["2026-01-01T00:00:00Z", "2025-12-31T00:00:00+01:00"]), _hostile,
    st.text(max_size=40), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()))


@_settings
@given(user=st.text(min_size=1, max_size=40) | _hostile.map(str),
       params=st.fixed_dictionaries({}, optional={
           "metric": st.sampled_from(["heart_rate", "sleep_duration", "time_in_bed"])
           | st.text(max_size=70),
           "since": _instants, "until": _instants,
           "limit": st.integers(-5, 2000).map(str) | st.text(max_size=5),
           "cursor": st.text(max_size=60) | st.tuples(_instants, st.text(max_size=10)
                                                      | _hostile).map(_cursor),
       }))
def test_read_api_parameters_never_get_a_5xx(bridge: tuple[ServerProcess, httpx.Client], user,
                                             params):
    _, client = bridge
    response = client.get(f"/api/v1/users/{quote(user, safe='')}/events",
                          params={k: str(v) for k, v in params.items()})
    # 404: a user id that is only slashes or dots leaves no route to match.
    assert response.status_code in {200, 400, 404, 422}, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
