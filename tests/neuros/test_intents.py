"""Intent and period rules, on a fixed Thursday."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from auren.neuros.intents import HRV, RHR, SLEEP, STEPS, Intent, Parsed, find_periods, parse

TODAY = date(2026, 3, 12)  # Thursday


@pytest.mark.parametrize(("text", "start", "end"), [
    ("today", TODAY, TODAY),
    ("last night", TODAY, TODAY),
    ("yesterday", TODAY - timedelta(days=1), TODAY - timedelta(days=1)),
    ("this week", date(2026, 3, 9), TODAY),
    ("last week", date(2026, 3, 2), date(2026, 3, 8)),
    ("since monday", date(2026, 3, 9), TODAY),
    ("since thursday", date(2026, 3, 5), TODAY),
    ("since 2026-03-01", date(2026, 3, 1), TODAY),
    ("on 2026-02-28", date(2026, 2, 28), date(2026, 2, 28)),
    ("march 3", date(2026, 3, 3), date(2026, 3, 3)),
    ("3rd of march", date(2026, 3, 3), date(2026, 3, 3)),
    ("december 24", date(2025, 12, 24), date(2025, 12, 24)),
    ("last 30 days", TODAY - timedelta(days=29), TODAY),
    ("past two weeks", TODAY - timedelta(days=13), TODAY),
    ("this month", date(2026, 3, 1), TODAY),
    ("last month", date(2026, 2, 1), date(2026, 2, 28)),
    ("from 2026-02-01 to 2026-02-10", date(2026, 2, 1), date(2026, 2, 10)),
    ("on tuesday", date(2026, 3, 10), date(2026, 3, 10)),
    ("lately", TODAY - timedelta(days=6), TODAY),
])
def test_periods(text: str, start: date, end: date) -> None:
    found = find_periods(text, TODAY)
    assert found, text
    period = found[0][1]
    assert (period.start, period.end) == (start, end)


@pytest.mark.parametrize(("text", "intent", "metrics"), [
    ("hi", Intent.GREETING, ()),
    ("Hello NEUROS!", Intent.GREETING, ()),
    ("are you operational?", Intent.STATUS, ()),
    ("what can you do?", Intent.HELP, ()),
    ("How ready am I today?", Intent.READINESS, ()),
    ("what's my readiness", Intent.READINESS, ()),
    ("How did I sleep last night?", Intent.SLEEP, (SLEEP,)),
    ("what's my HRV", Intent.HRV, (HRV,)),
    ("resting heart rate?", Intent.RESTING_HR, (RHR,)),
    ("should I train hard today?", Intent.RECOVERY, ()),
    ("what's my training load", Intent.TRAINING, ("active_energy",)),
    ("how did I sleep last week", Intent.TREND, (SLEEP,)),
    ("steps since monday", Intent.TREND, (STEPS,)),
    ("sleep this week vs last week", Intent.COMPARE, (SLEEP,)),
    ("is my hrv better than last week?", Intent.COMPARE, (HRV,)),
    ("what is the capital of france", Intent.UNKNOWN, ()),
])
def test_intents(text: str, intent: Intent, metrics: tuple[str, ...]) -> None:
    parsed = parse(text, TODAY)
    assert parsed.intent is intent, parsed
    assert parsed.metrics == metrics


def test_comparison_periods() -> None:
    parsed = parse("compare my sleep this week to last week", TODAY)
    assert parsed.period is not None and parsed.other is not None
    assert parsed.period.label == "this week" and parsed.other.label == "last week"
    parsed = parse("is my sleep better than last week?", TODAY)
    assert parsed.period is not None and parsed.period.label == "this week"
    parsed = parse("hrv last 14 days compared", TODAY)
    assert parsed.other is not None and parsed.other.end == TODAY - timedelta(days=14)


def test_follow_ups_borrow_from_the_previous_turn() -> None:
    first = parse("how did I sleep last week", TODAY)
    again = Parsed.from_meta(first.as_meta())
    assert again == first
    follow = parse("and my hrv?", TODAY, again)
    assert follow.intent is Intent.TREND and follow.metrics == (HRV,)
    assert follow.period == first.period
    other_week = parse("and the week before?", TODAY, again)
    assert other_week.intent is Intent.TREND and other_week.metrics == (SLEEP,)


def test_labels_only_carry_numbers_that_are_window_lengths() -> None:
    for text in ("past three weeks", "last 2 months", "last 10 days"):
        period = find_periods(text, TODAY)[0][1]
        digits = [int(x) for x in __import__("re").findall(r"\d+", period.label)]
        assert digits == [period.days]
