"""Expected NEUROS numbers, computed independently from the simulator's raw daily records.

Written from the published formulas (listed in ``auren.neuros.engine``'s docstring) without
importing the engine: if the engine and this file disagree, one of them misreads the formulas.
Values are rounded as replies show them.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from auren.simulator import DayRecord, UserHistory


def days_back(today: date, first: int, last: int) -> list[date]:
    """today-first .. today-last, oldest first (first >= last)."""
    return [today - timedelta(days=i) for i in range(first, last - 1, -1)]


def by_day(history: UserHistory) -> dict[date, DayRecord]:
    return {r.day: r for r in history.days}


def hrv(recs: dict[date, DayRecord], today: date) -> dict[str, Any]:
    recent = [recs[d].hrv_rmssd_ms for d in days_back(today, 6, 0) if d in recs]
    hist = [math.log(recs[d].hrv_rmssd_ms) for d in days_back(today, 60, 1) if d in recs]
    out: dict[str, Any] = {"n7": len(recent), "n60": len(hist)}
    if recent:
        out["latest"] = round(recent[-1])
    if len(recent) >= 3:
        out["b"] = sum(math.log(v) for v in recent) / len(recent)
        out["mean7"] = round(math.exp(out["b"]))
    if len(hist) >= 14:
        mu, sd = statistics.mean(hist), statistics.stdev(hist)
        out.update(mu=mu, sd=sd, baseline=round(math.exp(mu)), low=round(math.exp(mu - sd / 2)),
                   high=round(math.exp(mu + sd / 2)))
    return out


def _deviation(values: dict[date, float], today: date) -> dict[str, Any]:
    latest_day = next((today - timedelta(days=i) for i in range(3)
                       if today - timedelta(days=i) in values), None)
    if latest_day is None:
        return {}
    hist = [values[d] for d in days_back(latest_day, 30, 1) if d in values]
    out: dict[str, Any] = {"latest": round(values[latest_day], 1), "raw": values[latest_day],
                           "n30": len(hist)}
    if len(hist) >= 7:
        mean, sd = statistics.mean(hist), statistics.stdev(hist)
        out.update(mean=round(mean, 1), delta=round(round(values[latest_day], 1)
                                                    - round(mean, 1), 1),
                   z=(values[latest_day] - mean) / sd)
    return out


def resting_hr(recs: dict[date, DayRecord], today: date) -> dict[str, Any]:
    return _deviation({d: float(r.resting_hr_bpm) for d, r in recs.items()}, today)


def sleep(recs: dict[date, DayRecord], today: date) -> dict[str, Any]:
    hours = {d: r.sleep_duration_s / 3600 for d, r in recs.items()}
    recent = [hours[d] for d in days_back(today, 6, 0) if d in hours]
    nights90 = [hours[d] for d in days_back(today, 89, 0) if d in hours]
    need = min(9.0, max(7.0, statistics.median(nights90))) if len(nights90) >= 14 else 8.0
    out: dict[str, Any] = {"need": round(need, 1), "need_raw": need, "n7": len(recent)}
    if today in hours:
        out["last"] = round(hours[today], 1)
        out["last_raw"] = hours[today]
    if len(recent) >= 3:
        out["mean7"] = round(sum(recent) / len(recent), 1)
    # Weights: last night 0.15, nights 1..13 share 0.85 in proportion to 0.9**i.
    tail = sum(0.9**i for i in range(1, 14))
    weights = [0.15] + [0.85 * 0.9**i / tail for i in range(1, 14)]
    used = [(weights[i], need - hours[today - timedelta(days=i)]) for i in range(14)
            if today - timedelta(days=i) in hours]
    if len(used) >= 5:
        debt = max(0.0, 14 * sum(w * x for w, x in used) / sum(w for w, _ in used))
        out["debt"] = round(debt, 1)
    return out


def load(recs: dict[date, DayRecord], today: date) -> dict[str, Any]:
    acute = [recs[d].active_energy_kcal for d in days_back(today, 7, 1) if d in recs]
    chronic = [recs[d].active_energy_kcal for d in days_back(today, 28, 1) if d in recs]
    a, c = sum(acute) / len(acute), sum(chronic) / len(chronic)
    return {"acute": round(a), "chronic": round(c), "ratio": round(a / c, 2)}


def readiness(recs: dict[date, DayRecord], today: date) -> int:
    weights = {"hrv": 0.35, "rhr": 0.20, "rr": 0.10, "temp": 0.10, "sleep": 0.15, "debt": 0.10}

    def clip(z: float) -> float:
        return max(-2.0, min(2.0, z)) / 2

    h, r, s = hrv(recs, today), resting_hr(recs, today), sleep(recs, today)
    rr = _deviation({d: x.respiratory_rate for d, x in recs.items()}, today)
    parts = {"hrv": clip((h["b"] - h["mu"]) / h["sd"]), "rhr": clip(-r["z"]),
             "rr": clip(-rr["z"]),
             "temp": clip(-max(0.0, abs(recs[today].temperature_deviation_c) - 0.2) / 0.3),
             "sleep": 2 * min(1.0, s["last"] / s["need"]) - 1,
             "debt": 2 * max(0.0, 1 - s["debt"] / 5) - 1}
    raw = sum(weights[k] * v for k, v in parts.items()) / sum(weights.values())
    return int(max(0, min(100, round(50 + 50 * raw))))


def mean_over(values: Iterable[float], decimals: int) -> float:
    items = list(values)
    return round(sum(items) / len(items), decimals)


# --- the "every number is evidence" property, checked with its own parser ------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUM = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?")


def evidence_numbers(evidence: list[dict[str, Any]]) -> set[float]:
    found: set[float] = set()
    for item in evidence:
        found.update({float(item["n_days"]), float(item["window"]["days"])})
        for key in ("value", "baseline", "low", "high", "delta", "threshold", "min_days"):
            if item.get(key) is not None:
                found.add(abs(float(item[key])))
    return found


def ungrounded(reply: str, evidence: list[dict[str, Any]]) -> list[str]:
    allowed = evidence_numbers(evidence)
    dates = {item["window"][k] for item in evidence for k in ("start", "end")}
    bad = [d for d in _DATE.findall(reply) if d not in dates]
    for raw in _NUM.findall(_DATE.sub(" ", reply)):
        if float(raw.replace(",", "")) not in allowed:
            bad.append(raw)
    return bad
