"""Apple Health (Health Auto Export): sample payloads and the API keys the tests configure."""

from __future__ import annotations

from typing import Any

KEYS = "u_42:sk-bound-key,sk-open-key"
T = "2026-01-01 07:00:00 +0100"


def metric(name: str, units: str | None, *points: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "data": list(points)}
    if units is not None:
        item["units"] = units
    return item


PAYLOAD = {"data": {"metrics": [
    metric("heart_rate", "count/min", {"date": T, "Min": 52, "Avg": 58.4, "Max": 71}),
    metric("heart_rate_variability", "ms", {"date": "2026-01-01 06:58:12 +0100", "qty": 44.7}),
    metric("step_count", "count", {"date": T, "qty": 312}),
], "workouts": []}}
