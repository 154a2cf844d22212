"""Synthetic wearers: seeded daily biometric histories (pure, deterministic).

:func:`generate_users` builds per-user daily records from a seed. The physiology is a small
causal model rather than independent noise: HRV is log-normal around a personal baseline with
an autocorrelated day-to-day term, a slow trend, dips after short nights and during fever-like
episodes; resting HR moves against HRV; sleep is shorter on work nights and longer at the
weekend. The same seed gives the same data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class UserProfile:
    """The stable traits a user's days vary around."""

    user_id: str
    utc_offset_min: int
    hrv_baseline_ms: float
    rhr_baseline_bpm: float
    sleep_need_h: float
    bedtime_h: float  # hours after the previous local midnight (23.5 = 23:30)
    steps_baseline: float
    weekend_steps_factor: float
    stride_m: float
    weight_kg: float
    resp_baseline: float
    spo2_baseline: float
    deep_fraction: float
    rem_fraction: float
    sdnn_ratio: float


@dataclass(frozen=True, slots=True)
class DayRecord:
    """One user's day: the night that ended on the morning of ``day`` plus the day's activity."""

    user_id: str
    day: date
    utc_offset_min: int
    sleep_start: datetime  # UTC
    sleep_end: datetime  # UTC
    sleep_duration_s: int  # asleep: deep + light + rem
    deep_s: int
    light_s: int
    rem_s: int
    awake_s: int
    sleep_efficiency_pct: float
    hrv_rmssd_ms: float
    hrv_sdnn_ms: float
    resting_hr_bpm: int
    spo2_pct: float
    respiratory_rate: float
    temperature_deviation_c: float
    steps: int
    distance_m: float
    active_energy_kcal: float
    fever: bool

    @property
    def time_in_bed_s(self) -> int:
        return self.sleep_duration_s + self.awake_s

    @property
    def day_start(self) -> datetime:
        """Local midnight at the start of ``day``, in UTC."""
        return datetime.combine(self.day, datetime.min.time(), UTC) - timedelta(
            minutes=self.utc_offset_min)

    @property
    def day_end(self) -> datetime:
        return self.day_start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class UserHistory:
    profile: UserProfile
    days: tuple[DayRecord, ...]

    @property
    def user_id(self) -> str:
        return self.profile.user_id


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _soft(value: float, low: float, high: float, knee: float) -> float:
    """Keep ``value`` inside [low, high] by bending it smoothly within ``knee`` of a bound.

    A hard clamp would pile many days up at exactly the bound (a person with a high step
    baseline "walking" 18000 steps on a dozen days); bending makes extremes rare instead.
    """
    if value > high - knee:
        return high - knee * math.exp(-(value - (high - knee)) / knee)
    if value < low + knee:
        return low + knee * math.exp((value - (low + knee)) / knee)
    return value


# Common offsets, so that local-time patterns (bedtime, weekends) fall on different UTC hours.
_OFFSETS_MIN = (-480, -420, -300, -240, 0, 60, 120, 330, 540, 600)


def _profile(rng: random.Random, user_id: str) -> UserProfile:
    hrv = _clamp(math.exp(rng.gauss(math.log(52.0), 0.32)), 30.0, 90.0)
    # Fitter hearts: higher HRV goes with a lower resting rate (about -0.28 bpm per ms).
    rhr = _soft(72.0 - 0.28 * hrv + rng.gauss(0.0, 2.5), 46.0, 68.0, 2.0)
    return UserProfile(
        user_id=user_id,
        utc_offset_min=rng.choice(_OFFSETS_MIN),
        hrv_baseline_ms=hrv,
        rhr_baseline_bpm=rhr,
        sleep_need_h=_clamp(rng.gauss(7.5, 0.35), 6.8, 8.3),
        bedtime_h=_clamp(rng.gauss(23.2, 0.6), 21.8, 25.0),
        steps_baseline=_soft(math.exp(rng.gauss(math.log(7500.0), 0.35)), 3500.0, 12000.0,
                             1500.0),
        weekend_steps_factor=rng.uniform(0.75, 1.3),
        stride_m=rng.uniform(0.66, 0.8),
        weight_kg=rng.uniform(55.0, 95.0),
        resp_baseline=rng.uniform(13.2, 16.5),
        spo2_baseline=rng.uniform(95.8, 97.8),
        deep_fraction=rng.uniform(0.13, 0.22),
        rem_fraction=rng.uniform(0.19, 0.25),
        sdnn_ratio=rng.uniform(1.05, 1.3),
    )


# Fever-like episodes: how strong each day of a 2 to 4 day episode is, relative to its peak.
_FEVER_SHAPE = (0.6, 1.0, 0.7, 0.4)
_FEVER_START_P = 1 / 75


def _history(rng: random.Random, profile: UserProfile, days: Sequence[date]) -> UserHistory:
    p = profile
    ln_base = math.log(p.hrv_baseline_ms)
    period = rng.uniform(25.0, 70.0)
    amplitude = rng.uniform(0.04, 0.10)
    phase = rng.uniform(0.0, 2 * math.pi)
    drift_per_year = rng.uniform(-0.15, 0.15)
    ar_hrv = ar_temp = 0.0
    fever_day = -1  # index into _FEVER_SHAPE while an episode lasts
    fever_len = fever_peak = 0.0
    records: list[DayRecord] = []
    for t, day in enumerate(days):
        # The night ending on a Saturday or Sunday morning follows a free evening.
        free_night = day.weekday() in (5, 6)
        weekend = day.weekday() >= 5

        if fever_day < 0 and rng.random() < _FEVER_START_P:
            fever_day, fever_len, fever_peak = 0, rng.randint(2, 4), rng.uniform(0.7, 1.4)
        fever = 0.0
        if fever_day >= 0:
            fever = fever_peak * _FEVER_SHAPE[fever_day]
            fever_day = fever_day + 1 if fever_day + 1 < fever_len else -1
        fever_level = fever / 1.4  # 0..1, drives the other signals

        # --- sleep -----------------------------------------------------------------------
        hours = p.sleep_need_h + (0.45 if free_night else -0.35) + rng.gauss(0.0, 0.4)
        short_night = rng.random() < 0.07
        if short_night:
            hours -= rng.uniform(1.2, 2.2)
        hours = _soft(hours + 0.3 * fever_level, 4.5, 9.5, 0.5)
        efficiency = _clamp(rng.gauss(90.0, 2.5) - (4.0 if short_night else 0.0)
                            - 5.0 * fever_level, 75.0, 97.5)
        asleep = round(hours * 3600)
        awake = round(asleep / (efficiency / 100.0)) - asleep
        # Deep sleep rebounds a little after a short night.
        deep = round(asleep * _clamp(p.deep_fraction + rng.gauss(0.0, 0.02)
                                     + (0.03 if short_night else 0.0), 0.08, 0.3))
        rem = round(asleep * _clamp(p.rem_fraction + rng.gauss(0.0, 0.02), 0.12, 0.3))
        light = asleep - deep - rem
        bedtime = p.bedtime_h + (0.75 if free_night else 0.0) + rng.gauss(0.0, 0.35)
        if short_night:
            bedtime += 1.0
        local_midnight = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC)
        sleep_start = (local_midnight + timedelta(hours=bedtime)
                       - timedelta(minutes=p.utc_offset_min)).replace(microsecond=0)
        sleep_end = sleep_start + timedelta(seconds=asleep + awake)

        # --- autonomic signals -------------------------------------------------------------
        ar_hrv = 0.6 * ar_hrv + rng.gauss(0.0, 0.10)
        deficit = p.sleep_need_h - hours
        sleep_effect = -0.09 * deficit if deficit > 0.75 else 0.0
        ln_hrv = (ln_base + amplitude * math.sin(2 * math.pi * t / period + phase)
                  + drift_per_year * t / 365.0 + ar_hrv + sleep_effect - 0.35 * fever_level)
        hrv = _soft(math.exp(ln_hrv), 12.0, 180.0, 5.0)
        sdnn = _soft(hrv * p.sdnn_ratio + rng.gauss(0.0, 2.0), 12.0, 200.0, 5.0)
        rhr = _soft(p.rhr_baseline_bpm - 9.0 * (math.log(hrv) - ln_base) + rng.gauss(0.0, 1.0)
                    + 6.0 * fever_level, 45.0, 70.0, 2.0)
        spo2 = _soft(p.spo2_baseline + rng.gauss(0.0, 0.6) - 1.2 * fever_level, 94.0, 99.0, 0.8)
        resp = _soft(p.resp_baseline + rng.gauss(0.0, 0.35) + 1.5 * fever_level, 12.0, 18.0, 1.0)
        ar_temp = 0.5 * ar_temp + rng.gauss(0.0, 0.15)
        temp = _clamp(ar_temp, -0.5, 0.5) + fever

        # --- activity ----------------------------------------------------------------------
        steps = p.steps_baseline * (p.weekend_steps_factor if weekend else 1.0)
        steps *= math.exp(rng.gauss(0.0, 0.3)) * (1.0 + 0.1 * math.sin(2 * math.pi * t / 45.0))
        steps *= 1.0 - 0.55 * fever_level
        steps = _soft(steps, 2000.0, 18000.0, 2500.0)
        energy = _soft(steps * p.weight_kg * 0.00055 + rng.gauss(0.0, 40.0), 60.0, 1400.0, 40.0)

        records.append(DayRecord(
            user_id=p.user_id, day=day, utc_offset_min=p.utc_offset_min,
            sleep_start=sleep_start, sleep_end=sleep_end, sleep_duration_s=asleep,
            deep_s=deep, light_s=light, rem_s=rem, awake_s=awake,
            sleep_efficiency_pct=round(efficiency, 1), hrv_rmssd_ms=round(hrv, 1),
            hrv_sdnn_ms=round(sdnn, 1), resting_hr_bpm=round(rhr), spo2_pct=round(spo2, 1),
            respiratory_rate=round(resp, 1), temperature_deviation_c=round(temp, 2),
            steps=round(steps), distance_m=round(steps * p.stride_m, 1),
            active_energy_kcal=round(energy), fever=fever > 0.0,
        ))
    return UserHistory(profile, tuple(records))


def generate_users(n_users: int, days: int, seed: int = 0,
                   end_date: date | None = None, *, prefix: str = "sim") -> list[UserHistory]:
    """``n_users`` histories of ``days`` consecutive days ending on ``end_date``.

    Deterministic in ``(n_users, days, seed, end_date, prefix)``; each user has its own random
    stream, so user 3 is the same whether 5 or 500 users are generated. ``end_date`` defaults to
    yesterday (UTC) so that every day's activity totals are complete. User ids embed the seed:
    two seeds never write into each other's users.
    """
    if n_users < 0 or days < 0:
        raise ValueError("n_users and days must not be negative")
    last = end_date or (datetime.now(UTC).date() - timedelta(days=1))
    calendar = [last - timedelta(days=days - 1 - i) for i in range(days)]
    histories = []
    for index in range(n_users):
        # A string seed is hashed with SHA-512 by `random`, stable across runs and platforms.
        rng = random.Random(f"auren-sim|{seed}|{index}")
        profile = _profile(rng, f"{prefix}-{seed}-{index:04d}")
        histories.append(_history(rng, profile, calendar))
    return histories
