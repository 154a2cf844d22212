"""In-process twins of ``ConnectionStore`` and ``JobQueue``: the same contract (results,
ordering, single use, single flight, job lifecycle) in dictionaries, for tests and tools that
need the real behaviour without a database. Tokens stay in memory as they are."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from auren.connections import base
from auren.connections.base import Connection, ConnectState, JobRecord, Refresh, User
from auren.events import FetchJob


class MemoryConnections:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._connections: dict[tuple[str, str], Connection] = {}
        self._states: dict[str, ConnectState] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> dict[str, Any]:
        return {"engine": "memory", "responseTime_ms": 0.0}

    async def create_user(self, user_id: str, now: datetime) -> tuple[User, bool]:
        found = self._users.get(user_id)
        if found is not None:
            return found, False
        user = self._users[user_id] = User(user_id, now)
        return user, True

    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def save_state(self, state: ConnectState) -> None:
        self._states[state.nonce] = state

    async def take_state(self, nonce: str) -> ConnectState | None:
        return self._states.pop(nonce, None)

    async def upsert_connection(self, connection: Connection) -> Connection:
        old = self._connections.get(connection.key)
        stored = copy.deepcopy(connection)
        stored.status = base.ACTIVE
        stored.token_version = (old.token_version + 1) if old else 1
        if old is not None:
            stored.meta = {**old.meta, **connection.meta}
            stored.last_fetch_at, stored.last_success_at = old.last_fetch_at, old.last_success_at
        stored.last_error = stored.last_error_at = None
        self._connections[connection.key] = stored
        return copy.deepcopy(stored)

    async def get_connection(self, provider: str, provider_user_id: str) -> Connection | None:
        found = self._connections.get((provider, provider_user_id))
        return copy.deepcopy(found) if found else None

    async def connections_of(self, user_id: str) -> list[Connection]:
        return sorted((copy.deepcopy(c) for c in self._connections.values()
                       if c.user_id == user_id), key=lambda c: c.key)

    async def set_status(self, provider: str, provider_user_id: str, status: str,
                         error: str | None, now: datetime) -> None:
        found = self._connections.get((provider, provider_user_id))
        if found is not None and found.status != base.DISCONNECTED:
            found.status, found.updated_at = status, now
            if error is not None:
                found.last_error, found.last_error_at = error, now

    async def record_fetch(self, provider: str, provider_user_id: str, *, ok: bool,
                           error: str | None, now: datetime) -> None:
        found = self._connections.get((provider, provider_user_id))
        if found is None:
            return
        found.last_fetch_at = now
        if ok:
            found.last_success_at = now
        else:
            found.last_error, found.last_error_at = error, now

    async def merge_meta(self, provider: str, provider_user_id: str,
                         meta: dict[str, Any]) -> None:
        found = self._connections.get((provider, provider_user_id))
        if found is not None:
            found.meta = {**found.meta, **meta}

    async def forget(self, provider: str, provider_user_id: str, now: datetime) -> None:
        found = self._connections.get((provider, provider_user_id))
        if found is not None:
            found.tokens, found.status, found.updated_at = None, base.DISCONNECTED, now
            found.token_version += 1

    async def erase_user(self, user_id: str) -> dict[str, int]:
        connections = [k for k, c in self._connections.items() if c.user_id == user_id]
        states = [n for n, s in self._states.items() if s.user_id == user_id]
        for key in connections:
            del self._connections[key]
        for nonce in states:
            del self._states[nonce]
        users = 1 if self._users.pop(user_id, None) is not None else 0
        return {"connections": len(connections), "connect_states": len(states),
                "users": users}

    async def refresh_tokens(self, provider: str, provider_user_id: str, seen_version: int,
                             refresh: Refresh, now: datetime) -> Connection:
        key = (provider, provider_user_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._connections.get(key)
            if found is None:
                raise LookupError(f"no connection {provider}:{provider_user_id}")
            if found.token_version == seen_version:
                tokens = await refresh(copy.deepcopy(found))
                found.tokens, found.updated_at = tokens, now
                found.token_version += 1
            return copy.deepcopy(found)

    async def status_counts(self) -> dict[tuple[str, str], int]:
        return dict(Counter((c.provider, c.status) for c in self._connections.values()))


class MemoryJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._leases: dict[str, datetime] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def add(self, jobs: Sequence[FetchJob]) -> int:
        added = 0
        for job in jobs:
            if job.job_id not in self._jobs:
                self._jobs[job.job_id] = JobRecord(job, base.PENDING)
                added += 1
        return added

    async def claim(self, limit: int, lease_s: float, now: datetime) -> list[JobRecord]:
        def due(record: JobRecord) -> bool:
            if record.state == base.PENDING:
                return record.due_at is None or record.due_at <= now
            return record.state == base.RUNNING and self._leases.get(record.job.job_id, now) < now

        chosen = sorted((r for r in self._jobs.values() if due(r)),
                        key=lambda r: r.due_at or r.job.received_at)[:limit]
        claimed = []
        for record in chosen:
            updated = replace(record, state=base.RUNNING, attempts=record.attempts + 1,
                              updated_at=now)
            self._jobs[record.job.job_id] = updated
            self._leases[record.job.job_id] = now + timedelta(seconds=lease_s)
            claimed.append(updated)
        return claimed

    async def renew(self, job_ids: Sequence[str], lease_until: datetime) -> None:
        for job_id in job_ids:
            if job_id in self._leases:
                self._leases[job_id] = lease_until

    async def finish(self, job_id: str, state: str, now: datetime, *,
                     error: str | None = None, due_at: datetime | None = None,
                     rate_limited: bool = False) -> None:
        record = self._jobs.get(job_id)
        if record is None:
            return
        self._leases.pop(job_id, None)
        self._jobs[job_id] = replace(
            record, state=state, due_at=due_at, last_error=error, updated_at=now,
            attempts=record.attempts - 1 if rate_limited else record.attempts,
            rate_waits=record.rate_waits + 1 if rate_limited else record.rate_waits)

    async def get(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    async def listing(self, state: str | None, provider: str | None,
                      limit: int) -> list[JobRecord]:
        found = [r for r in self._jobs.values()
                 if (state is None or r.state == state)
                 and (provider is None or r.job.provider == provider)]
        found.sort(key=lambda r: (r.updated_at or r.job.received_at, r.job.job_id),
                   reverse=True)
        return found[:limit]

    async def retry(self, job_ids: Sequence[str] | None, now: datetime, *,
                    state: str = base.DEAD, provider: str | None = None) -> int:
        chosen = [self._jobs[j] for j in job_ids if j in self._jobs] if job_ids is not None \
            else [r for r in self._jobs.values() if r.state == state
                  and (provider is None or r.job.provider == provider)]
        for record in chosen:
            self._jobs[record.job.job_id] = replace(record, state=base.PENDING, attempts=0,
                                                    rate_waits=0, due_at=None, updated_at=now)
        return len(chosen)

    async def release(self, provider: str, provider_user_id: str, now: datetime) -> int:
        chosen = [r for r in self._jobs.values() if r.state == base.BLOCKED
                  and r.job.provider == provider and r.job.provider_user_id == provider_user_id]
        for record in chosen:
            self._jobs[record.job.job_id] = replace(record, state=base.PENDING, due_at=None,
                                                    updated_at=now)
        return len(chosen)

    async def counts(self) -> dict[tuple[str, str], int]:
        return dict(Counter((r.job.provider, r.state) for r in self._jobs.values()))
