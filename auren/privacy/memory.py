"""In-process twins of ``ConsentStore`` and ``AuditLog``: the same contract in lists, for
tests and tools that need the behaviour without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from auren.privacy.base import (
    AuditQuery,
    AuditRecord,
    Consent,
    Withdrawn,
    actor_of,
    withdrawn_groups,
)


class _InProcess:
    """Nothing to open or close: the lists are the store."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> dict[str, Any]:
        return {"engine": "memory", "responseTime_ms": 0.0}


class MemoryConsents(_InProcess):
    def __init__(self) -> None:
        self._rows: list[Consent] = []

    async def record(self, consent: Consent) -> None:
        self._rows.append(consent)

    async def consents_of(self, user_id: str) -> list[Consent]:
        return sorted((c for c in self._rows if c.user_id == user_id),
                      key=lambda c: (c.given_at, c.consent_id))

    async def withdraw(self, user_id: str, provider: str, now: datetime) -> list[Consent]:
        changed = []
        for index, consent in enumerate(self._rows):
            if consent.user_id == user_id and consent.provider == provider and consent.in_force:
                self._rows[index] = replace(consent, withdrawn_at=now)
                changed.append(self._rows[index])
        return changed

    async def withdrawn(self) -> list[Withdrawn]:
        return withdrawn_groups(self._rows)

    async def is_withdrawn(self, user_id: str, provider: str) -> bool:
        return any(w.user_id == user_id and w.provider == provider
                   for w in withdrawn_groups(await self.consents_of(user_id)))

    async def erase_user(self, user_id: str) -> int:
        before = len(self._rows)
        self._rows = [c for c in self._rows if c.user_id != user_id]
        return before - len(self._rows)


class MemoryAudit(_InProcess):
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def append(self, record: AuditRecord) -> int:
        seq = len(self._records) + 1
        self._records.append(replace(record, seq=seq))
        return seq

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        found = [r for r in self._records
                 if (query.user_id is None or r.user_id == query.user_id)
                 and (query.action is None or r.action == query.action)
                 and (query.since is None or r.at >= query.since)
                 and (query.after_seq is None or (r.seq or 0) > query.after_seq)]
        return found[:query.limit]

    async def erase_user(self, user_id: str, pseudonym: str) -> int:
        changed = 0
        for index, record in enumerate(self._records):
            named = record.user_id == user_id
            acted = record.actor == actor_of(user_id)
            if named or acted:
                self._records[index] = replace(
                    record, user_id=pseudonym if named else record.user_id,
                    actor=actor_of(pseudonym) if acted else record.actor)
                changed += int(named) + int(acted)
        return changed
