"""The people behind the simulated provider accounts: synthetic histories revealed day by day.

Every wearer has one seeded history (``auren.sim.wearers.generate_users``) of
``history_days + future_days`` days. At start the first ``history_days`` are visible (already
"uploaded" by the device); ``advance`` reveals the next ones, which is what makes a provider
notify. The same wearer has an account at every simulated provider, each rendering the same
physiology in its own shapes, under a provider user id derived from the wearer (the same ids
``auren simulate`` puts in its webhooks).

Upload times matter to the providers whose APIs select by them (Garmin's upload windows,
Withings' ``lastupdate``, Polar's "only what was uploaded after registration"): a day visible at
start was uploaded one hour after its end; a day revealed later was uploaded when revealed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from auren.sim.render import number_id, uid
from auren.sim.wearers import DayRecord, UserHistory, generate_users

PROVIDERS = ("oura", "whoop", "fitbit", "polar", "withings", "garmin", "terra")

# One hour after a day's end: when a device synced it, for the days visible at start.
_INITIAL_UPLOAD_DELAY_S = 3600


def provider_user_id(provider: str, wearer_id: str) -> str:
    """The wearer's user id at ``provider``, as text (numeric ids are written in decimal)."""
    if provider == "oura":
        return wearer_id
    if provider == "whoop":
        return str(number_id(wearer_id, 6))
    if provider == "fitbit":
        return f"{number_id(wearer_id, 9):X}"
    if provider in ("polar", "withings"):
        return str(number_id(wearer_id, 7))
    if provider == "garmin":
        return uid("garmin-user", wearer_id)
    if provider == "terra":
        return uid("terra-user", wearer_id)
    raise ValueError(f"unknown provider {provider!r}")


@dataclass(slots=True)
class Wearer:
    index: int
    history: UserHistory
    visible: int  # how many days of the history are visible
    uploaded_at: list[float] = field(default_factory=list)  # per visible day, Unix seconds

    @property
    def id(self) -> str:
        return self.history.user_id

    @property
    def days(self) -> Sequence[DayRecord]:
        """The visible days, oldest first."""
        return self.history.days[: self.visible]

    @property
    def last_day(self) -> date | None:
        return self.history.days[self.visible - 1].day if self.visible else None

    @property
    def today(self) -> date:
        """The wearer's "today": the day after the last visible one (its data is incomplete)."""
        last = self.last_day
        return last + timedelta(days=1) if last else self.history.days[0].day

    @property
    def weight_kg(self) -> float:
        return self.history.profile.weight_kg

    def day(self, when: date) -> DayRecord | None:
        for record in self.days:
            if record.day == when:
                return record
        return None

    def between(self, first: date | None, last: date | None) -> list[DayRecord]:
        """Visible days with ``first <= day <= last`` (either bound may be open)."""
        return [r for r in self.days
                if (first is None or r.day >= first) and (last is None or r.day <= last)]

    def upload_time(self, record: DayRecord) -> float:
        return self.uploaded_at[self.history.days.index(record)]

    def advance(self, days: int, now: float) -> list[DayRecord]:
        """Reveal up to ``days`` more days; returns those revealed (none past the horizon)."""
        revealed = list(self.history.days[self.visible: self.visible + days])
        self.visible += len(revealed)
        self.uploaded_at.extend(now for _ in revealed)
        return revealed

    def provider_user_id(self, provider: str) -> str:
        return provider_user_id(provider, self.id)


def default_end_date(now: datetime | None = None) -> date:
    """Two days ago (UTC): the last visible day at start, so that a first ``advance`` or two
    reveal days that are complete and not in the future."""
    return (now or datetime.now(UTC)).date() - timedelta(days=2)


def build_wearers(users: int, history_days: int, future_days: int, seed: int,
                  end_date: date) -> list[Wearer]:
    """``users`` wearers whose first ``history_days`` days end on ``end_date``.

    The histories are ``generate_users(users, history_days + future_days, seed,
    end_date + future_days)``: a test that calls it with the same arguments knows exactly
    what every provider serves.
    """
    if users < 1 or history_days < 0 or future_days < 0 or history_days + future_days < 1:
        raise ValueError("at least one user and one day are needed")
    horizon = end_date + timedelta(days=future_days)
    histories = generate_users(users, history_days + future_days, seed, end_date=horizon)
    wearers = []
    for index, history in enumerate(histories):
        uploaded = [(r.day_end.timestamp() + _INITIAL_UPLOAD_DELAY_S)
                    for r in history.days[:history_days]]
        wearers.append(Wearer(index, history, history_days, uploaded))
    return wearers


def now_s() -> float:
    return time.time()
