"""The erasure engine: starts an erasure (durably, idempotently), runs its steps in order,
resumes what a dead process left, and keeps this process's ledger current.

**Start.** ``start(user_id)`` seals the subject (the user id and their provider accounts, read
from the connections), writes the record with every step ``pending`` and answers it: a second
call for the same person answers the same erasure (a failed one is set going again from the
step that failed). **Run.** ``serve`` claims due erasures under a lease and runs their steps
in order; each step's outcome is written as soon as it is known, and the lease renewed, so a
killed process leaves a record the next claimant resumes after the lease ran out. A failing
step is tried again after a backoff (``ERASURE_RETRY_BASE_S`` doubling, up to a minute) until
``ERASURE_MAX_ATTEMPTS``; then the erasure is ``failed`` (a new request resumes it). The
erasure is ``complete`` only when every step is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from auren.connections.crypto import TokenCipher, TokenUnreadable
from auren.erasure.ledger import Ledger, LedgerFeed, user_name
from auren.erasure.steps import Detail, Step, Subject
from auren.erasure.store import (
    COMPLETE,
    FAILED,
    PENDING,
    RUNNING,
    Erasure,
    ErasureStore,
    StepState,
)
from auren.errors import AurenError, NotFound
from auren.events import iso

log = logging.getLogger("auren.erasure")


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int = 8
    retry_base_s: float = 2.0
    retry_max_s: float = 60.0
    lease_s: float = 30.0
    poll_s: float = 1.0
    step_timeout_s: float = 300.0


def new_erasure_id() -> str:
    return "er_" + secrets.token_hex(12)


class Eraser:
    def __init__(self, erasures: ErasureStore, ledger: Ledger, cipher: TokenCipher,
                 plan: Callable[[Subject], Sequence[Step]],
                 accounts: Callable[[str], Awaitable[Sequence[tuple[str, str]]]], *,
                 policy: Policy | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.erasures = erasures
        self.ledger = ledger
        self._cipher = cipher
        self._plan = plan
        self._accounts = accounts
        self.policy = policy or Policy()
        self._clock = clock
        self._owner = "p_" + secrets.token_hex(8)
        self._wake = asyncio.Event()
        self.feed = LedgerFeed(erasures, ledger)

    # --- the subject, sealed --------------------------------------------------------------

    def _seal(self, erasure_id: str, subject: Subject) -> str:
        payload = orjson.dumps({"user_id": subject.user_id,
                                "accounts": [list(a) for a in subject.accounts]})
        return self._cipher.encrypt(payload, f"erasure:{erasure_id}")

    def subject(self, erasure: Erasure) -> Subject:
        """Raises TokenUnreadable when no configured key opens it."""
        raw = orjson.loads(self._cipher.decrypt(erasure.subject, f"erasure:{erasure.erasure_id}"))
        return Subject(raw["user_id"], tuple((p, u) for p, u in raw["accounts"]))

    # --- start and read ---------------------------------------------------------------------

    async def start(self, user_id: str) -> tuple[Erasure, bool]:
        """The person's erasure, made durable (and whether this call made it); the runner
        takes it from there."""
        accounts = tuple(sorted(set(await self._accounts(user_id))))
        subject = Subject(user_id, accounts)
        now = iso(self._clock())
        erasure_id = new_erasure_id()
        made = Erasure(erasure_id, self.ledger.digest(user_name(user_id)),
                       self._seal(erasure_id, subject), PENDING,
                       [StepState(step.store) for step in self._plan(subject)], now, now)
        stored, created = await self.erasures.create(made)
        # From the answer on, nothing of the person is served or stored by this process (the
        # ledger step repeats this for a process that died before it was written).
        digests = [self.ledger.digest(name) for name in subject.names]
        await self.erasures.add_to_ledger(digests, self._clock())
        self.ledger.add(digests)
        if not created and stored.status == FAILED:
            stored.status, stored.attempts, stored.due_at = PENDING, 0, None
            for state in stored.steps:
                if state.status != COMPLETE:
                    state.status = PENDING
            stored.updated_at = now
            await self.erasures.save(stored)
        if stored.status != COMPLETE:
            self._wake.set()
        log.info("erasure requested", extra={"detail": stored.erasure_id,
                                              "status": stored.status})
        return stored, created

    async def receipt(self, erasure_id: str) -> dict[str, Any]:
        """What the erasure did, step by step (with the user id: the record keeps it sealed).

        Raises:
            NotFound: no such erasure.
        """
        found = await self.erasures.get(erasure_id)
        if found is None:
            raise NotFound(f"no erasure {erasure_id[:64]!r}")
        return self.as_receipt(found)

    def as_receipt(self, erasure: Erasure) -> dict[str, Any]:
        try:
            user_id: str | None = self.subject(erasure).user_id
        except TokenUnreadable:
            user_id = None  # the key that sealed it is gone: the receipt still stands
        return {"erasure_id": erasure.erasure_id, "user_id": user_id,
                "status": erasure.status, "created_at": erasure.created_at,
                "updated_at": erasure.updated_at,
                "steps": [s.as_dict() for s in erasure.steps]}

    async def wait(self, erasure_id: str, timeout_s: float, poll_s: float = 0.2
                   ) -> dict[str, Any]:
        """The receipt once the erasure is complete or failed, or when ``timeout_s`` passed."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            receipt = await self.receipt(erasure_id)
            if receipt["status"] in (COMPLETE, FAILED) or \
                    asyncio.get_running_loop().time() >= deadline:
                return receipt
            await asyncio.sleep(poll_s)

    # --- the ledger -------------------------------------------------------------------------

    async def refresh_ledger(self) -> int:
        """Learn the digests other processes added; how many were new to this process."""
        return await self.feed.refresh()

    # --- running ----------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Until ``stop``: keep the ledger current and run every due erasure (this process's
        and those a dead process left)."""
        while not stop.is_set():
            try:
                await self.refresh_ledger()
                await self.run_due()
            except AurenError as exc:
                log.warning("erasure runner: store unavailable", extra={"error": exc.detail})
            except Exception:  # the runner must outlive any one failure
                log.exception("erasure runner crashed; continuing")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.poll_s):
                    await asyncio.wait({asyncio.ensure_future(stop.wait()),
                                        asyncio.ensure_future(self._wake.wait())},
                                       return_when=asyncio.FIRST_COMPLETED)

    async def run_due(self) -> int:
        """Claim and run every due erasure; how many were run."""
        now = self._clock()
        claimed = await self.erasures.claim(self._owner, now,
                                            now + timedelta(seconds=self.policy.lease_s))
        for erasure in claimed:
            await self.run(erasure)
        return len(claimed)

    async def run(self, erasure: Erasure) -> None:
        subject = self.subject(erasure)
        steps = {step.store: step for step in self._plan(subject)}
        policy = self.policy
        if erasure.status == PENDING:
            erasure.status = RUNNING
        for state in erasure.steps:
            if state.status == COMPLETE:
                continue
            step = steps.get(state.store)
            state.status = RUNNING
            await self._save(erasure, lease=True)
            try:
                if step is None:
                    raise AurenError(f"this process has no step for {state.store!r}")
                detail = await self._leased(erasure, step.run(subject))
            except Exception as exc:  # noqa: BLE001 - any failure is the step's: kept, retried
                error = exc.detail if isinstance(exc, AurenError) else type(exc).__name__
                erasure.attempts += 1
                state.error, state.at = error[:300], iso(self._clock())
                log.warning("erasure step failed", extra={
                    "detail": f"{erasure.erasure_id} {state.store}", "error": error[:300],
                    "count": erasure.attempts})
                if erasure.attempts >= policy.max_attempts:
                    state.status = erasure.status = FAILED
                else:
                    state.status = PENDING
                    backoff = min(policy.retry_max_s,
                                  policy.retry_base_s * 2 ** (erasure.attempts - 1))
                    erasure.due_at = iso(self._clock() + timedelta(seconds=backoff))
                await self._save(erasure, lease=False)
                return
            state.status, state.at, state.detail, state.error = \
                COMPLETE, iso(self._clock()), detail, None
            erasure.attempts, erasure.due_at = 0, None
            await self._save(erasure, lease=True)
        erasure.status = COMPLETE
        await self._save(erasure, lease=False)
        log.info("erasure complete", extra={"detail": erasure.erasure_id})

    async def _leased(self, erasure: Erasure, work: Awaitable[Detail]) -> Detail:
        """``work`` within the step timeout, the lease renewed meanwhile (a step may wait
        longer than a lease lasts: the Kafka consumers, a slow provider)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.policy.lease_s / 3)
                await self._save(erasure, lease=True)

        renewing = asyncio.create_task(renew())
        try:
            async with asyncio.timeout(self.policy.step_timeout_s):
                return await work
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, AurenError):
                await renewing

    async def _save(self, erasure: Erasure, *, lease: bool) -> None:
        now = self._clock()
        erasure.updated_at = iso(now)
        if lease:
            erasure.lease_owner = self._owner
            erasure.lease_until = iso(now + timedelta(seconds=self.policy.lease_s))
        else:
            erasure.lease_owner = erasure.lease_until = None
        await self.erasures.save(erasure)
