"""The insight engine: deterministic, explainable facts from one person's events. Pure: no I/O.

Every number NEUROS may say is produced here as an :class:`Evidence` item, already rounded the
way the reply shows it, so "the numbers in the reply are in the evidence" holds by
construction and can be checked by anyone with the evidence alone.

Days. A measurement belongs to a local calendar day in the person's time zone: a night's
measurements (sleep, HRV, resting HR, respiratory rate, temperature) to the morning the night
ended, activity to the day its interval is centred on. When several providers report the same
metric, each day takes the value of the provider with the most days of that metric (ties by
name): two wearables' step counts are never added together.

Formulas, each with its minimum-data rule:

- HRV: ``x = ln(rMSSD)``; the 7-day baseline is the mean of ``x`` over the valid days of
  ``[d-6, d]`` (at least 3); the normal band is ``mu ± 0.5 sd`` of ``x`` over ``[d-60, d-1]``
  (at least 14 days). Shown in ms as ``exp`` of those values (a geometric mean).
- Resting HR: the latest night against the mean of the 30 days before it (at least 7).
- Sleep: need = median nightly sleep over 90 days clipped to 7-9 h (8 h with fewer than 14
  nights); debt = 14 x the weighted mean nightly deficit of the last 14 nights (last night
  weighs 15 %, earlier nights share 85 % decaying by 0.9 a night; at least 5 nights).
- Training load: daily active energy (steps when there is none) as the load proxy; the mean of
  the last 7 complete days over the mean of the last 28 (the acute:chronic ratio; at least 4
  and 21 days). Described as load relative to usual, never as an injury risk.
- Readiness: weighted, clipped z-scores of HRV, resting HR, respiratory rate and temperature
  plus sleep performance and sleep debt (weights of §2.3, renormalised over what is present).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo
from statistics import fmean, median
from typing import Any, Literal

from auren.events import CanonicalEvent

Series = Mapping[date, float]


@dataclass(frozen=True, slots=True)
class Display:
    label: str
    unit: str
    scale: float  # canonical unit -> display unit
    decimals: int
    night: bool  # True: the day is the morning the night ended
    aggregate: Literal["sum", "mean"]
    geometric: bool = False  # averaged as exp(mean(ln x))


DISPLAY: dict[str, Display] = {
    "sleep_duration": Display("sleep", "h", 1 / 3600, 1, True, "sum"),
    "hrv_rmssd": Display("HRV", "ms", 1.0, 0, True, "mean", geometric=True),
    "resting_heart_rate": Display("resting heart rate", "bpm", 1.0, 1, True, "mean"),
    "respiratory_rate": Display("respiratory rate", "breaths/min", 1.0, 1, True, "mean"),
    "temperature_deviation": Display("temperature deviation", "°C", 1.0, 2, True, "mean"),
    "steps": Display("steps", "steps", 1.0, 0, False, "sum"),
    "active_energy": Display("active energy", "kcal", 1.0, 0, False, "sum"),
}

HRV_MIN_7D = 3
HRV_MIN_60D = 14
RHR_MIN_30D = 7
SLEEP_MIN_7D = 3
SLEEP_DEBT_MIN_14D = 5
SLEEP_NEED_MIN_NIGHTS = 14
SLEEP_NEED_DEFAULT_H = 8.0
SLEEP_GOOD_NIGHT_H = 7.0
LOAD_MIN_7D = 4
LOAD_MIN_28D = 21
# How far back "the latest night" may be before it is no longer news.
LATEST_WITHIN_DAYS = 2


def stdev(values: list[float]) -> float:
    """Sample standard deviation in floats (``statistics.stdev`` is exact, via fractions, and
    costs more than the rest of a reply)."""
    mean = fmean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def rounded(value: float, decimals: int) -> float:
    """The value as the reply shows it."""
    return float(round(value, decimals))


def fmt(value: float, decimals: int) -> str:
    """Text of a rounded value: ``7.0`` is "7", ``7.25`` with 1 decimal is "7.2" (as ``round``)."""
    text = f"{rounded(value, decimals):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# Window and Evidence are built by the dozen for every reply; a frozen dataclass's __init__
# (object.__setattr__ per field) cost four times a plain one, a twentieth of a chat. Nothing
# mutates or hashes them: they are values by convention.
@dataclass(slots=True)
class Window:
    """Inclusive range of local days."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> Iterable[date]:
        return (self.start + timedelta(days=i) for i in range(self.days))

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "days": self.days}

    @classmethod
    def ending(cls, end: date, days: int) -> Window:
        return cls(end - timedelta(days=days - 1), end)


@dataclass(slots=True)
class Evidence:
    """One fact a reply may use: what, over which days, how much, against what."""

    metric: str
    statistic: str
    window: Window
    value: float | None
    unit: str
    n_days: int
    decimals: int = 0
    baseline: float | None = None
    low: float | None = None
    high: float | None = None
    delta: float | None = None
    min_days: int | None = None
    threshold: float | None = None
    status: str | None = None

    def text(self, attribute: str = "value") -> str:
        value = getattr(self, attribute)
        if value is None:
            raise ValueError(f"{self.metric} has no {attribute}")
        decimals = self.decimals if attribute in ("value", "baseline", "low", "high", "delta",
                                                  "threshold") else 0
        return fmt(abs(value) if attribute == "delta" else value, decimals)

    def numbers(self) -> list[float]:
        """Every number this item lets a reply say."""
        out = [float(self.n_days), float(self.window.days)]
        for name in ("value", "baseline", "low", "high", "delta", "min_days", "threshold"):
            value = getattr(self, name)
            if value is not None:
                out.append(abs(float(value)))
        return out

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"metric": self.metric, "statistic": self.statistic,
                                "window": self.window.as_dict(), "value": self._num(self.value),
                                "unit": self.unit, "n_days": self.n_days}
        for name in ("baseline", "low", "high", "delta", "threshold"):
            value = getattr(self, name)
            if value is not None:
                body[name] = self._num(value)
        if self.min_days is not None:
            body["min_days"] = self.min_days
        if self.status is not None:
            body["status"] = self.status
        return body

    def _num(self, value: float | None) -> float | int | None:
        if value is None:
            return None
        return int(value) if self.decimals == 0 else rounded(value, self.decimals)


# --------------------------------------------------------------------------------------------
# Events -> one value per local day
# --------------------------------------------------------------------------------------------


def day_of(event: CanonicalEvent, tz: tzinfo) -> date:
    spec = DISPLAY.get(event.metric)
    if spec is not None and spec.night:
        moment = event.end or event.start
    elif event.end is not None:
        moment = event.start + (event.end - event.start) / 2
    else:
        moment = event.start
    return moment.astimezone(tz).date()


def daily_series(events: Iterable[CanonicalEvent], metric: str, tz: tzinfo) -> dict[date, float]:
    """One value per local day of ``metric``, in display units."""
    spec = DISPLAY[metric]
    per_provider: dict[str, dict[date, list[float]]] = {}
    for event in events:
        if event.metric != metric or (metric == "hrv_rmssd" and event.value <= 0):
            continue
        days = per_provider.setdefault(event.provider, {})
        days.setdefault(day_of(event, tz), []).append(event.value)
    series: dict[date, float] = {}
    for provider in sorted(per_provider, key=lambda p: (-len(per_provider[p]), p)):
        for day, values in per_provider[provider].items():
            if day not in series:
                total = sum(values) if spec.aggregate == "sum" else fmean(values)
                series[day] = total * spec.scale
    return series


def _values(series: Series, window: Window) -> list[tuple[date, float]]:
    """The series' days inside ``window``, in date order (sums below depend on the order).

    The cheaper of two walks: day by day through a window that is short next to the series
    (``date.fromordinal`` costs a third of ``start + timedelta(days=i)``), or once through a
    series that is short next to the window, sorted afterwards (series are usually built in
    date order already, so the sort is a linear check). Both give the same list; this runs
    several times per reply and was a quarter of the engine's time.
    """
    start, end = window.start, window.end
    if window.days * 3 > len(series):
        found = [(d, v) for d, v in series.items() if start <= d <= end]
        found.sort()  # by date alone: dates are unique keys, values are never compared
        return found
    get = series.get
    out: list[tuple[date, float]] = []
    for day in map(date.fromordinal, range(start.toordinal(), end.toordinal() + 1)):
        value = get(day)
        if value is not None:
            out.append((day, value))
    return out


def _latest(series: Series, today: date, within: int = LATEST_WITHIN_DAYS) -> date | None:
    for back in range(within + 1):
        day = today - timedelta(days=back)
        if day in series:
            return day
    return None


def _single(metric: str, day: date, value: float, statistic: str = "nightly value",
            **extra: Any) -> Evidence:
    spec = DISPLAY[metric]
    return Evidence(metric, statistic, Window(day, day), rounded(value, spec.decimals),
                    spec.unit, 1, spec.decimals, **extra)


# --------------------------------------------------------------------------------------------
# HRV
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HrvInsight:
    latest: Evidence | None
    mean7: Evidence
    band: Evidence
    status: Literal["below", "normal", "above"] | None
    acute_drop: bool
    falling: bool
    z: float | None

    @property
    def evidence(self) -> list[Evidence]:
        return [e for e in (self.latest, self.mean7, self.band) if e is not None]


def hrv(series: Series, today: date) -> HrvInsight:
    w7 = Window.ending(today, 7)
    w60 = Window.ending(today - timedelta(days=1), 60)
    recent = _values(series, w7)
    history = [math.log(v) for _, v in _values(series, w60)]
    latest_day = recent[-1][0] if recent else None

    mu = sigma = None
    if len(history) >= HRV_MIN_60D:
        mu, sigma = fmean(history), stdev(history)
        band = Evidence("hrv_rmssd", "60-day normal band: exp(mean ± 0.5 sd of ln rMSSD)", w60,
                        rounded(math.exp(mu), 0), "ms", len(history),
                        low=rounded(math.exp(mu - 0.5 * sigma), 0),
                        high=rounded(math.exp(mu + 0.5 * sigma), 0))
    else:
        band = Evidence("hrv_rmssd", "60-day normal band", w60, None, "ms", len(history),
                        min_days=HRV_MIN_60D)

    latest = None
    acute_drop = falling = False
    if latest_day is not None:
        x_latest = math.log(series[latest_day])
        latest = _single("hrv_rmssd", latest_day, series[latest_day])
        if mu is not None and sigma is not None:
            acute_drop = x_latest < mu - sigma
        before = [latest_day - timedelta(days=i) for i in (1, 2)]
        if all(d in series for d in before):
            falling = series[latest_day] < series[before[0]] < series[before[1]]

    if len(recent) < HRV_MIN_7D:
        mean7 = Evidence("hrv_rmssd", "7-day mean of ln(rMSSD), shown in ms", w7, None, "ms",
                         len(recent), min_days=HRV_MIN_7D)
        return HrvInsight(latest, mean7, band, None, acute_drop, falling, None)

    b = fmean(math.log(v) for _, v in recent)
    status: Literal["below", "normal", "above"] | None = None
    z = None
    if mu is not None and sigma is not None:
        status = ("below" if b < mu - 0.5 * sigma else
                  "above" if b > mu + 0.5 * sigma else "normal")
        z = (b - mu) / sigma if sigma > 0 else 0.0
    mean7 = Evidence("hrv_rmssd", "7-day mean of ln(rMSSD), shown in ms", w7,
                     rounded(math.exp(b), 0), "ms", len(recent), baseline=band.value,
                     low=band.low, high=band.high, status=status)
    return HrvInsight(latest, mean7, band, status, acute_drop, falling, z)


# --------------------------------------------------------------------------------------------
# Resting heart rate (and respiratory rate, same rule)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviationInsight:
    """The latest night against the mean of the 30 nights before it."""

    latest: Evidence | None
    baseline: Evidence | None
    status: Literal["elevated", "lower", "normal"] | None
    z: float | None

    @property
    def evidence(self) -> list[Evidence]:
        return [e for e in (self.latest, self.baseline) if e is not None]


def deviation(metric: str, series: Series, today: date, *, elevated_by: float,
              lower_by: float) -> DeviationInsight:
    day = _latest(series, today)
    if day is None:
        return DeviationInsight(None, None, None, None)
    spec = DISPLAY[metric]
    window = Window.ending(day - timedelta(days=1), 30)
    history = [v for _, v in _values(series, window)]
    value = series[day]
    if len(history) < RHR_MIN_30D:
        base = Evidence(metric, "30-day mean", window, None, spec.unit, len(history),
                        spec.decimals, min_days=RHR_MIN_30D)
        return DeviationInsight(_single(metric, day, value), base, None, None)
    mean = fmean(history)
    sd = stdev(history)
    z = (value - mean) / sd if sd > 0 else 0.0
    delta = value - mean
    status: Literal["elevated", "lower", "normal"] = (
        "elevated" if delta >= elevated_by or z >= 1.5 else
        "lower" if delta <= -lower_by else "normal")
    base = Evidence(metric, "30-day mean", window, rounded(mean, spec.decimals), spec.unit,
                    len(history), spec.decimals)
    latest = _single(metric, day, value, baseline=base.value,
                     delta=rounded(rounded(value, spec.decimals) - base.value, spec.decimals)
                     if base.value is not None else None, status=status)
    return DeviationInsight(latest, base, status, z)


def resting_hr(series: Series, today: date) -> DeviationInsight:
    # Oura's contributor drops when RHR is 3-5 bpm above usual; §2.2 flags +4 bpm or z >= 1.5.
    return deviation("resting_heart_rate", series, today, elevated_by=4.0, lower_by=3.0)


# --------------------------------------------------------------------------------------------
# Sleep
# --------------------------------------------------------------------------------------------


def debt_weights() -> list[float]:
    """Weight of night ``d - i`` for i = 0..13: last night 15 %, the rest 85 % decaying by 0.9."""
    tail = [0.9**i for i in range(1, 14)]
    total = sum(tail)
    return [0.15] + [0.85 * t / total for t in tail]


def debt_band(hours: float) -> str:
    return "none" if hours <= 0 else "low" if hours < 2 else "moderate" if hours <= 5 else "high"


@dataclass(frozen=True, slots=True)
class SleepInsight:
    last: Evidence | None
    mean7: Evidence
    need: Evidence
    debt: Evidence
    streak: Evidence | None

    @property
    def evidence(self) -> list[Evidence]:
        items = [self.last, self.mean7, self.need, self.debt, self.streak]
        return [e for e in items if e is not None]


def sleep(series: Series, today: date) -> SleepInsight:
    w7 = Window.ending(today, 7)
    w14 = Window.ending(today, 14)
    w90 = Window.ending(today, 90)
    recent = _values(series, w7)
    nights90 = [v for _, v in _values(series, w90)]

    if len(nights90) >= SLEEP_NEED_MIN_NIGHTS:
        need_h = min(9.0, max(7.0, median(nights90)))
        need = Evidence("sleep_need", "median nightly sleep over 90 days, clipped to 7-9 h",
                        w90, rounded(need_h, 1), "h", len(nights90), 1)
    else:
        need_h = SLEEP_NEED_DEFAULT_H
        need = Evidence("sleep_need", "default sleep need (too few nights to personalise)",
                        w90, need_h, "h", len(nights90), 1, min_days=SLEEP_NEED_MIN_NIGHTS)

    weights = debt_weights()
    # Last night first, as the weights are listed.
    used = [(weights[(today - day).days], need_h - value)
            for day, value in reversed(_values(series, w14))]
    if len(used) >= SLEEP_DEBT_MIN_14D:
        # Missing nights are left out and the weights of the rest renormalised.
        hours = max(0.0, 14 * sum(w * d for w, d in used) / sum(w for w, _ in used))
        debt = Evidence("sleep_debt", "14 x weighted mean nightly deficit vs need", w14,
                        rounded(hours, 1), "h", len(used), 1, baseline=need.value,
                        status=debt_band(rounded(hours, 1)))
    else:
        debt = Evidence("sleep_debt", "14 x weighted mean nightly deficit vs need", w14, None,
                        "h", len(used), 1, min_days=SLEEP_DEBT_MIN_14D)

    if len(recent) >= SLEEP_MIN_7D:
        mean7 = Evidence("sleep_duration", "7-day mean nightly sleep", w7,
                         rounded(fmean(v for _, v in recent), 1), "h", len(recent), 1)
    else:
        mean7 = Evidence("sleep_duration", "7-day mean nightly sleep", w7, None, "h",
                         len(recent), 1, min_days=SLEEP_MIN_7D)

    day = _latest(series, today)
    last = _single("sleep_duration", day, series[day]) if day is not None else None
    streak = None
    if day is not None:
        run = 0
        while (day - timedelta(days=run)) in series and \
                series[day - timedelta(days=run)] >= SLEEP_GOOD_NIGHT_H:
            run += 1
        if run >= 2:
            streak = Evidence("sleep_duration", "nights in a row with at least the threshold",
                              Window.ending(day, run), float(run), "nights", run, 0,
                              threshold=SLEEP_GOOD_NIGHT_H)
    return SleepInsight(last, mean7, need, debt, streak)


# --------------------------------------------------------------------------------------------
# Training load
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadInsight:
    acute: Evidence
    chronic: Evidence
    ratio: Evidence | None
    description: str | None

    @property
    def evidence(self) -> list[Evidence]:
        return [e for e in (self.acute, self.chronic, self.ratio) if e is not None]


def describe_ratio(ratio: float) -> str:
    # Gabbett's bands are used only to pick words; Impellizzeri et al. (2020) show they do not
    # predict an individual's injuries, so NEUROS never calls this a risk.
    if ratio < 0.8:
        return "lighter than usual"
    if ratio <= 1.3:
        return "in line with usual"
    if ratio < 1.5:
        return "higher than usual"
    return "much higher than usual"


def training_load(energy: Series, steps: Series, today: date) -> LoadInsight:
    # Today's activity is still being recorded: the windows end with yesterday.
    end = today - timedelta(days=1)
    w7, w28 = Window.ending(end, 7), Window.ending(end, 28)
    metric, series = "active_energy", energy
    if len(_values(steps, w28)) > len(_values(energy, w28)):
        metric, series = "steps", steps
    spec = DISPLAY[metric]
    acute_v = [v for _, v in _values(series, w7)]
    chronic_v = [v for _, v in _values(series, w28)]
    ok = len(acute_v) >= LOAD_MIN_7D and len(chronic_v) >= LOAD_MIN_28D
    chronic_mean = fmean(chronic_v) if chronic_v else None
    chronic = Evidence(metric, "28-day mean daily", w28,
                       rounded(chronic_mean, 0) if chronic_mean is not None and ok else None,
                       spec.unit, len(chronic_v), min_days=None if ok else LOAD_MIN_28D)
    if not ok or chronic_mean is None:
        acute = Evidence(metric, "7-day mean daily", w7,
                         rounded(fmean(acute_v), 0) if acute_v else None, spec.unit,
                         len(acute_v), min_days=None if acute_v else LOAD_MIN_7D)
        return LoadInsight(acute, chronic, None, None)
    acute_mean = fmean(acute_v)
    acute = Evidence(metric, "7-day mean daily", w7, rounded(acute_mean, 0), spec.unit,
                     len(acute_v), baseline=chronic.value)
    if chronic_mean <= 0:
        return LoadInsight(acute, chronic, None, None)
    ratio_value = acute_mean / chronic_mean
    ratio = Evidence("acute_chronic_ratio", f"7-day mean / 28-day mean daily {metric}", w28,
                     rounded(ratio_value, 2), "ratio", len(chronic_v), 2,
                     status=describe_ratio(rounded(ratio_value, 2)))
    return LoadInsight(acute, chronic, ratio, ratio.status)


# --------------------------------------------------------------------------------------------
# Readiness
# --------------------------------------------------------------------------------------------

READINESS_WEIGHTS = {"hrv": 0.35, "resting_hr": 0.20, "respiratory_rate": 0.10,
                     "temperature": 0.10, "sleep": 0.15, "sleep_debt": 0.10}


@dataclass(frozen=True, slots=True)
class ReadinessInsight:
    score: Evidence
    band: Literal["green", "yellow", "red"] | None
    inputs: tuple[str, ...]
    components: dict[str, float] = field(default_factory=dict)
    extra: tuple[Evidence, ...] = ()

    @property
    def evidence(self) -> list[Evidence]:
        return [self.score, *self.extra]


def _clip(z: float) -> float:
    return max(-2.0, min(2.0, z)) / 2


def readiness(hrv_i: HrvInsight, rhr_i: DeviationInsight, sleep_i: SleepInsight,
              resp: Series, temp: Series, today: date) -> ReadinessInsight:
    parts: dict[str, float] = {}
    extra: list[Evidence] = []
    if hrv_i.z is not None:
        parts["hrv"] = _clip(hrv_i.z)
    if rhr_i.z is not None:
        parts["resting_hr"] = _clip(-rhr_i.z)
    resp_i = deviation("respiratory_rate", resp, today, elevated_by=math.inf, lower_by=math.inf)
    if resp_i.z is not None and resp_i.latest is not None:
        parts["respiratory_rate"] = _clip(-resp_i.z)
        extra += resp_i.evidence
    temp_day = _latest(temp, today)
    if temp_day is not None:
        dt = temp[temp_day]
        parts["temperature"] = _clip(-max(0.0, abs(dt) - 0.2) / 0.3)
        extra.append(_single("temperature_deviation", temp_day, dt))
    last = sleep_i.last
    need = sleep_i.need.value
    if last is not None and last.value is not None and need and \
            last.window.end >= today - timedelta(days=1):
        parts["sleep"] = 2 * min(1.0, last.value / need) - 1
    if sleep_i.debt.value is not None:
        parts["sleep_debt"] = 2 * max(0.0, 1 - sleep_i.debt.value / 5) - 1

    window = Window(today, today)
    inputs = tuple(name for name in READINESS_WEIGHTS if name in parts)
    if len(parts) < 2 or not ({"hrv", "resting_hr"} & parts.keys()):
        score = Evidence("readiness", "weighted score of HRV, resting HR and sleep", window,
                         None, "score", len(parts), min_days=None)
        return ReadinessInsight(score, None, inputs, parts, tuple(extra))
    weight = sum(READINESS_WEIGHTS[k] for k in parts)
    raw = sum(READINESS_WEIGHTS[k] * v for k, v in parts.items()) / weight
    value = max(0, min(100, round(50 + 50 * raw)))
    band: Literal["green", "yellow", "red"] = ("green" if value >= 67 else
                                               "yellow" if value >= 34 else "red")
    score = Evidence("readiness", "weighted z-scores of " + ", ".join(inputs), window,
                     float(value), "score", len(parts), status=band)
    return ReadinessInsight(score, band, inputs, parts, tuple(extra))


# --------------------------------------------------------------------------------------------
# Periods, trends and comparisons
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodInsight:
    metric: str
    current: Evidence
    previous: Evidence | None
    direction: Literal["up", "down", "same"] | None
    partial_today: bool = False

    @property
    def evidence(self) -> list[Evidence]:
        return [e for e in (self.current, self.previous) if e is not None]


def clip_window(metric: str, window: Window, today: date, *,
                keep_length: bool = False) -> Window | None:
    """The part of ``window`` that has happened; for activity, only complete days of a span.

    ``keep_length``: a "last N days" activity window moves back a day instead of shrinking,
    so that it still has N complete days.
    """
    end = min(window.end, today)
    if not DISPLAY[metric].night and window.days > 1 and end == today and window.start < today:
        if keep_length:
            return Window.ending(today - timedelta(days=1), window.days)
        end = today - timedelta(days=1)
    return Window(window.start, end) if window.start <= end else None


def summarise(metric: str, series: Series, window: Window) -> Evidence:
    spec = DISPLAY[metric]
    values = [v for _, v in _values(series, window)]
    statistic = "daily value" if window.days == 1 else (
        "geometric mean (mean of ln)" if spec.geometric else "daily mean")
    if not values:
        return Evidence(metric, statistic, window, None, spec.unit, 0, spec.decimals)
    mean = math.exp(fmean(math.log(v) for v in values)) if spec.geometric else fmean(values)
    return Evidence(metric, statistic, window, rounded(mean, spec.decimals), spec.unit,
                    len(values), spec.decimals)


def period(metric: str, series: Series, window: Window, today: date,
           previous: Window | None = None, *, keep_length: bool = False) -> PeriodInsight | None:
    """``metric`` over ``window``, against ``previous`` (default: the same length just before)."""
    current_w = clip_window(metric, window, today, keep_length=keep_length)
    if current_w is None:
        return None
    current = summarise(metric, series, current_w)
    if previous is None:
        previous = Window.ending(current_w.start - timedelta(days=1), current_w.days)
    previous_w = clip_window(metric, previous, today, keep_length=keep_length)
    before = summarise(metric, series, previous_w) if previous_w is not None else None
    direction: Literal["up", "down", "same"] | None = None
    if current.value is not None and before is not None and before.value is not None:
        direction = ("same" if current.value == before.value else
                     "up" if current.value > before.value else "down")
    partial = not DISPLAY[metric].night and current_w.end == today
    return PeriodInsight(metric, current, before, direction, partial)
