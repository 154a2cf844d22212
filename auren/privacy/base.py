"""The records of consents and of the audit log, and the two Protocols they are kept behind.

**Consent.** One row per consent given: who, which provider (and the provider's account id),
the purpose, the scopes granted, the version of the text shown (``auren.privacy.texts``) and
when. Withdrawing marks every consent of that person and provider withdrawn; connecting again
gives a new one. A person's provider is *withdrawn* while it has consents and none of them is
in force; ingestion of that provider for that person stops then (``auren.privacy.gate``).

**Audit.** Append-only: one record per request that touched a person's data (read, export,
erasure, connection and consent changes), saying who (a service key's id, never the key; a
user token's subject), what (``action`` and the route's template), whose (``user_id``), when,
from where (the client address, as the trusted proxies resolve it) and the outcome (the HTTP
status). Never a value: no query values, no bodies, no answers. Records are never updated or
deleted, with one exception: erasing a person replaces their id in the records (as the subject
and as the actor of their own token) with a pseudonym, so the accounting of who read their
data stays while nothing in it names them any more.

Both Protocols have in-memory twins in ``auren.privacy.memory``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from auren.events import iso

# Audit actions.
READ = "read"
EXPORT = "export"
ERASE = "erase"
CREATE = "create"
CONNECT = "connect"
DISCONNECT = "disconnect"
SYNC = "sync"
CONSENT_WITHDRAW = "consent_withdraw"
RETRY = "retry"
AUDIT = "audit"
ACTIONS = (READ, EXPORT, ERASE, CREATE, CONNECT, DISCONNECT, SYNC, CONSENT_WITHDRAW, RETRY,
           AUDIT)
# The marker of a route that touches nobody's data (health, metrics, documents).
NOT_AUDITED = "none"


def key_id(key: str) -> str:
    """A service key's stable, non-secret id: a digest of it, never the key (the key cannot
    be recovered from it; the same key always gives the same id)."""
    return "key:" + hashlib.sha256(b"auren-api-key\x00" + key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Consent:
    consent_id: str
    user_id: str
    provider: str
    provider_user_id: str | None
    purpose: str
    scopes: tuple[str, ...]
    text_version: str
    given_at: datetime
    withdrawn_at: datetime | None = None

    @property
    def in_force(self) -> bool:
        return self.withdrawn_at is None

    def as_dict(self) -> dict[str, Any]:
        return {"consent_id": self.consent_id, "user_id": self.user_id,
                "provider": self.provider, "provider_user_id": self.provider_user_id,
                "purpose": self.purpose, "scopes": list(self.scopes),
                "text_version": self.text_version, "given_at": iso(self.given_at),
                "withdrawn_at": iso(self.withdrawn_at) if self.withdrawn_at else None,
                "status": "given" if self.in_force else "withdrawn"}


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A person's provider whose consent is withdrawn, and the provider accounts it covered."""

    user_id: str
    provider: str
    provider_user_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    user_id: str | None
    route: str
    client: str | None
    outcome: int
    request_id: str | None = None
    # Assigned by the log when appended: the record's place in it.
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": iso(self.at), "actor": self.actor,
                "action": self.action, "user_id": self.user_id, "route": self.route,
                "client": self.client, "outcome": self.outcome,
                "request_id": self.request_id}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    user_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    after_seq: int | None = None
    limit: int = 100


class ConsentStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> dict[str, Any]: ...

    async def record(self, consent: Consent) -> None:
        """Keep a consent given (a new row: earlier ones stay as they are)."""
        ...

    async def consents_of(self, user_id: str) -> list[Consent]:
        """Every consent of the person, oldest first."""
        ...

    async def withdraw(self, user_id: str, provider: str, now: datetime) -> list[Consent]:
        """Mark the consents in force of this person and provider withdrawn; returns them
        (empty: none was in force)."""
        ...

    async def withdrawn(self) -> list[Withdrawn]:
        """Every person's provider whose consents are all withdrawn."""
        ...

    async def is_withdrawn(self, user_id: str, provider: str) -> bool: ...

    async def erase_user(self, user_id: str) -> int:
        """Delete every consent of the person; returns how many."""
        ...


class AuditLog(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> dict[str, Any]: ...

    async def append(self, record: AuditRecord) -> int:
        """Write the record durably; returns its ``seq`` (increasing)."""
        ...

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records in ``seq`` order, after ``after_seq``, filtered."""
        ...

    async def erase_user(self, user_id: str, pseudonym: str) -> int:
        """Replace the person's id in every record (as ``user_id``, and ``jwt:<id>`` as the
        actor) by ``pseudonym``; returns how many ids were replaced. Nothing else is ever
        changed or deleted."""
        ...


def withdrawn_groups(consents: list[Consent]) -> list[Withdrawn]:
    """From every consent, the (person, provider) pairs none of whose consents is in force."""
    groups: dict[tuple[str, str], list[Consent]] = {}
    for consent in consents:
        groups.setdefault((consent.user_id, consent.provider), []).append(consent)
    return [Withdrawn(user, provider, frozenset(c.provider_user_id for c in found
                                               if c.provider_user_id))
            for (user, provider), found in groups.items()
            if not any(c.in_force for c in found)]


def actor_of(user_id: str) -> str:
    """The actor a person's own user token is recorded as."""
    return "jwt:" + user_id


class GroupedAppends:
    """Appends that arrive while a write is under way share the next one (one transaction and
    one fsync for all of them): every read writes an audit record before it is answered, and
    one commit per record, one after another, capped a service at a few hundred answers a
    second. Each caller still waits for its own record's commit."""

    def __init__(self, write: Callable[[list[AuditRecord]], Awaitable[list[int]]]) -> None:
        self._write = write
        self._pending: list[tuple[AuditRecord, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="audit-appends")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                seqs = await self._write([record for record, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():  # a caller that gave up (cancelled) is skipped
                    future.set_result(seq)
