"""Property tests against a real bridge process: whatever a correctly signed sender puts in the
body, or an attacker puts in the headers, the answer is never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ServerProcess, native_headers, run_server

pytestmark = pytest.mark.slow

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
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
                        st.text(max_size=30), st.integers())},
    optional={"end": _scalars, "id": _scalars})
_native = st.fixed_dictionaries(
    {"type": st.one_of(st.just("biometrics.recorded"), st.text(max_size=10)),
     "user_id": st.one_of(st.text(min_size=1, max_size=20), _scalars),
     "events": st.one_of(st.lists(st.one_of(_event, _json), max_size=5), _json)})


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory):
    with run_server("bridge", tmp_path_factory.mktemp("props")) as server, \
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
