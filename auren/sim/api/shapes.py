"""Values every simulated provider derives the same way from a wearer's day.

The histories carry the physiology (``DayRecord``); providers also report things the
histories do not hold (scores, basal energy, absolute skin temperature, a time-zone name).
Those are derived here, deterministically, so that two providers showing the same night agree
and a test can recompute any served value from the history alone.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone

from auren.sim.api.wearers import Wearer
from auren.sim.wearers import DayRecord

# Fixed zone names for the offsets the generator uses (no daylight saving in the simulator).
ZONE_NAMES = {-480: "America/Los_Angeles", -420: "America/Denver", -300: "America/New_York",
              -240: "America/Halifax", 0: "Europe/London", 60: "Europe/Berlin",
              120: "Europe/Helsinki", 330: "Asia/Kolkata", 540: "Asia/Tokyo",
              600: "Australia/Brisbane"}

# A wrist or finger reads about this many degrees when the deviation from baseline is zero.
SKIN_BASELINE_C = 33.6
EPOCH_DAY = date(2000, 1, 1)


def zone_name(offset_min: int) -> str:
    return ZONE_NAMES.get(offset_min, "UTC")


def tz(offset_min: int) -> timezone:
    return timezone(timedelta(minutes=offset_min))


def local(moment: datetime, offset_min: int) -> datetime:
    return moment.astimezone(tz(offset_min))


def local_iso(moment: datetime, offset_min: int, *, millis: bool = False) -> str:
    """``2026-03-01T23:12:30+01:00`` (``.000`` before the offset with ``millis``)."""
    return local(moment, offset_min).isoformat(timespec="milliseconds" if millis else "seconds")


def local_naive(moment: datetime, offset_min: int, *, millis: bool = True) -> str:
    """Local wall-clock time without an offset, as Fitbit and Polar write it."""
    text = local(moment, offset_min).replace(tzinfo=None)
    return text.isoformat(timespec="milliseconds" if millis else "seconds")


def utc_z(moment: datetime | float, *, millis: bool = True) -> str:
    """``2026-03-02T06:14:02.000Z``."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def offset_text(offset_min: int) -> str:
    """``+01:00`` / ``-05:00``."""
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def day_number(day: date) -> int:
    return (day - EPOCH_DAY).days


def bmr_kcal(wearer: Wearer) -> int:
    """Basal energy per day: about 22 kcal per kg."""
    return round(wearer.weight_kg * 22.0)


def weight_kg(wearer: Wearer, day: date) -> float:
    """The morning weight: the profile's weight with a slow, small swing."""
    return round(wearer.weight_kg + 0.4 * math.sin(day_number(day) / 9.0), 2)


def skin_temperature_c(record: DayRecord) -> float:
    """Absolute skin temperature during sleep (what WHOOP, Polar and Withings report)."""
    return round(SKIN_BASELINE_C + record.temperature_deviation_c, 2)


def _score(value: float) -> int:
    return max(1, min(100, round(value)))


def sleep_score(record: DayRecord) -> int:
    hours = record.sleep_duration_s / 3600
    return _score(45 + 6.5 * (hours - 5.0) + 0.8 * (record.sleep_efficiency_pct - 85))


def readiness_score(wearer: Wearer, record: DayRecord) -> int:
    baseline = wearer.history.profile.hrv_baseline_ms
    return _score(76 + 30 * math.log(record.hrv_rmssd_ms / baseline)
                  - 12 * max(0.0, record.temperature_deviation_c))


def activity_score(record: DayRecord) -> int:
    return _score(40 + record.steps / 200)


def strain(record: DayRecord) -> float:
    """WHOOP's day strain, 0 to 21."""
    return round(min(21.0, 3.0 + 14.0 * (1 - math.exp(-record.steps / 9000))), 1)


def average_heart_rate(record: DayRecord) -> int:
    return record.resting_hr_bpm + 18


def max_heart_rate(record: DayRecord) -> int:
    return min(195, 110 + record.steps // 250)


def sleep_heart_rate(record: DayRecord) -> float:
    """Average heart rate while asleep (a little above the night's lowest)."""
    return round(record.resting_hr_bpm + 4.5, 1)


def active_seconds(record: DayRecord) -> int:
    """Time spent moderately or more active: about a minute per 110 steps."""
    return round(record.steps / 110 * 60)


def latency_s(record: DayRecord) -> int:
    """Time to fall asleep: part of the time awake in bed."""
    return min(record.awake_s, 300 + record.awake_s // 4)
