"""The insight engine against hand-computed values and its minimum-data rules."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, date, datetime, timedelta, timezone

from auren.events import CanonicalEvent, make_event
from auren.neuros import engine

TODAY = date(2026, 3, 12)  # a Thursday
NOW = datetime(2026, 3, 12, 12, tzinfo=UTC)


def _event(metric: str, value: float, unit: str, start: datetime, end: datetime | None = None,
           provider: str = "auren", record: str = "r") -> CanonicalEvent:
    return make_event(provider=provider, user_id="u", provider_user_id="u", metric=metric,
                      value=value, unit=unit, start=start, end=end, source_record_id=record,
                      received_at=NOW)


def test_nights_belong_to_the_morning_they_end_in_local_time() -> None:
    tz = timezone(timedelta(hours=10))
    # 22:00 to 06:00 local (UTC+10): starts and ends on the previous UTC day.
    start = datetime(2026, 3, 11, 12, tzinfo=UTC)
    night = _event("sleep_duration", 8, "h", start, start + timedelta(hours=8))
    assert engine.day_of(night, tz) == date(2026, 3, 12)
    assert engine.day_of(night, UTC) == date(2026, 3, 11)
    # A day of steps from local midnight to midnight is that local day.
    steps = _event("steps", 5000, "{steps}", datetime(2026, 3, 11, 14, tzinfo=UTC),
                   datetime(2026, 3, 12, 14, tzinfo=UTC))
    assert engine.day_of(steps, tz) == date(2026, 3, 12)


def test_two_providers_are_never_added_together() -> None:
    day = datetime(2026, 3, 10, 8, tzinfo=UTC)
    events = [_event("steps", 4000, "{steps}", day, provider="garmin", record="g1"),
              _event("steps", 1000, "{steps}", day + timedelta(hours=2), provider="garmin",
                     record="g2"),
              _event("steps", 4800, "{steps}", day, provider="oura", record="o1"),
              _event("steps", 3000, "{steps}", day + timedelta(days=1), provider="oura",
                     record="o2")]
    series = engine.daily_series(events, "steps", UTC)
    # Oura has more days, so it wins the shared day; Garmin's chunks are never summed with it.
    assert series == {date(2026, 3, 10): 4800, date(2026, 3, 11): 3000}


def test_sleep_is_summed_and_converted_to_hours() -> None:
    start = datetime(2026, 3, 11, 23, tzinfo=UTC)
    nap = datetime(2026, 3, 12, 13, tzinfo=UTC)
    events = [_event("sleep_duration", 6 * 3600, "s", start, start + timedelta(hours=7)),
              _event("sleep_duration", 30, "min", nap, nap + timedelta(minutes=40), record="n")]
    assert engine.daily_series(events, "sleep_duration", UTC) == {date(2026, 3, 12): 6.5}


def test_hrv_baseline_band_and_status() -> None:
    values = {TODAY - timedelta(days=i): 50.0 + (i % 5) for i in range(1, 61)}
    values.update({TODAY - timedelta(days=i): 40.0 for i in range(0, 7)})
    result = engine.hrv(values, TODAY)
    logs = [math.log(values[TODAY - timedelta(days=i)]) for i in range(1, 61)]
    mu, sd = statistics.mean(logs), statistics.stdev(logs)
    assert result.band.low == round(math.exp(mu - sd / 2))
    assert result.band.high == round(math.exp(mu + sd / 2))
    assert result.band.n_days == 60
    assert result.mean7.value == 40 and result.status == "below" and result.acute_drop


def test_hrv_minimum_data_rules() -> None:
    two = {TODAY: 45.0, TODAY - timedelta(days=3): 50.0}
    result = engine.hrv(two, TODAY)
    assert result.mean7.value is None and result.mean7.n_days == 2
    assert result.mean7.min_days == 3 and result.status is None
    three = {TODAY - timedelta(days=i): 50.0 for i in range(3)}
    result = engine.hrv(three, TODAY)
    assert result.mean7.value == 50 and result.band.value is None
    assert result.band.min_days == 14 and result.band.n_days == 2


def test_resting_hr_deviation_and_minimum() -> None:
    values = {TODAY - timedelta(days=i): 52.0 + (i % 3) for i in range(1, 31)}
    values[TODAY] = 60.0
    result = engine.resting_hr(values, TODAY)
    mean = statistics.mean(52.0 + (i % 3) for i in range(1, 31))
    assert result.latest is not None and result.baseline is not None
    assert result.baseline.value == round(mean, 1)
    assert result.latest.delta == round(60.0 - round(mean, 1), 1)
    assert result.status == "elevated"
    sparse = engine.resting_hr({TODAY: 60.0, TODAY - timedelta(days=1): 58.0}, TODAY)
    assert sparse.baseline is not None and sparse.baseline.value is None
    assert sparse.baseline.min_days == 7


def test_sleep_debt_weights_and_bands() -> None:
    weights = engine.debt_weights()
    assert len(weights) == 14 and math.isclose(sum(weights), 1.0)
    assert weights[0] == 0.15 and weights[1] > weights[13]
    nights = {TODAY - timedelta(days=i): 7.0 for i in range(20)}
    result = engine.sleep(nights, TODAY)
    assert result.need.value == 7.0 and result.debt.value == 0.0
    assert result.streak is not None and result.streak.value == 20
    short = {TODAY - timedelta(days=i): 6.0 for i in range(20)}
    result = engine.sleep(short, TODAY)
    # Need clips to 7 h; one hour short every night is 14 h of debt over two weeks.
    assert result.debt.value == 14.0 and result.debt.status == "high"
    few = engine.sleep({TODAY - timedelta(days=i): 6.0 for i in range(4)}, TODAY)
    assert few.debt.value is None and few.debt.min_days == 5
    assert few.need.value == 8.0  # default until 14 nights


def test_training_load_is_described_never_as_risk() -> None:
    energy = {TODAY - timedelta(days=i): 400.0 for i in range(1, 29)}
    energy.update({TODAY - timedelta(days=i): 800.0 for i in range(1, 8)})
    result = engine.training_load(energy, {}, TODAY)
    acute, chronic = 800.0, (7 * 800 + 21 * 400) / 28
    assert result.ratio is not None and result.ratio.value == round(acute / chronic, 2)
    assert result.description == "much higher than usual"
    for ratio in (0.5, 1.0, 1.4, 2.0):
        assert "risk" not in engine.describe_ratio(ratio)
    sparse = engine.training_load({TODAY - timedelta(days=1): 300.0}, {}, TODAY)
    assert sparse.ratio is None and sparse.chronic.min_days == 21


def test_readiness_needs_a_baseline_and_is_banded() -> None:
    hrv = engine.hrv({}, TODAY)
    rhr = engine.resting_hr({}, TODAY)
    sleep = engine.sleep({TODAY: 8.0}, TODAY)
    result = engine.readiness(hrv, rhr, sleep, {}, {}, TODAY)
    assert result.score.value is None
    steady = {TODAY - timedelta(days=i): 50.0 + (i % 4) for i in range(0, 61)}
    hrv = engine.hrv(steady, TODAY)
    rhr = engine.resting_hr({TODAY - timedelta(days=i): 55.0 + (i % 2) for i in range(31)},
                            TODAY)
    nights = engine.sleep({TODAY - timedelta(days=i): 8.0 for i in range(30)}, TODAY)
    result = engine.readiness(hrv, rhr, nights, {}, {}, TODAY)
    assert result.score.value is not None and result.band is not None
    assert set(result.inputs) == {"hrv", "resting_hr", "sleep", "sleep_debt"}


def test_periods_skip_todays_incomplete_activity() -> None:
    steps = {TODAY - timedelta(days=i): 1000.0 * i for i in range(0, 20)}
    window = engine.Window(TODAY - timedelta(days=6), TODAY)
    shifted = engine.period("steps", steps, window, TODAY, keep_length=True)
    assert shifted is not None
    assert shifted.current.window == engine.Window(TODAY - timedelta(days=7),
                                                   TODAY - timedelta(days=1))
    assert shifted.current.value == statistics.mean(1000.0 * i for i in range(1, 8))
    assert engine.period("steps", steps, engine.Window(TODAY + timedelta(days=1),
                                                       TODAY + timedelta(days=3)), TODAY) is None


def test_fmt_matches_rounding() -> None:
    assert engine.fmt(7.0, 1) == "7" and engine.fmt(7.25, 1) == "7.2"
    assert engine.fmt(1.1, 2) == "1.1" and engine.fmt(52.4, 0) == "52"
