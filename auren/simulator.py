"""Synthetic wearables: seeded daily biometric histories, rendered as signed provider webhooks,
and an async engine that delivers them to a bridge.

Three layers, each usable alone:

1. **Generation** (pure, deterministic): :func:`generate_users` builds per-user daily records
   from a seed. The physiology is a small causal model rather than independent noise: HRV is
   log-normal around a personal baseline with an autocorrelated day-to-day term, a slow trend,
   dips after short nights and during fever-like episodes; resting HR moves against HRV; sleep
   is shorter on work nights and longer at the weekend. The same seed gives the same data.
2. **Rendering** (pure apart from the clock): each provider's wire format, signed with that
   provider module's own ``signed_headers`` and the first secret of its rotation list. Within
   a run every delivery is unique (its body, and its webhook-id or trace id where the provider
   has one); delivery ids are scoped to the run, while the measurements' source record ids
   derive from user, day and metric. Sending the same seed twice therefore re-delivers the same
   nights, which the bridge deduplicates instead of storing a second copy. A deliberate retry
   (same ids and body, new signature) is available through ``redeliver``.
3. **Delivery** (I/O): :func:`deliver` posts with bounded concurrency, finite timeouts and an
   optional constant arrival rate, and summarises statuses and latencies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import inspect
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from auren.events import METRICS, iso
from auren.providers import PROVIDER_CLASSES
from auren.providers.native import EVENT_TYPE, decode_whsec
from auren.settings import Settings

# --------------------------------------------------------------------------------------------
# 1. Generation
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# 2. Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One HTTP request a provider would send: ready to post, signature included."""

    provider: str  # the route segment: POST /webhooks/{provider}
    path: str
    headers: dict[str, str]
    body: bytes
    # The provider's own identity of this delivery (webhook-id, trace id, notification id).
    delivery_id: str
    user_id: str  # the simulated user it is about
    # Measurements (full payloads) or notifications (thin providers) the body carries, as the
    # simulator wrote them; how many canonical events a parser makes of them is its business.
    items: int
    redelivery: bool = False


@dataclass(frozen=True, slots=True)
class _Unsigned:
    body: bytes
    delivery_id: str
    items: int
    # Keyword arguments for the provider's ``signed_headers`` besides the clock.
    sign_args: dict[str, Any] = field(default_factory=dict)


_SIM_NAMESPACE = uuid.UUID("0f3a6c2e-8d1b-5b7e-a4c9-2e6f1d0b7a53")


def _uid(*parts: object) -> str:
    """A UUIDv5 over ``parts``: stable for a record, distinct for everything else."""
    return str(uuid.uuid5(_SIM_NAMESPACE, "|".join(map(str, parts))))


def _number_id(user_id: str, digits: int = 8) -> int:
    """A provider-style numeric user id, stable per simulated user."""
    number = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")
    return number % int(10**digits)


def _local(moment: datetime, offset_min: int) -> datetime:
    return moment.astimezone(timezone(timedelta(minutes=offset_min)))


def _local_iso(moment: datetime, offset_min: int) -> str:
    return _local(moment, offset_min).isoformat()


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass(slots=True)
class _Context:
    """What a renderer needs besides the record: the run's identity and the clock."""

    run_id: str
    now: float

    def delivery_id(self, *parts: object) -> str:
        # Run-scoped: a second run with the same seed sends new deliveries of the same records.
        return _uid("delivery", self.run_id, *parts)

    @property
    def now_iso(self) -> str:
        """The send time as providers write it: whole seconds, UTC, ``Z``."""
        return datetime.fromtimestamp(int(self.now), UTC).isoformat().replace("+00:00", "Z")


# -- native (Standard Webhooks over AUREN's own body) ----------------------------------------


def native_events(record: DayRecord) -> list[dict[str, Any]]:
    """The day as AUREN-native events with canonical metric names and units."""
    night = (iso(record.sleep_start), iso(record.sleep_end))
    day = (iso(record.day_start), iso(record.day_end))
    values: list[tuple[str, float, tuple[str, str]]] = [
        ("sleep_duration", record.sleep_duration_s, night),
        ("sleep_deep", record.deep_s, night),
        ("sleep_light", record.light_s, night),
        ("sleep_rem", record.rem_s, night),
        ("sleep_awake", record.awake_s, night),
        ("sleep_efficiency", record.sleep_efficiency_pct, night),
        ("hrv_rmssd", record.hrv_rmssd_ms, night),
        ("resting_heart_rate", record.resting_hr_bpm, night),
        ("respiratory_rate", record.respiratory_rate, night),
        ("spo2", record.spo2_pct, night),
        ("temperature_deviation", record.temperature_deviation_c, night),
        ("steps", record.steps, day),
        ("distance", record.distance_m, day),
        ("active_energy", record.active_energy_kcal, day),
    ]
    return [
        {"metric": metric, "value": value, "unit": METRICS[metric].unit, "start": start,
         "end": end, "id": f"{record.user_id}:{record.day.isoformat()}:{metric}"}
        for metric, value, (start, end) in values
    ]


def _render_native(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    events = native_events(record)
    body = {"type": EVENT_TYPE, "user_id": record.user_id, "events": events}
    msg_id = "msg_" + ctx.delivery_id("auren", record.user_id, record.day).replace("-", "")
    return [_Unsigned(_json(body), msg_id, len(events), {"msg_id": msg_id})]


# -- Terra (full payloads: sleep and daily) ----------------------------------------------------


def _render_terra(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    off = record.utc_offset_min
    user = {"user_id": _uid("terra-user", record.user_id), "provider": "OURA",
            "reference_id": record.user_id, "scopes": None, "active": True,
            "last_webhook_update": ctx.now_iso}
    sleep = {
        "metadata": {"start_time": _local_iso(record.sleep_start, off),
                     "end_time": _local_iso(record.sleep_end, off),
                     "summary_id": _uid("terra-sleep", record.user_id, record.day),
                     "is_nap": False, "upload_type": 1},
        "heart_rate_data": {"summary": {"avg_hr_bpm": record.resting_hr_bpm + 6,
                                        "resting_hr_bpm": record.resting_hr_bpm,
                                        "avg_hrv_rmssd": record.hrv_rmssd_ms,
                                        "avg_hrv_sdnn": record.hrv_sdnn_ms}},
        "sleep_durations_data": {
            "asleep": {"duration_asleep_state_seconds": record.sleep_duration_s,
                       "duration_deep_sleep_state_seconds": record.deep_s,
                       "duration_light_sleep_state_seconds": record.light_s,
                       "duration_REM_sleep_state_seconds": record.rem_s},
            "awake": {"duration_awake_state_seconds": record.awake_s},
            "sleep_efficiency": record.sleep_efficiency_pct},
        "respiration_data": {
            "breaths_data": {"avg_breaths_per_min": record.respiratory_rate},
            "oxygen_saturation_data": {"avg_saturation_percentage": record.spo2_pct}},
        "temperature_data": {"delta": record.temperature_deviation_c},
    }
    daily = {
        "metadata": {"start_time": _local_iso(record.day_start, off),
                     "end_time": _local_iso(record.day_end, off), "upload_type": 1},
        "distance_data": {"steps": record.steps, "distance_meters": record.distance_m},
        "calories_data": {"net_activity_calories": record.active_energy_kcal},
    }
    out = []
    for kind, item, items in (("sleep", sleep, 13), ("daily", daily, 3)):
        # X-Terra-Trace-Id: unique per delivery, the same on Terra's retries.
        trace = ctx.delivery_id("terra", kind, record.user_id, record.day)
        body = {"type": kind, "user": user, "data": [item], "version": "2022-03-16"}
        out.append(_Unsigned(_json(body), trace, items, {"trace_id": trace}))
    return out


# -- Garmin (push: dailies, sleeps, hrv) -------------------------------------------------------


def _render_garmin(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    user = _uid("garmin-user", record.user_id)
    common = {"userId": user, "userAccessToken": _uid("garmin-token", record.user_id),
              "calendarDate": record.day.isoformat(),
              "startTimeOffsetInSeconds": record.utc_offset_min * 60}

    def summary(kind: str, start: datetime) -> str:
        # Garmin's summary ids look like "x<hex>-<hex start>"; updates reuse the same id.
        return f"x{_uid(kind, record.user_id, record.day)[:8]}-{int(start.timestamp()):x}"

    body = {
        "dailies": [{**common, "summaryId": summary("dailies", record.day_start),
                     "startTimeInSeconds": int(record.day_start.timestamp()),
                     "durationInSeconds": 86_400, "steps": record.steps,
                     "distanceInMeters": record.distance_m,
                     "activeKilocalories": record.active_energy_kcal,
                     "restingHeartRateInBeatsPerMinute": record.resting_hr_bpm}],
        # As Garmin sends it: the monitored period (awake included), not the sleep.
        "sleeps": [{**common, "summaryId": summary("sleeps", record.sleep_start),
                    "startTimeInSeconds": int(record.sleep_start.timestamp()),
                    "durationInSeconds": record.time_in_bed_s,
                    "deepSleepDurationInSeconds": record.deep_s,
                    "lightSleepDurationInSeconds": record.light_s,
                    "remSleepInSeconds": record.rem_s,
                    "awakeDurationInSeconds": record.awake_s,
                    "respirationAvg": record.respiratory_rate,
                    "avgOxygenSaturation": record.spo2_pct}],
        "hrv": [{**common, "summaryId": summary("hrv", record.sleep_start),
                 "startTimeInSeconds": int(record.sleep_start.timestamp()),
                 "durationInSeconds": record.time_in_bed_s,
                 "lastNightAvg": record.hrv_rmssd_ms}],
    }
    delivery = ctx.delivery_id("garmin", record.user_id, record.day)
    # 4 daily values, 6 sleep values (deep + light + REM as total sleep, time in bed), HRV.
    return [_Unsigned(_json(body), delivery, 11)]


# -- Apple Health via Health Auto Export ---------------------------------------------------------


def _hae_date(moment: datetime, offset_min: int) -> str:
    """Health Auto Export's ``yyyy-MM-dd HH:mm:ss Z`` in the user's local time."""
    return _local(moment, offset_min).strftime("%Y-%m-%d %H:%M:%S %z")


def _render_apple(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    off = record.utc_offset_min

    def metric(name: str, units: str, qty: float, at: datetime) -> dict[str, Any]:
        return {"name": name, "units": units, "data": [{"date": _hae_date(at, off), "qty": qty}]}

    hours = 3600.0
    metrics = [
        # Apple's HRV is SDNN, not RMSSD: a different statistic, rendered as Apple sends it.
        metric("heart_rate_variability", "ms", record.hrv_sdnn_ms, record.sleep_end),
        metric("resting_heart_rate", "count/min", record.resting_hr_bpm, record.day_start),
        metric("blood_oxygen_saturation", "%", record.spo2_pct, record.sleep_end),
        metric("respiratory_rate", "count/min", record.respiratory_rate, record.sleep_end),
        metric("step_count", "count", record.steps, record.day_start),
        metric("active_energy", "kcal", record.active_energy_kcal, record.day_start),
        # An absolute wrist temperature: the deviation around a typical 35.7 °C.
        metric("apple_sleeping_wrist_temperature", "degC",
               round(35.7 + record.temperature_deviation_c, 2), record.sleep_end),
        {"name": "sleep_analysis", "units": "hr", "data": [{
            "date": _hae_date(record.day_start, off),
            "totalSleep": round(record.sleep_duration_s / hours, 3),
            "asleep": 0, "core": round(record.light_s / hours, 3),
            "deep": round(record.deep_s / hours, 3), "rem": round(record.rem_s / hours, 3),
            "awake": round(record.awake_s / hours, 3),
            "sleepStart": _hae_date(record.sleep_start, off),
            "sleepEnd": _hae_date(record.sleep_end, off),
            "inBed": round(record.time_in_bed_s / hours, 3),
            "inBedStart": _hae_date(record.sleep_start, off),
            "inBedEnd": _hae_date(record.sleep_end, off)}]},
    ]
    body = {"data": {"metrics": metrics, "workouts": []}}
    # The phone posts for the AUREN user named in x-auren-user-id (an unbound API key).
    # 7 single values and 6 of the night (total sleep, 4 stages, time in bed).
    return [_Unsigned(_json(body), ctx.delivery_id("apple", record.user_id, record.day), 13,
                      {"user_id": record.user_id})]


# -- thin notifications ---------------------------------------------------------------------


def _render_oura(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    out = []
    for data_type in ("sleep", "daily_readiness", "daily_activity", "daily_spo2"):
        # Oura's object id names the record (stable); event_time makes each notification new.
        body = {"event_type": "create", "data_type": data_type,
                "object_id": _uid("oura", data_type, record.user_id, record.day),
                "event_time": ctx.now_iso, "user_id": record.user_id}
        out.append(_Unsigned(_json(body), ctx.delivery_id("oura", data_type, record.user_id,
                                                           record.day), 1))
    return out


def _render_whoop(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    user = _number_id(record.user_id, 6)
    out = []
    for kind in ("sleep.updated", "recovery.updated"):
        trace = ctx.delivery_id("whoop", kind, record.user_id, record.day)
        body = {"user_id": user, "id": _uid("whoop", kind, record.user_id, record.day),
                "type": kind, "trace_id": trace}
        out.append(_Unsigned(_json(body), trace, 1))
    return out


def _render_fitbit(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    owner = f"{_number_id(record.user_id, 9):X}"
    body = [{"collectionType": kind, "date": record.day.isoformat(), "ownerId": owner,
             "ownerType": "user", "subscriptionId": f"{owner}-{kind}"}
            for kind in ("sleep", "activities")]
    return [_Unsigned(_json(body), ctx.delivery_id("fitbit", record.user_id, record.day), 2)]


def _render_polar(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    user = _number_id(record.user_id, 7)
    day = record.day.isoformat()
    out = []
    for event, url in (("SLEEP", f"https://www.polaraccesslink.com/v3/users/sleep/{day}"),
                       ("ACTIVITY_SUMMARY",
                        f"https://www.polaraccesslink.com/v3/users/activities/{day}")):
        body = {"event": event, "user_id": user, "date": day, "timestamp": ctx.now_iso,
                "url": url}
        out.append(_Unsigned(_json(body), ctx.delivery_id("polar", event, record.user_id, day),
                             1, {"event": event}))
    return out


def _render_withings(record: DayRecord, ctx: _Context) -> list[_Unsigned]:
    user = _number_id(record.user_id, 7)
    out = []
    # appli 44 = sleep, 16 = activity; the window is what changed, in Unix seconds.
    for appli, start, end in ((44, record.sleep_start, record.sleep_end),
                              (16, record.day_start, record.day_end)):
        body = urlencode({"userid": user, "appli": appli, "startdate": int(start.timestamp()),
                          "enddate": int(end.timestamp())}).encode()
        out.append(_Unsigned(body, ctx.delivery_id("withings", appli, record.user_id,
                                                   record.day), 1))
    return out


@dataclass(frozen=True, slots=True)
class _Spec:
    module: str  # auren.providers.<module>
    setting: str  # the Settings field holding its secret
    render: Callable[[DayRecord, _Context], list[_Unsigned]]


PROVIDERS: dict[str, _Spec] = {
    "auren": _Spec("native", "standard_webhook_secret", _render_native),
    "terra": _Spec("terra", "terra_signing_secret", _render_terra),
    "garmin": _Spec("garmin", "garmin_client_id", _render_garmin),
    "apple": _Spec("apple", "hae_api_keys", _render_apple),
    "oura": _Spec("oura", "oura_client_secret", _render_oura),
    "whoop": _Spec("whoop", "whoop_client_secret", _render_whoop),
    "fitbit": _Spec("fitbit", "fitbit_client_secret", _render_fitbit),
    "polar": _Spec("polar", "polar_signature_secret", _render_polar),
    "withings": _Spec("withings", "withings_enabled", _render_withings),
}


# -- choosing providers and signing ------------------------------------------------------------

SignFunction = Callable[..., dict[str, str]]


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """A provider ready to render for: its route, first secret and the module's signer."""

    name: str
    route: str
    secret: str
    spec: _Spec
    signer: SignFunction
    takes_secret: bool
    keywords: frozenset[str]

    def sign(self, unsigned: _Unsigned, user_id: str, now: float, *,
             redelivery: bool = False) -> WebhookDelivery:
        # Every attempt is signed anew, as a provider does on a retry: a re-delivery has the
        # same ids and body but a fresh timestamp.
        pool: dict[str, Any] = {"timestamp": int(now), "timestamp_ms": int(now * 1000),
                                **unsigned.sign_args}
        kwargs = {k: v for k, v in pool.items() if k in self.keywords}
        args: tuple[Any, ...] = ((self.secret, unsigned.body) if self.takes_secret
                                 else (unsigned.body,))
        headers = self.signer(*args, **kwargs)
        return WebhookDelivery(self.name, f"/webhooks/{self.route}", headers, unsigned.body,
                               unsigned.delivery_id, user_id, unsigned.items, redelivery)

    def render(self, record: DayRecord, *, run_id: str, now: float) -> list[WebhookDelivery]:
        ctx = _Context(run_id, now)
        return [self.sign(u, record.user_id, now) for u in self.spec.render(record, ctx)]


def _secret(settings: Settings, setting: str) -> str | None:
    """The secret a sender signs with: the first of a rotation list (the current one)."""
    if setting == "withings_enabled":
        # Withings signs nothing; the bridge takes its route when enabled or IP-filtered.
        return "" if settings.withings_enabled or settings.withings_allowed_ips else None
    value = getattr(settings, setting)
    if not isinstance(value, tuple):
        raise TypeError(f"settings field {setting} is not a secret list")
    return value[0].get_secret_value() if value else None


def _signer_shape(fn: SignFunction) -> tuple[bool, frozenset[str], list[str]]:
    """Whether ``fn`` takes a secret, which keywords it accepts and which it requires."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = frozenset(p.name for p in params if p.kind == p.KEYWORD_ONLY)
    required = [p.name for p in params
                if p.kind == p.KEYWORD_ONLY and p.default is inspect.Parameter.empty]
    return len(positional) >= 2, keywords, required


# The keywords a renderer can supply to a provider's signed_headers.
_KNOWN_SIGN_ARGS = frozenset({"timestamp", "timestamp_ms", "msg_id", "trace_id", "event",
                              "user_id"})


def resolve_providers(settings: Settings, names: Iterable[str]
                      ) -> tuple[list[ProviderTarget], dict[str, str]]:
    """The providers that can be simulated, and why each of the others cannot.

    Raises:
        ValueError: a name the simulator does not know.
    """
    targets: list[ProviderTarget] = []
    skipped: dict[str, str] = {}
    for name in names:
        spec = PROVIDERS.get(name)
        if spec is None:
            raise ValueError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
        secret = _secret(settings, spec.setting)
        if secret is None:
            skipped[name] = (f"{spec.setting.upper()} is not set" if name != "withings" else
                             "neither WITHINGS_ENABLED nor WITHINGS_ALLOWED_IPS is set")
            continue
        if name == "apple" and ":" in secret:
            # A bound "user_id:key" entry may only write for that one user (403 otherwise).
            skipped[name] = ("the first HAE_API_KEYS entry is bound to one user (user_id:key); "
                             "simulating many users needs an unbound key first")
            continue
        module = _provider_module(spec.module)
        signer = getattr(module, "signed_headers", None) if module else None
        if signer is None:
            skipped[name] = f"auren.providers.{spec.module}.signed_headers is not available"
            continue
        takes_secret, keywords, required = _signer_shape(signer)
        unknown = sorted(set(required) - _KNOWN_SIGN_ARGS)
        if unknown:
            skipped[name] = (f"auren.providers.{spec.module}.signed_headers needs "
                             f"{', '.join(unknown)}, which the simulator does not supply")
            continue
        route = next((key for key, cls in PROVIDER_CLASSES.items()
                      if cls.__module__ == module.__name__), name) if module else name
        targets.append(ProviderTarget(name, route, secret, spec, signer, takes_secret,
                                      keywords))
    return targets, skipped


def _provider_module(module: str) -> ModuleType | None:
    qualified = f"auren.providers.{module}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:  # the module exists but is broken: say so, loudly
            raise
        return None


def render_deliveries(
    histories: Sequence[UserHistory],
    targets: Sequence[ProviderTarget],
    *,
    run_id: str | None = None,
    redeliver: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[WebhookDelivery]:
    """Every delivery for every user, day and provider, day by day, signed when produced.

    Lazy on purpose: a rate-limited run of many days signs each delivery just before it is
    sent, so its timestamp is always inside the receiver's replay window. ``redeliver`` is the
    probability that a delivery is immediately sent again as a provider retry would (same ids
    and body, new signature); those are marked ``redelivery=True``.
    """
    if not 0.0 <= redeliver <= 1.0:
        raise ValueError("redeliver must be between 0 and 1")
    run = run_id or uuid.uuid4().hex
    rng = random.Random(f"auren-sim-redeliver|{run}")
    for index in range(max((len(h.days) for h in histories), default=0)):
        for history in histories:
            if index >= len(history.days):
                continue
            record = history.days[index]
            for target in targets:
                now = clock()
                for unsigned in target.spec.render(record, _Context(run, now)):
                    yield target.sign(unsigned, record.user_id, now)
                    if redeliver and rng.random() < redeliver:
                        yield target.sign(unsigned, record.user_id, clock(), redelivery=True)


# -- many unique native webhooks, fast (load generation) ---------------------------------------

# (metric, unit, low, high, decimals): plausible values in canonical units.
_LOAD_METRICS: tuple[tuple[str, str, float, float, int], ...] = (
    ("hrv_rmssd", "ms", 25.0, 110.0, 1),
    ("resting_heart_rate", "/min", 45.0, 70.0, 0),
    ("spo2", "%", 94.0, 99.0, 1),
    ("respiratory_rate", "/min", 12.0, 18.0, 1),
    ("steps", "{steps}", 2000.0, 18000.0, 0),
    ("heart_rate", "/min", 50.0, 140.0, 0),
    ("temperature_deviation", "Cel", -0.5, 0.5, 2),
    ("active_energy", "kcal", 60.0, 900.0, 0),
)
_POOL = 64


def render_unique_native(
    n: int,
    secret: str,
    *,
    events_per_webhook: int = 5,
    users: int = 1000,
    now: float | None = None,
    prefix: str | None = None,
    path: str = "/webhooks/auren",
) -> list[WebhookDelivery]:
    """``n`` distinct, correctly signed native webhooks of ``events_per_webhook`` events each.

    Every webhook-id and every event's source record id is unique (``prefix`` defaults to a
    random tag, so two calls never collide), so a receiver stores each event exactly once and
    none of the load is absorbed by deduplication. The HMAC key is set up once and copied per
    message, and values come from small precomputed pools: about 100k webhooks a second.
    """
    if n < 0 or events_per_webhook < 1 or users < 1:
        raise ValueError("n must be >= 0, events_per_webhook and users >= 1")
    base = hmac.new(decode_whsec(secret), digestmod=hashlib.sha256)
    stamp = int(time.time() if now is None else now)
    stamp_text = str(stamp)
    tag = prefix or uuid.uuid4().hex[:12]
    rng = random.Random(f"auren-load|{tag}")
    table = [(metric, unit, [round(rng.uniform(low, high), dp) for _ in range(_POOL)])
             for metric, unit, low, high, dp in _LOAD_METRICS]
    # Measurements of the last day at minute resolution; the ids, not the times, make them new.
    first = (stamp // 60) * 60 - 86_400
    starts = [iso(datetime.fromtimestamp(first + 60 * m, UTC)) for m in range(1440)]
    out: list[WebhookDelivery] = []
    for i in range(n):
        user = f"load-{tag}-u{i % users:05d}"
        events = []
        for k in range(events_per_webhook):
            metric, unit, pool = table[(i + k) % len(table)]
            events.append({"metric": metric, "value": pool[(i + 13 * k) % _POOL], "unit": unit,
                           "start": starts[(7 * i + k) % 1440], "end": None,
                           "id": f"{tag}-{i}-{k}"})
        body = orjson.dumps({"type": EVENT_TYPE, "user_id": user, "events": events})
        msg_id = f"msg_{tag}_{i}"
        mac = base.copy()
        mac.update(f"{msg_id}.{stamp_text}.".encode())
        mac.update(body)
        headers = {"webhook-id": msg_id, "webhook-timestamp": stamp_text,
                   "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
                   "content-type": "application/json"}
        out.append(WebhookDelivery("auren", path, headers, body, msg_id, user,
                                   events_per_webhook))
    return out



# --------------------------------------------------------------------------------------------
# 3. Delivery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivery: WebhookDelivery
    status: int | None  # None: no HTTP answer (timeout, refused, reset)
    error: str | None
    latency_s: float
    accepted: int  # "accepted" of the bridge's answer: items newly made durable
    duplicates: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class ProviderTally:
    sent: int = 0
    ok: int = 0
    accepted: int = 0
    duplicates: int = 0
    latencies_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class DeliverySummary:
    """What a delivery run did. Latencies are from the *intended* send time in the open model,
    so a server that falls behind shows it in the percentiles instead of hiding it."""

    elapsed_s: float = 0.0
    # True when the time budget ran out before every delivery was sent.
    stopped_early: bool = False
    by_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_provider: dict[str, ProviderTally] = field(default_factory=dict)
    results: list[DeliveryResult] | None = None

    def add(self, result: DeliveryResult) -> None:
        tally = self.by_provider.setdefault(result.delivery.provider, ProviderTally())
        tally.sent += 1
        tally.latencies_s.append(result.latency_s)
        if result.status is None:
            self.errors[result.error or "error"] += 1
        else:
            self.by_status[result.status] += 1
        if result.ok:
            tally.ok += 1
            tally.accepted += result.accepted
            tally.duplicates += result.duplicates
        if self.results is not None:
            self.results.append(result)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.by_provider.values())

    @property
    def succeeded(self) -> int:
        return sum(t.ok for t in self.by_provider.values())

    @property
    def accepted(self) -> int:
        return sum(t.accepted for t in self.by_provider.values())

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.by_provider.values())

    @property
    def all_ok(self) -> bool:
        """Everything was sent and every answer was 2xx."""
        return self.sent > 0 and not self.stopped_early and self.succeeded == self.sent

    def latency_ms(self, provider: str | None = None) -> dict[str, float]:
        tallies = ([self.by_provider[provider]] if provider in self.by_provider
                   else list(self.by_provider.values()) if provider is None else [])
        return percentiles([x for t in tallies for x in t.latencies_s])

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "succeeded": self.succeeded, "accepted": self.accepted,
            "duplicates": self.duplicates, "elapsed_s": round(self.elapsed_s, 3),
            "stopped_early": self.stopped_early,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "errors": dict(self.errors), "latency_ms": self.latency_ms(),
            "providers": {name: {"sent": t.sent, "ok": t.ok, "accepted": t.accepted,
                                 "duplicates": t.duplicates,
                                 "latency_ms": percentiles(t.latencies_s)}
                          for name, t in sorted(self.by_provider.items())},
        }


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and max, in milliseconds (empty input gives zeros)."""
    if not samples_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples_s)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p99": round(rank(0.99), 3), "max": round(ordered[-1] * 1000, 3)}


def _answer_counts(response: httpx.Response) -> tuple[int, int]:
    """``accepted`` and ``duplicates`` from a bridge answer; zeros for any other body."""
    if not response.content or "json" not in response.headers.get("content-type", ""):
        return 0, 0
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return 0, 0
    if not isinstance(body, dict):
        return 0, 0
    accepted, duplicates = body.get("accepted", 0), body.get("duplicates", 0)
    return (accepted if isinstance(accepted, int) else 0,
            duplicates if isinstance(duplicates, int) else 0)


async def _post(client: httpx.AsyncClient, delivery: WebhookDelivery,
                intended: float) -> DeliveryResult:
    try:
        response = await client.post(delivery.path, content=delivery.body,
                                     headers=delivery.headers)
    except httpx.HTTPError as exc:
        return DeliveryResult(delivery, None, type(exc).__name__,
                              time.perf_counter() - intended, 0, 0)
    latency = time.perf_counter() - intended
    accepted, duplicates = _answer_counts(response)
    return DeliveryResult(delivery, response.status_code, None, latency, accepted, duplicates)


@asynccontextmanager
async def _client(base_url: str, concurrency: int, timeout_s: float
                  ) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: proxy variables must not reroute a simulation meant for one bridge.
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as client:
        yield client


async def deliver(
    base_url: str,
    deliveries: Iterable[WebhookDelivery],
    *,
    concurrency: int = 16,
    rate: float | None = None,
    timeout_s: float = 10.0,
    max_duration_s: float = 600.0,
    keep_results: bool = True,
) -> DeliverySummary:
    """POST every delivery to ``base_url`` and summarise the answers.

    Without ``rate`` (closed model) ``concurrency`` workers send back to back. With ``rate``
    (open model) delivery *i* is due at ``i / rate`` seconds whether or not earlier ones were
    answered; at most ``concurrency`` are in flight, and a delivery that had to wait for a slot
    counts the wait in its latency (no coordinated omission). Every request has ``timeout_s``;
    no delivery starts after ``max_duration_s``, so the run is bounded in time as well as by the
    (finite) iterable. ``deliveries`` is consumed lazily, just before each send.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be positive")
    if not timeout_s > 0 or not max_duration_s > 0:
        raise ValueError("timeout_s and max_duration_s must be positive")
    summary = DeliverySummary(results=[] if keep_results else None)
    iterator = iter(deliveries)
    started = time.perf_counter()
    deadline = started + max_duration_s

    async with _client(base_url, concurrency, timeout_s) as client:
        if rate is None:
            async def worker() -> None:
                # The iterator is shared: each delivery goes to exactly one worker.
                while (delivery := next(iterator, None)) is not None:
                    summary.add(await _post(client, delivery, time.perf_counter()))
                    if time.perf_counter() >= deadline:
                        # Out of time; anything left over means the run is incomplete.
                        if next(iterator, None) is not None:
                            summary.stopped_early = True
                        return

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            slots = asyncio.Semaphore(concurrency)
            in_flight: set[asyncio.Task[None]] = set()

            async def send(delivery: WebhookDelivery, intended: float) -> None:
                try:
                    summary.add(await _post(client, delivery, intended))
                finally:
                    slots.release()

            for index, delivery in enumerate(iterator):
                intended = started + index / rate
                if intended >= deadline:
                    summary.stopped_early = True
                    break
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                task = asyncio.create_task(send(delivery, intended))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
    summary.elapsed_s = time.perf_counter() - started
    return summary
