from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.providers.withings import WithingsProvider
from auren.settings import Settings
from tests.providers._helpers import NOW, RECEIVED, request

BODY = b"userid=3318842&appli=44&startdate=1767218400&enddate=1767249000"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def provider(ips: str = "", enabled: bool = True) -> WithingsProvider:
    built = WithingsProvider.from_settings(Settings(_env_file=None, withings_enabled=enabled,
                                                    withings_allowed_ips=ips))
    assert built is not None
    return built


def test_not_configured_unless_enabled_or_allow_listed():
    assert WithingsProvider.from_settings(Settings(_env_file=None)) is None
    assert provider(ips="10.0.0.0/8", enabled=False) is not None


def test_head_probe_is_answered_200():
    answer = provider().handshake(request(method="HEAD"))
    assert answer is not None and answer.status == 200
    assert provider().handshake(request(BODY, FORM)) is None


def test_without_an_allow_list_anything_verifies():
    provider().verify(request(BODY, FORM, client_ip="203.0.113.9"), NOW)
    provider().verify(request(BODY, FORM), NOW)


@pytest.mark.parametrize("ip", ["89.30.121.5", "10.1.2.3", "::ffff:10.1.2.3",
                                "2001:db8::1"])
def test_allow_listed_addresses_pass(ip):
    provider(ips="89.30.121.5, 10.0.0.0/8, 2001:db8::/32").verify(
        request(BODY, FORM, client_ip=ip), NOW)


@pytest.mark.parametrize("ip", ["89.30.121.6", "192.168.0.1", "2001:db9::1", None, "",
                                "not an ip", "10.1.2.3:443"])
def test_other_addresses_are_401(ip):
    with pytest.raises(SignatureInvalid):
        provider(ips="89.30.121.5, 10.0.0.0/8, 2001:db8::/32").verify(
            request(BODY, FORM, client_ip=ip), NOW)


def test_bad_allow_list_entry_fails_at_start_up():
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        provider(ips="withings.net")


def test_parse_makes_one_fetch_job_and_answers_200():
    delivery = provider().parse(request(BODY, FORM), RECEIVED)
    assert delivery.success_status == 200
    (job,) = delivery.fetch_jobs
    assert (job.kind, job.object_id) == ("44", None)
    assert (job.user_id, job.provider_user_id) == ("withings:3318842", "3318842")
    # The window is the job's own, and travels in params to every store.
    assert (job.window_start, job.window_end) == (datetime(2025, 12, 31, 22, tzinfo=UTC),
                                                  datetime(2026, 1, 1, 6, 30, tzinfo=UTC))
    assert job.params == {"startdate": 1767218400, "enddate": 1767249000,
                          "window_start": "2025-12-31T22:00:00.000000Z",
                          "window_end": "2026-01-01T06:30:00.000000Z"}
    again = provider().parse(request(BODY, FORM), RECEIVED).fetch_jobs[0]
    assert again.job_id == job.job_id


def test_event_notifications_carry_date_and_action():
    body = b"userid=3318842&appli=46&date=2026-01-01&action=unlink&deviceid=abc"
    (job,) = provider().parse(request(body, FORM), RECEIVED).fetch_jobs
    assert job.params == {"date": "2026-01-01", "action": "unlink"}


@pytest.mark.parametrize(("body", "match"), [
    (b"appli=44", "userid"),
    (b"userid=1", "appli"),
    (b"userid=abc&appli=44", "userid"),
    (b"userid=1&appli=44&startdate=yesterday", "startdate"),
    # Every instant and date within the plausible range (2000 .. two days after receipt).
    (b"userid=1&appli=44&startdate=0&enddate=1767249000", "startdate"),
    (b"userid=1&appli=44&startdate=1767218400&enddate=999999999999", "enddate"),
    (b"userid=1&appli=44&startdate=1767249000&enddate=1767218400", "before"),
    (b"userid=1&appli=46&date=9999-12-31", "date"),
    (b"userid=1&appli=46&date=2026-02-30", "date"),
    (b"userid=1&appli=46&date=99999999999", "date"),
])
def test_wrong_fields_are_422(body, match):
    with pytest.raises(InvalidPayload, match=match):
        provider().parse(request(body, FORM), RECEIVED)


@pytest.mark.parametrize("body", [b"\xff\xfe", b"userid=1&userid=2&appli=4",
                                  b"&".join([b"a=1"] * 40)])
def test_malformed_body_is_400(body):
    with pytest.raises(MalformedPayload):
        provider().parse(request(body, FORM), RECEIVED)
