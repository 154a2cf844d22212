"""The records of connections and fetch jobs, and the two Protocols they are kept behind.

``ConnectionStore`` keeps people, their connections (with the OAuth tokens, encrypted by the
implementation before they are written), connect states and the single-flight token refresh.
``JobQueue`` is the fetch jobs' lifecycle in the event store's ``fetch_jobs`` table, where the
bridge (embedded) or the sink and the fetcher's consumer (full stack) put them::

    pending ──claim──> running ──> done
       ^  ^               │   ├──> pending (retry later: backoff, a rate limit's wait)
       │  └── retry ──────┼── dead (attempts used up, or refused for good)
       │                  ├──> blocked (the connection needs re-authorization)
       └── reconnect ─────┘   └──> cancelled (the connection was removed)

A running job holds a lease; a fetcher that died leaves it to be claimed again once the lease
runs out, and every claim counts as an attempt, so a job that kills its fetcher cannot loop.
Both Protocols have in-memory twins in ``auren.connections.memory``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from auren.events import FetchJob, iso

# Connection statuses.
ACTIVE = "active"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
DISCONNECTED = "disconnected"
STATUSES = (ACTIVE, REAUTHORIZATION_REQUIRED, DISCONNECTED)

# Job states.
PENDING = "pending"
RUNNING = "running"
DONE = "done"
DEAD = "dead"
BLOCKED = "blocked"
CANCELLED = "cancelled"
JOB_STATES = (PENDING, RUNNING, DONE, DEAD, BLOCKED, CANCELLED)

# How a job came to be, in its params ("origin"): a provider's notification, the history
# fetched when an account is connected, a re-sync asked for through the API.
NOTIFICATION = "notification"
BACKFILL = "backfill"
SYNC = "sync"


@dataclass(frozen=True, slots=True)
class Tokens:
    """A connection's OAuth tokens, decrypted in memory only; ``repr`` never shows them."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret

    def expiring(self, now: datetime, ahead_s: float) -> bool:
        return self.expires_at is not None and self.expires_at - now <= timedelta(
            seconds=ahead_s)


@dataclass(slots=True)
class Connection:
    provider: str
    provider_user_id: str
    user_id: str
    status: str
    scopes: tuple[str, ...]
    connected_at: datetime
    updated_at: datetime
    tokens: Tokens | None = None
    # Grows with every token change: a refresh that finds a newer version skips its own.
    token_version: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.provider_user_id

    @property
    def context(self) -> str:
        """What a stored ciphertext of this connection is bound to (AEAD associated data)."""
        return f"{self.provider}:{self.provider_user_id}"

    def as_dict(self) -> dict[str, Any]:
        """What the API shows: never the tokens."""
        return {"provider": self.provider, "provider_user_id": self.provider_user_id,
                "user_id": self.user_id, "status": self.status, "scopes": list(self.scopes),
                "connected_at": iso(self.connected_at),
                "last_fetch_at": iso(self.last_fetch_at) if self.last_fetch_at else None,
                "last_success_at": iso(self.last_success_at) if self.last_success_at else None,
                "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at) if self.last_error_at else None}


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "created_at": iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class ConnectState:
    """A connect link in flight: whose, at which provider, its PKCE verifier, until when."""

    nonce: str
    user_id: str
    provider: str
    verifier: str | None = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A fetch job as the queue knows it."""

    job: FetchJob
    state: str
    attempts: int = 0
    rate_waits: int = 0
    due_at: datetime | None = None
    last_error: str | None = None
    updated_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.job.as_dict(), "state": self.state, "attempts": self.attempts,
                "rate_limit_waits": self.rate_waits,
                "due_at": iso(self.due_at) if self.due_at else None,
                "last_error": self.last_error,
                "updated_at": iso(self.updated_at) if self.updated_at else None}


Refresh = Callable[[Connection], Awaitable[Tokens]]


class ConnectionStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> dict[str, Any]: ...

    async def create_user(self, user_id: str, now: datetime) -> tuple[User, bool]:
        """The user, and whether this call created them."""
        ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def save_state(self, state: ConnectState) -> None: ...

    async def take_state(self, nonce: str) -> ConnectState | None:
        """The state, deleted in the same step: a second take finds nothing (single use)."""
        ...

    async def upsert_connection(self, connection: Connection) -> Connection:
        """Store a (re)connected account: its tokens, scopes, meta, status active; the person
        it belongs to is ``connection.user_id`` even if it belonged to someone else before."""
        ...

    async def get_connection(self, provider: str, provider_user_id: str) -> Connection | None:
        ...

    async def connections_of(self, user_id: str) -> list[Connection]: ...

    async def set_status(self, provider: str, provider_user_id: str, status: str,
                         error: str | None, now: datetime) -> None: ...

    async def record_fetch(self, provider: str, provider_user_id: str, *, ok: bool,
                           error: str | None, now: datetime) -> None: ...

    async def merge_meta(self, provider: str, provider_user_id: str,
                         meta: dict[str, Any]) -> None: ...

    async def forget(self, provider: str, provider_user_id: str, now: datetime) -> None:
        """Erase the tokens and mark the connection disconnected (kept, so that its jobs are
        cancelled rather than dead)."""
        ...

    async def refresh_tokens(self, provider: str, provider_user_id: str, seen_version: int,
                             refresh: Refresh, now: datetime) -> Connection:
        """Single flight, across tasks and processes: unless someone already replaced the
        tokens of ``seen_version``, call ``refresh`` with the current connection and store
        its tokens; either way return the connection with the current tokens. ``refresh``'s
        exceptions pass through (nothing is stored)."""
        ...

    async def status_counts(self) -> dict[tuple[str, str], int]:
        """Connections by (provider, status)."""
        ...

    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the person, their connections (tokens included) and connect links; the
        rows deleted per table."""
        ...


class JobQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, jobs: Sequence[FetchJob]) -> int:
        """Insert jobs not known yet as pending; returns how many were new."""
        ...

    async def claim(self, limit: int, lease_s: float, now: datetime) -> list[JobRecord]:
        """Up to ``limit`` due jobs (pending and due, or running with an expired lease), each
        now running under a lease and counted as one more attempt."""
        ...

    async def renew(self, job_ids: Sequence[str], lease_until: datetime) -> None: ...

    async def finish(self, job_id: str, state: str, now: datetime, *,
                     error: str | None = None, due_at: datetime | None = None,
                     rate_limited: bool = False) -> None:
        """End a run: ``done``, ``dead``, ``blocked``, ``cancelled``, or ``pending`` again
        at ``due_at``. ``rate_limited``: the run only waited for a rate limit, which counts
        as a wait rather than a failed attempt."""
        ...

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def listing(self, state: str | None, provider: str | None,
                      limit: int) -> list[JobRecord]: ...

    async def retry(self, job_ids: Sequence[str] | None, now: datetime, *,
                    state: str = DEAD, provider: str | None = None) -> int:
        """Make jobs pending and due now with their attempts reset: the ids given, or every
        job in ``state`` (of ``provider``). Returns how many."""
        ...

    async def release(self, provider: str, provider_user_id: str, now: datetime) -> int:
        """A reconnected account's blocked jobs become pending again."""
        ...

    async def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (provider, state)."""
        ...
