"""The steps of an erasure: one per store that holds anything of the person, in order.

A step is a store's name and an idempotent coroutine that erases the person from it and
answers what it did (counts, facts); running it again after a crash, or after it half
happened, is always safe. Most steps are a store's own ``erase_*`` method wrapped in a
:class:`StoreStep`, so a new store joins an erasure with one line in the plan
(``auren.services.erasures.plan``)::

    StoreStep("consents", lambda subject: consents.erase_user(subject.user_id))

The order matters where one store feeds another: the ledger first (from then on nothing of the
person is stored again by any path), then what could still bring records back (the spool, the
Kafka topics' consumers), the provider grants while the tokens still exist, then the stores,
and the database files last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from auren.adapters.wire import decode, encode
from auren.erasure.ledger import Ledger, account_name, user_name
from auren.erasure.store import ErasureStore
from auren.ingest.spool import Spool


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is erased: the user id and the provider accounts they had when it began."""

    user_id: str
    accounts: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        """What the ledger records: the person and each of their provider accounts."""
        return [user_name(self.user_id), *(account_name(p, u) for p, u in self.accounts)]

    @property
    def identifiers(self) -> list[str]:
        """The ids that name the person in keys: theirs and their provider user ids."""
        return [self.user_id, *sorted({u for _, u in self.accounts})]


Detail = dict[str, Any]


class Step(Protocol):
    @property
    def store(self) -> str: ...

    async def run(self, subject: Subject) -> Detail: ...


@dataclass(frozen=True, slots=True)
class StoreStep:
    """A step that is one call: ``erase(subject)`` answers a count or a map of counts."""

    store: str
    erase: Callable[[Subject], Awaitable[int | dict[str, int] | Detail]]

    async def run(self, subject: Subject) -> Detail:
        done = await self.erase(subject)
        return {"deleted": done} if isinstance(done, int) else dict(done)


@dataclass(frozen=True, slots=True)
class LedgerStep:
    """Record the person in the erasure ledger (durably, and in this process's screen at
    once), then wait ``settle_s``: every other process re-reads the ledger within its refresh
    interval, so after the wait no path of any process stores anything of the person again."""

    erasures: ErasureStore
    ledger: Ledger
    clock: Callable[[], datetime]
    settle_s: float = 0.0
    store: str = "erasure ledger"

    async def run(self, subject: Subject) -> Detail:
        digests = [self.ledger.digest(name) for name in subject.names]
        await self.erasures.add_to_ledger(digests, self.clock())
        self.ledger.add(digests)
        if self.settle_s:
            await asyncio.sleep(self.settle_s)
        return {"pseudonyms": len(digests)}


@dataclass(frozen=True, slots=True)
class SpoolStep:
    """Rewrite the bridge's spool without the person's rows (this process's spool, and the
    slots no live process holds: a dead worker's records). What another live worker's spool
    holds is screened when it is replayed, and by the sink."""

    ledger: Ledger
    spools: Callable[[], Awaitable[Sequence[Spool]]]
    release: Callable[[], Awaitable[None]]
    store: str = "spool"

    async def run(self, subject: Subject) -> Detail:
        def drop(payload: bytes) -> bytes | None:
            try:
                record = decode(payload)
            except ValueError:
                return payload  # not readable as a record: nobody can replay it either
            screened, gone = self.ledger.screen_record(record)
            if not gone:
                return payload
            return encode(screened) if screened.items else None

        changed = 0
        try:
            for spool in await self.spools():
                changed += await spool.scrub(drop)
        finally:
            await self.release()
        return {"records": changed}
