"""Which history to fetch: on connect, on a re-sync, and after a reconnect only what is missing.

The window is ``BACKFILL_DAYS`` back from today (or from ``since``), within the provider's own
reach. Gap-aware: days on which the provider already delivered anything for the person are
left out, except the last two (a night or a day still being uploaded is fetched again; its
events are deduplicated by their ids), so reconnecting after a week away fetches the week.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from auren.adapters.base import EventStore
from auren.connections.apis.base import ProviderApi, day_start
from auren.connections.base import BACKFILL, Connection, JobQueue
from auren.events import FetchJob
from auren.settings import Settings

# Always fetched again: data of the last days may still be arriving at the provider.
RECENT_DAYS = 2


def missing_ranges(first: date, last: date, covered: set[date]) -> list[tuple[date, date]]:
    """Runs of consecutive days in ``first`` .. ``last`` not in ``covered``, the last
    ``RECENT_DAYS`` always among them."""
    recent = last - timedelta(days=RECENT_DAYS - 1)
    ranges: list[tuple[date, date]] = []
    day = first
    while day <= last:
        if day in covered and day < recent:
            day += timedelta(days=1)
            continue
        start = day
        while day + timedelta(days=1) <= last and (day + timedelta(days=1) not in covered
                                                    or day + timedelta(days=1) >= recent):
            day += timedelta(days=1)
        ranges.append((start, day))
        day += timedelta(days=1)
    return ranges


async def plan_history(api: ProviderApi, store: EventStore, connection: Connection,
                       first: date, last: date, origin: str, now: datetime, *,
                       gaps_only: bool) -> list[FetchJob]:
    if last < first:
        return []
    ranges = [(first, last)]
    if gaps_only:
        found = await store.coverage(connection.user_id, day_start(first))
        covered = {c.day for c in found if c.provider == connection.provider}
        ranges = missing_ranges(first, last, covered)
    return [job for start, end in ranges
            for job in api.history_jobs(connection, start, end, origin, now)]


async def queue_history(settings: Settings, api: ProviderApi, store: EventStore, jobs: JobQueue,
                        connection: Connection, now: datetime, *, origin: str = BACKFILL,
                        since: datetime | None = None) -> list[FetchJob]:
    """Queue the history of a (re)connected account: ``BACKFILL_DAYS`` back and only the
    missing days, or, with ``since`` (a re-sync), the whole window from then."""
    last = now.date()
    if since is None:
        if settings.backfill_days == 0:
            return []
        first = last - timedelta(days=settings.backfill_days - 1)
    else:
        first = since.date()
    planned = await plan_history(api, store, connection, first, last, origin, now,
                                 gaps_only=since is None)
    if planned:
        await jobs.add(planned)
    return planned
