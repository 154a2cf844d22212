"""The erasure ledger: who was erased, as keyed digests, and the screen built on it.

Records of an erased person can still arrive after the erasure: a webhook the provider
retries, a record that sat in Kafka or in a spool, a replay of the topics after a restore, a
fetch job that was running. Every path that stores data screens it through the ledger first:
the bridge's webhook path (the delivery is answered 2xx and not stored), the durable step the
fetcher writes through, and the sink (and the fetcher's consumer) before PostgreSQL.

The ledger names people by pseudonyms (``TokenCipher.pseudonyms``: HMAC-SHA256 under a key
derived from ``AUREN_ENCRYPTION_KEY``), never by their ids, so that the ledger itself keeps
nothing readable of them: ``user:<user id>`` for the person and ``account:<provider>:<provider
user id>`` for each of their provider accounts (a later notification names only the latter).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from auren.adapters.base import DurableLog, WriteResult
from auren.adapters.wire import DeliveryRecord
from auren.errors import NotFound, StoreUnavailable
from auren.events import Delivery
from auren.neuros.memory import ConversationStore, ConversationSummary, Message

log = logging.getLogger("auren.erasure")


def user_name(user_id: str) -> str:
    return f"user:{user_id}"


def account_name(provider: str, provider_user_id: str) -> str:
    return f"account:{provider}:{provider_user_id}"


class Ledger:
    """The set of erased pseudonyms a process knows, and the screens over it. ``pseudonyms``
    maps a name to its digests under every configured key (the first is the one stored)."""

    def __init__(self, pseudonyms: Callable[[str], Sequence[str]]) -> None:
        self._pseudonyms = pseudonyms
        self._erased: set[str] = set()
        self._memo: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self._erased)

    def digest(self, name: str) -> str:
        """The digest stored for ``name`` (under the first key)."""
        return self._pseudonyms(name)[0]

    def add(self, digests: Iterable[str]) -> None:
        before = len(self._erased)
        self._erased.update(digests)
        if len(self._erased) != before:
            self._memo.clear()

    def _named(self, name: str) -> bool:
        if not self._erased:
            return False
        found = self._memo.get(name)
        if found is None:
            found = any(d in self._erased for d in self._pseudonyms(name))
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[name] = found
        return found

    def user_erased(self, user_id: str) -> bool:
        return self._named(user_name(user_id))

    def erased(self, user_id: str, provider: str, provider_user_id: str) -> bool:
        """Whether an item of this person, or of this provider account, must not be stored."""
        return self._named(user_name(user_id)) or self._named(
            account_name(provider, provider_user_id))

    # --- screens ----------------------------------------------------------------------------

    def screen_delivery(self, delivery: Delivery) -> tuple[Delivery, int]:
        """The delivery without the items of erased people, and how many items went."""
        if not self._erased:
            return delivery, 0
        events = [e for e in delivery.events
                  if not self.erased(e.user_id, e.provider, e.provider_user_id)]
        jobs = [j for j in delivery.fetch_jobs
                if not self.erased(j.user_id, j.provider, j.provider_user_id)]
        dropped = len(delivery.events) - len(events) + len(delivery.fetch_jobs) - len(jobs)
        if not dropped:
            return delivery, 0
        # Its raw payload (ARCHIVE_RAW_PAYLOADS) holds the erased items too: not archived.
        return dataclasses.replace(delivery, events=events, fetch_jobs=jobs, raw=None), dropped

    def screen_record(self, record: DeliveryRecord) -> tuple[DeliveryRecord, int]:
        """The bus's record without the rows of erased people, and how many rows went."""
        if not self._erased:
            return record, 0
        # Event row: event_id, user_id, provider, provider_user_id, ...;
        # job row: job_id, provider, user_id, provider_user_id, ...
        events = [e for e in record.events if not self.erased(e[1], e[2], e[3])]
        jobs = [j for j in record.jobs if not self.erased(j[2], j[1], j[3])]
        dropped = len(record.events) - len(events) + len(record.jobs) - len(jobs)
        if not dropped:
            return record, 0
        # Without its raw payload (ARCHIVE_RAW_PAYLOADS): it holds the erased rows too.
        return DeliveryRecord(record.provider, record.delivery_key, record.received_at,
                              events, jobs), dropped


class ScreenedLog:
    """A ``DurableLog`` that writes deliveries without the items of erased people: what the
    fetcher (and the group commit) write through, so that a job that was running when its
    person was erased stores nothing of them."""

    def __init__(self, inner: DurableLog, ledger: Ledger) -> None:
        self.inner = inner
        self._ledger = ledger

    async def write_batch(self, deliveries: Sequence[Delivery]) -> list[WriteResult]:
        screened = [self._ledger.screen_delivery(d)[0] for d in deliveries]
        return await self.inner.write_batch(screened)


class LedgerSource(Protocol):
    async def ledger_since(self, seq: int) -> tuple[list[str], int]: ...


class LedgerFeed:
    """A process's ledger kept current from where erasures record it (``ErasureStore``)."""

    def __init__(self, source: LedgerSource, ledger: Ledger) -> None:
        self.source = source
        self.ledger = ledger
        self._seq = 0

    async def refresh(self) -> int:
        """Learn the digests added since the last call; how many were new here.

        Raises:
            StoreUnavailable: the store could not be read.
        """
        digests, self._seq = await self.source.ledger_since(self._seq)
        before = len(self.ledger)
        self.ledger.add(digests)
        return len(self.ledger) - before

    async def follow(self, stop: asyncio.Event, every_s: float) -> None:
        """Refresh every ``every_s`` until ``stop`` (a failed read is tried at the next)."""
        while not stop.is_set():
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                log.warning("erasure ledger not refreshed", extra={"error": exc.detail})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


class ScreenedConversations:
    """NEUROS's ``ConversationStore`` that keeps and serves nothing of an erased person: a chat
    for them is still answered (from no data), but its turns are not stored, and their
    conversations are not listed even while the erasure has yet to delete them."""

    def __init__(self, inner: ConversationStore, ledger: Ledger) -> None:
        self.inner = inner
        self._ledger = ledger
        self.dropped = 0  # turns of erased people not stored

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> dict[str, Any]:
        return await self.inner.ping()

    async def history(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        return await self.inner.history(user_id, conversation_id, limit)

    async def append(self, user_id: str, conversation_id: str,
                     messages: Sequence[Message]) -> None:
        if self._ledger.user_erased(user_id):
            self.dropped += len(messages)
            return
        await self.inner.append(user_id, conversation_id, messages)

    async def conversations(self, user_id: str, limit: int) -> list[ConversationSummary]:
        if self._ledger.user_erased(user_id):
            return []  # being erased: never served again, even before the rows are gone
        return await self.inner.conversations(user_id, limit)

    async def messages(self, user_id: str, conversation_id: str, limit: int) -> list[Message]:
        if self._ledger.user_erased(user_id):
            raise NotFound("no such conversation")
        return await self.inner.messages(user_id, conversation_id, limit)

    async def erase_user(self, user_id: str) -> dict[str, int]:
        return await self.inner.erase_user(user_id)
