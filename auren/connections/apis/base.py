"""What the fetcher and the connect flow need to know of one provider's API.

A :class:`ProviderApi` says how a person's account is connected (its OAuth flow, how the
provider's user id is learnt, what must happen after: Polar's registration, Fitbit's and
Withings' notification subscriptions), how a fetch job becomes records (one job: a
notification's records, or one window of history), and how access is revoked. Records become
events through the provider module's pure normalizers in ``auren.providers``; a job's calls go
through :class:`~auren.connections.http.Session` (limits, ``Retry-After``, refresh, retries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from auren.connections.base import BACKFILL, NOTIFICATION, SYNC, Connection
from auren.connections.http import Dialect, Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.events import BACKFILL as BACKFILL_PROVENANCE
from auren.events import FETCH, FetchJob, fetch_job_id
from auren.providers._common import EventBatch, Subject, fetched_batch
from auren.settings import Settings, secret_values

# Longest history window of one job: providers' per-request limits are 28 to 100 days.
DEFAULT_CHUNK_DAYS = 28


@dataclass(slots=True)
class JobRun:
    """One job being run: who, through which session, and what it produced."""

    job: FetchJob
    connection: Connection
    session: Session
    now: datetime
    batch: EventBatch = field(default_factory=fetched_batch)
    # Jobs this one makes (a connection event's history), written with its events.
    new_jobs: list[FetchJob] = field(default_factory=list)
    # Connection facts learnt on the way (a time zone offset), merged into its meta.
    meta: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    ignored: int = 0

    @property
    def origin(self) -> str:
        return str(self.job.params.get("origin") or NOTIFICATION)

    @property
    def provenance(self) -> str:
        return BACKFILL_PROVENANCE if self.origin in (BACKFILL, SYNC) else FETCH

    @property
    def subject(self) -> Subject:
        """Whose events these are: the connection's person, not the provider's user."""
        c = self.connection
        return Subject(c.provider, c.user_id, c.provider_user_id, self.now,
                       provenance=self.provenance, fetched_at=self.now)

    def window(self) -> tuple[date, date]:
        """A history job's first and last day (inclusive)."""
        return date.fromisoformat(str(self.job.params["first"])), \
            date.fromisoformat(str(self.job.params["last"]))


def day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def first_secret(values: tuple[Any, ...]) -> str:
    found = secret_values(values)
    return found[0] if found else ""


class ProviderApi:
    name: ClassVar[str]
    dialect: ClassVar[Dialect] = "http"
    # Job kinds that mean the person withdrew access at the provider.
    revocation_kinds: ClassVar[frozenset[str]] = frozenset()
    # Days of one history job (the provider's per-request range limit).
    chunk_days: ClassVar[int] = DEFAULT_CHUNK_DAYS
    # How far back the provider serves history at all (None: no documented floor).
    reach_days: ClassVar[int | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- connecting ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return str(getattr(self.settings, f"{self.name}_api_url")).rstrip("/")

    def oauth(self) -> OAuthSpec | None:
        """The OAuth flow, or None when the provider connects otherwise (Terra's widget)."""
        return None

    @property
    def configured(self) -> bool:
        spec = self.oauth()
        return spec is not None and bool(spec.client_id and spec.client_secret)

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        """The provider's user id of the account just connected, and facts to keep."""
        raise NotImplementedError

    async def after_connect(self, session: Session, connection: Connection,
                            public_url: str) -> dict[str, Any]:
        """What the provider needs once an account is connected; returns facts to keep."""
        return {}

    async def revoke(self, session: Session, connection: Connection) -> None:
        """Withdraw AUREN's access at the provider (the tokens are forgotten afterwards)."""

    # --- fetching --------------------------------------------------------------------------

    def is_revocation(self, job: FetchJob) -> bool:
        """Whether the job is the provider's notice that the person withdrew access."""
        return job.kind in self.revocation_kinds

    async def fetch(self, run: JobRun) -> None:
        """Run one job: its records become events in ``run.batch``."""
        raise NotImplementedError

    def history_jobs(self, connection: Connection, first: date, last: date, origin: str,
                     now: datetime) -> list[FetchJob]:
        """Jobs that fetch the days ``first`` .. ``last`` (within the provider's reach), one
        per ``chunk_days``. Their ids name the connection's connect time, so a new connection
        gets new jobs while a repeated request for one connection is one job."""
        if self.reach_days is not None:
            first = max(first, now.date() - timedelta(days=self.reach_days - 1))
        jobs = []
        start = first
        while start <= last:
            end = min(last, start + timedelta(days=self.chunk_days - 1))
            jobs.append(FetchJob(
                job_id=fetch_job_id(self.name, connection.provider_user_id, "history",
                                    connection.connected_at.isoformat(), origin, start, end),
                provider=self.name, user_id=connection.user_id,
                provider_user_id=connection.provider_user_id, kind="history", object_id=None,
                params={"origin": origin, "first": start.isoformat(), "last": end.isoformat()},
                received_at=now))
            start = end + timedelta(days=1)
        return jobs

    def own_url(self, url: str, *, host: str, prefix: str) -> str:
        """A notification's production URL moved onto this provider's configured API URL,
        refused unless it names the provider's host and an API path: a token is only ever
        sent where the settings say."""
        parts = urlsplit(url)
        if parts.scheme != "https" or (parts.hostname or "").lower() != host.lower() \
                or not parts.path.startswith(prefix) or ".." in parts.path:
            raise UpstreamRejected(f"{self.name}: the notification's URL is not the API's")
        return self.api_url + parts.path + (f"?{parts.query}" if parts.query else "")
