"""Shared by the archive's black-box tests (embedded and full stack): the measurements sent,
and reading one sample of a Prometheus text exposition."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

TODAY = datetime.now(UTC).date()


def weight(days_ago: int, value: float, record: str) -> dict[str, Any]:
    """A native weight measurement at 06:00 UTC ``days_ago`` days back."""
    return {"metric": "weight", "value": value, "unit": "kg",
            "start": f"{TODAY - timedelta(days=days_ago)}T06:00:00Z", "id": record}


def metric(text: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels) in ``text``; None when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else None
