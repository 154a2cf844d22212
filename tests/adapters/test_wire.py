"""The delivery record: what Kafka carries and the spool keeps. Version 2 adds each event's
provenance and fetch time; records of version 1 (written by an older bridge) stay readable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from auren.adapters.wire import decode, encode, record_of
from auren.events import Delivery, make_event

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _delivery() -> Delivery:
    fetched = T0 + timedelta(hours=9)
    events = [
        make_event(provider="whoop", user_id="u", provider_user_id="w", metric="total_energy",
                   value=8368, unit="kJ", start=T0, end=T0 + timedelta(hours=20),
                   source_record_id="c1", received_at=fetched, provenance="fetch",
                   fetched_at=fetched),
        make_event(provider="auren", user_id="u", provider_user_id="u", metric="steps",
                   value=10, unit="{steps}", start=T0, received_at=T0),
    ]
    return Delivery(provider="whoop", delivery_key="k", events=events)


def test_a_record_round_trips_provenance_and_fetch_time():
    record = record_of(_delivery(), "2026-02-01T09:00:00.000000Z")
    back = decode(encode(record))
    assert back == record
    fetched, pushed = back.events
    assert fetched[11:] == ("fetch", "2026-02-01T09:00:00.000000Z")
    assert fetched[5] == pytest.approx(2000.0)  # kJ converted to kcal once, when built
    assert pushed[11:] == ("push", None)


def test_a_version_1_record_reads_as_pushed_events():
    row = ["id", "u", "oura", "o", "steps", 5, "{steps}", "2026-01-01T00:00:00.000000Z", None,
           "r", "2026-01-01T00:00:01.000000Z"]
    old = orjson.dumps([1, "oura", "key", "2026-01-01T00:00:01.000000Z", [row], []])
    (event,) = decode(old).events
    assert event[:11] == (*row[:5], 5.0, *row[6:])
    assert event[11:] == ("push", None)


@pytest.mark.parametrize("value", [
    [3, "p", "k", "t", [], []],  # a version this code does not know
    [2, "p", "k", "t", [["id", "u", "p", "o", "m", 1.0, "s", "t", None, None, "t"]], []],
    [1, "p", "k", "t", [["id", "u", "p", "o", "m", 1.0, "s", "t", None, None, "t", "push",
                         None]], []],
    [2, "p", "k", "t", [["id", "u", "p", "o", "m", 1.0, "s", "t", None, None, "t", 7, None]],
     []],
])
def test_malformed_records_are_refused_not_crashed_on(value):
    with pytest.raises(ValueError):
        decode(orjson.dumps(value))
