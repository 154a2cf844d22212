"""The pure parts of connections: which history a reconnect still needs, coverage and its stale
rule, the limiter's windows, how a provider's answer is read, and the OAuth compliance hook
that turns Withings' and Fitbit's token answers into OAuth's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import orjson
import pytest

from auren.adapters.base import DayCoverage
from auren.connections.base import ACTIVE, REAUTHORIZATION_REQUIRED, Connection
from auren.connections.coverage import cadence, coverage
from auren.connections.history import missing_ranges
from auren.connections.http import _Auth, _Rate, _Transient, read
from auren.connections.limits import RateLimiter, Window
from auren.connections.oauth import OAuthSpec, _as_oauth
from auren.errors import UpstreamFailed, UpstreamRateLimited, UpstreamRejected

D = date(2026, 6, 1)


def days(*offsets: int) -> set[date]:
    return {D + timedelta(days=n) for n in offsets}


@pytest.mark.parametrize(("covered", "expected"), [
    (set(), [(0, 9)]),  # nothing yet: all of it
    (days(*range(10)), [(8, 9)]),  # all of it: only the last two days again
    (days(0, 1, 2, 6, 7), [(3, 5), (8, 9)]),  # a week away: the gap, and the recent days
    (days(1, 2, 3, 4, 5, 6, 7), [(0, 0), (8, 9)]),
])
def test_a_reconnect_fetches_only_the_missing_days(covered, expected):
    found = missing_ranges(D, D + timedelta(days=9), covered)
    assert [((a - D).days, (b - D).days) for a, b in found] == expected


def _row(provider: str, metric: str, offset: int) -> DayCoverage:
    day = D + timedelta(days=offset)
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=22)
    return DayCoverage(provider, metric, day, 1, at, at + timedelta(hours=9), at)


def _connection(provider: str, status: str = ACTIVE) -> Connection:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    return Connection(provider, "p", "u", status, (), now, now)


def test_a_connected_source_is_stale_past_its_cadence_and_grace():
    today = D + timedelta(days=20)
    rows = [_row("oura", "sleep_duration", n) for n in range(10, 16)]  # daily, until day 15
    rows += [_row("withings", "weight", n) for n in range(0, 20, 4)]  # every 4 days, day 16
    rows += [_row("apple", "steps", n) for n in range(0, 5)]  # pushed, long silent
    sources = {s.provider: s for s in coverage(
        [_connection("oura"), _connection("withings"), _connection("fitbit")], rows, today)}
    oura = sources["oura"].metrics[0]
    assert (oura.cadence_days, oura.silent_days, oura.stale) == (1.0, 5, True)
    weight = sources["withings"].metrics[0]
    assert (weight.cadence_days, weight.silent_days, weight.stale) == (4.0, 4, False)
    assert sources["oura"].stale and not sources["withings"].stale
    assert not sources["apple"].stale and sources["apple"].connection is None
    assert sources["fitbit"].metrics == [] and not sources["fitbit"].stale  # no data yet
    # Three days of grace for a daily metric is not stale: last night arrives in the morning.
    fresh = coverage([_connection("oura")], [_row("oura", "hrv_rmssd", 17)], today)
    assert not fresh[0].metrics[0].stale
    # A connection that needs re-authorization is reported, not judged stale.
    reauth = coverage([_connection("oura", REAUTHORIZATION_REQUIRED)], rows[:6], today)
    assert not reauth[0].stale and reauth[0].as_dict()["status"] == REAUTHORIZATION_REQUIRED


def test_cadence_is_the_median_gap_of_at_least_a_day():
    assert cadence([D]) == 1.0
    assert cadence(sorted(days(0, 1, 2, 9))) == 1.0
    assert cadence(sorted(days(0, 7, 14, 15))) == 7.0


async def test_the_limiter_counts_each_documented_window():
    now = [1_000_000.0 * 60]  # at the start of a minute window
    limiter = RateLimiter(limits={"x": (Window("app", 3, 60), Window("user", 2, 3600))},
                          clock=lambda: now[0])
    assert [await limiter.acquire("x", "a") for _ in range(2)] == [0, 0]
    assert await limiter.acquire("x", "a") == 3600 - (now[0] % 3600)  # a's hour is full
    assert await limiter.acquire("x", "b") == 60.0  # the app's minute is full too
    now[0] += 60
    assert await limiter.acquire("x", "b") == 0.0
    assert await limiter.acquire("unlisted", "a") == 0.0


def response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.Response(status, content=content, headers=headers or {},
                          request=httpx.Request("GET", "https://api.example/x"))


@pytest.mark.parametrize(("dialect", "answer", "outcome"), [
    ("http", response(200, {"a": 1}), {"a": 1}),
    ("http", response(204, b""), None),
    ("http", response(401, {}), _Auth),
    ("http", response(429, {}, {"retry-after": "7"}), _Rate),
    ("http", response(503, b"<html>"), _Transient),
    ("http", response(200, b'{"data": [1, 2'), _Transient),  # cut off half-way
    ("http", response(403, {}), UpstreamRejected),
    ("withings", response(200, {"status": 0, "body": {"x": 1}}), {"x": 1}),
    ("withings", response(200, {"status": 401, "body": {}}), _Auth),
    ("withings", response(200, {"status": 601, "body": {}}), _Rate),
    ("withings", response(200, {"status": 503, "body": {}}), UpstreamRejected),
    ("withings", response(200, {"body": {}}), _Transient),
])
def test_an_answer_is_read_by_its_providers_dialect(dialect, answer, outcome):
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            read(dialect, answer, frozenset())
    else:
        assert read(dialect, answer, frozenset()) == outcome
    if isinstance(outcome, type) and outcome is _Rate and dialect == "http":
        with pytest.raises(_Rate) as caught:
            read(dialect, answer, frozenset())
        assert caught.value.seconds == 7


def spec(dialect: str) -> OAuthSpec:
    return OAuthSpec("p", "https://a", "https://t", "id", "secret", None, "client_secret_post",
                     pkce=False, dialect=dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize(("dialect", "answer", "expected"), [
    ("withings", response(200, {"status": 0, "body": {"access_token": "a", "userid": 7}}),
     {"access_token": "a", "userid": 7}),
    ("withings", response(200, {"status": 401, "error": 'invalid "code"'}),
     {"error": "invalid_grant", "error_description": "invalid code"}),
    ("fitbit", response(400, {"errors": [{"errorType": "invalid_grant",
                                          "message": "Refresh token invalid: x\\y"}],
                              "success": False}),
     {"error": "invalid_grant", "error_description": "Refresh token invalid: xy"}),
    ("oauth", response(401, {"detail": "expired"}),
     {"error": "invalid_grant", "error_description": "HTTP 401"}),
    ("oauth", response(200, {"token_type": "bearer"}),
     {"error": "invalid_response", "error_description": "HTTP 200"}),
])
def test_token_answers_are_read_as_oauth(dialect, answer, expected):
    assert orjson.loads(_as_oauth(spec(dialect), answer).content) == expected


@pytest.mark.parametrize(("answer", "error"), [
    (response(429, {}, {"retry-after": "9"}), UpstreamRateLimited),
    (response(200, {"status": 601}), UpstreamRateLimited),
    (response(502, b"<html>"), UpstreamFailed),
    (response(200, b'{"access_token": "'), UpstreamFailed),
    (response(200, [1, 2]), UpstreamFailed),
])
def test_token_answers_that_are_no_token_and_no_error_are_failures(answer, error):
    with pytest.raises(error):
        _as_oauth(spec("withings"), answer)
