"""Property tests against real NEUROS and gateway processes, for the fields the bridge's and the
providers' property tests do not reach: every field of a chat body (and the stream's), every
path and query parameter of the conversation routes, and whatever path, query and headers a
client sends through the gateway. The answer is always a documented success or a 4xx
(problem+json), never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import free_port, run_server

pytestmark = pytest.mark.slow

API_KEY = "prop-service-key-0123456789"
CHAT_STATUSES = {200, 400, 401, 403, 404, 413, 415, 422, 429}

# Values that break the input rules, beside whatever hypothesis draws: time zones that name a
# folder of the tz database or climb out of it, offsets out of range, control characters,
# identifiers of the wrong shape or length.
_hostile = st.sampled_from([
    "America", "Etc", "Etc/../../etc/passwd", "/etc/localtime", "UTC\x00", "+25:00", "-24:00",
    "+02:60", "+0200", "Z", "z", "utc", "Europe/Paris ", " ", "", "\u2028", "x" * 300,
    "２０２６", "c-" + "a" * 64, "a" * 65, "conv id", "../x", "\x00", "I want to die",
])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                     _hostile)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=8)
_chat = st.fixed_dictionaries({}, optional={
    "message": st.one_of(st.text(min_size=1, max_size=80), _hostile, _scalars),
    "user_id": st.one_of(st.sampled_from(["alice", "bob"]), st.text(max_size=20), _hostile,
                         _scalars),
    "conversation_id": st.one_of(st.text(alphabet="abc_-0123456789", min_size=1, max_size=70),
                                 _hostile, _scalars),
    "timezone": st.one_of(st.timezone_keys(), _hostile, st.text(max_size=70), _scalars),
    "extra": _json,
})

_settings = settings(max_examples=120, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("neuros-props")
    auth = {"AUREN_API_KEYS": API_KEY, "NEUROS_RATE_PER_MINUTE": "1000000"}
    with run_server("neuros", tmp, auth) as neuros, run_server("bridge", tmp, auth) as bridge, \
            run_server("gateway", tmp, {
                "AUREN_NEUROS_URL": neuros.base_url, "AUREN_BRIDGE_URL": bridge.base_url,
                # Nothing listens there: the legacy prefix stands for an upstream that is down.
                "AUREN_LEGACY_URL": f"http://127.0.0.1:{free_port()}"}) as gateway:
        headers = {"authorization": f"Bearer {API_KEY}"}
        # A connection per request: a kept-alive one the server closes (its keep-alive bound,
        # or after refusing a request) can race the client's next send on it, which would
        # fail the test on a transport race rather than on an answer.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=neuros.base_url, timeout=15, headers=headers,
                          limits=fresh) as n, \
                httpx.Client(base_url=gateway.base_url, timeout=15, headers=headers,
                             limits=fresh) as g:
            yield {"neuros": n, "gateway": g}


def _problem(response: httpx.Response) -> None:
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text


@_settings
@given(body=st.one_of(_chat, _json), route=st.sampled_from(["/chat", "/api/v1/chat",
                                                             "/api/v1/chat/stream"]))
def test_any_chat_body_gets_an_answer_or_a_4xx(servers: dict[str, httpx.Client],
                                               body: Any, route: str) -> None:
    raw = json.dumps(body).encode()  # integers past 64 bits included
    response = servers["neuros"].post(route, content=raw,
                                      headers={"content-type": "application/json"})
    assert response.status_code in CHAT_STATUSES, response.text
    _problem(response)


@_settings
@given(raw=st.binary(max_size=200))
def test_any_chat_bytes_get_an_answer_or_a_4xx(servers: dict[str, httpx.Client],
                                               raw: bytes) -> None:
    response = servers["neuros"].post("/chat", content=raw,
                                      headers={"content-type": "application/json"})
    assert response.status_code in CHAT_STATUSES, response.text
    _problem(response)


_segments = st.one_of(st.text(min_size=1, max_size=40), _hostile.filter(bool))
_limits = st.one_of(st.integers(-5, 5000).map(str), st.text(max_size=6))


@_settings
@given(user=_segments, conversation=_segments, limit=_limits,
       method=st.sampled_from(["GET", "DELETE", "GET-ONE", "PUT"]))
def test_conversation_routes_take_any_parameter(servers: dict[str, httpx.Client], user: str,
                                                conversation: str, limit: str,
                                                method: str) -> None:
    base = f"/api/v1/users/{quote(user, safe='')}/conversations"
    client = servers["neuros"]
    if method == "GET-ONE":
        response = client.get(f"{base}/{quote(conversation, safe='')}", params={"limit": limit})
    else:
        response = client.request(method, base, params={"limit": limit})
    # 404: a path that only slashes or dots leave no route for, or an unknown conversation;
    # 405 (with every method of the path in Allow) for PUT.
    assert response.status_code in {200, 400, 404, 405, 422}, response.text
    _problem(response)
    if response.status_code == 405:
        assert set(response.headers["allow"].split(", ")) >= {"GET", "DELETE"}


# What an HTTP client may put in a header value (RFC 9110 field-value: visible ASCII, space,
# tab and obs-text bytes 0x80-0xFF, which are not ASCII and must pass the gateway all the same).
_header_values = st.lists(st.sampled_from([9, *range(32, 127), *range(128, 256)]),
                          max_size=40).map(bytes).filter(lambda b: b.strip() == b)


@_settings
@given(prefix=st.sampled_from(["neuros", "bridge", "legacy", "nope", ""]),
       path=st.text(max_size=40), query=st.text(max_size=40),
       method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
       header=_header_values, body=st.binary(max_size=100))
def test_anything_through_the_gateway_gets_no_5xx(servers: dict[str, httpx.Client], prefix: str,
                                                  path: str, query: str, method: str,
                                                  header: bytes, body: bytes) -> None:
    """The legacy upstream is not running here: its prefix must answer 502, the one 5xx a
    request may get (the gateway's documented "upstream unreachable")."""
    url = f"/api/{prefix}/{quote(path, safe='/%')}" + (f"?{quote(query, safe='=&%')}"
                                                          if query else "")
    request = servers["gateway"].build_request(method, url, content=body or None)
    request.headers["x-anything"] = header.decode("latin-1")
    response = servers["gateway"].send(request)
    if prefix == "legacy":
        assert response.status_code in {400, 404, 405, 413, 502}, response.text
    else:
        assert response.status_code < 500, (url, response.status_code, response.text)
