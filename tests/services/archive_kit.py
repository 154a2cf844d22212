"""Shared by the archive's black-box tests (embedded and full stack): the measurements sent,
reading one sample of a Prometheus text exposition, and erasing a person's archive."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from auren.adapters.postgres import PostgresStore
from auren.adapters.sqlite import SQLiteStore

TODAY = datetime.now(UTC).date()


def weight(days_ago: int, value: float, record: str) -> dict[str, Any]:
    """A native weight measurement at 06:00 UTC ``days_ago`` days back."""
    return {"metric": "weight", "value": value, "unit": "kg",
            "start": f"{TODAY - timedelta(days=days_ago)}T06:00:00Z", "id": record}


def metric(text: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels) in ``text``; None when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


def erase_archive(store: SQLiteStore | PostgresStore, user_id: str) -> int:
    """Open ``store``, erase ``user_id``'s archived payloads (as an erasure does), close it."""
    async def run() -> int:
        await store.open()
        try:
            return await store.erase_archive(user_id)
        finally:
            await store.close()

    return asyncio.run(run())
