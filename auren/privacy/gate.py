"""Ingestion stops where consent was withdrawn: the check the webhook path and the fetcher
make, with the count of what they did not store.

The webhook path cannot ask a database per delivery, so each process keeps the withdrawn
(person, provider) pairs and provider accounts in memory: the process that answered the
withdrawal knows at once, every other process (bridge workers, other bridges, ``auren
fetcher``) within ``CONSENT_REFRESH_S``, when it reads them again. A delivery is screened only
while that set is not empty, so the hot path pays nothing otherwise. The fetcher asks the
store before every job (a job costs provider calls anyway), so a fetch never runs after a
withdrawal was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from auren.connections.base import Connection
from auren.errors import StoreUnavailable
from auren.events import Delivery
from auren.privacy import texts
from auren.privacy.base import Consent, ConsentStore, Withdrawn

log = logging.getLogger("auren.privacy")


class ConsentGate:
    def __init__(self, consents: ConsentStore, *, refresh_s: float,
                 registry: CollectorRegistry | None = None) -> None:
        self.consents = consents
        self._refresh_s = refresh_s
        self._people: set[tuple[str, str]] = set()  # (provider, user id)
        # (provider, provider user id) -> the person who withdrew
        self._accounts: dict[tuple[str, str], str] = {}
        self.withheld = Counter(
            "auren_consent_withheld", "Items not stored because the person withdrew consent "
            "for the provider (path: webhook events and jobs, fetch jobs)",
            ["provider", "path"], registry=registry)

    @property
    def active(self) -> bool:
        return bool(self._people)

    def _replace(self, found: Iterable[Withdrawn]) -> None:
        people: set[tuple[str, str]] = set()
        accounts: dict[tuple[str, str], str] = {}
        for item in found:
            people.add((item.provider, item.user_id))
            accounts.update(((item.provider, a), item.user_id) for a in item.provider_user_ids)
        self._people, self._accounts = people, accounts

    def add(self, item: Withdrawn) -> None:
        """This process answered a withdrawal: screen at once."""
        self._people.add((item.provider, item.user_id))
        self._accounts.update(((item.provider, a), item.user_id) for a in item.provider_user_ids)

    def forget(self, provider: str, user_id: str) -> None:
        """Consent given again in this process: stop screening at once (the next refresh
        would, too)."""
        self._people.discard((provider, user_id))
        self._accounts = {key: user for key, user in self._accounts.items()
                          if not (key[0] == provider and user == user_id)}

    async def refresh(self) -> None:
        self._replace(await self.consents.withdrawn())

    async def run(self, stop: asyncio.Event) -> None:
        """Read the withdrawn pairs every ``refresh_s`` until ``stop``; a store that fails is
        tried again at the next round (the last set read stays in force)."""
        while not stop.is_set():
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                log.warning("could not read withdrawn consents", extra={"error": exc.detail})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._refresh_s)

    def screen(self, delivery: Delivery) -> int:
        """Drop the delivery's events and jobs of withdrawn people or accounts; returns how
        many were dropped (counted)."""
        if not self._people:
            return 0
        name = delivery.provider

        def kept(user_id: str, account: str) -> bool:
            return (name, user_id) not in self._people and (name, account) not in self._accounts

        events = [e for e in delivery.events if kept(e.user_id, e.provider_user_id)]
        jobs = [j for j in delivery.fetch_jobs if kept(j.user_id, j.provider_user_id)]
        dropped = len(delivery.events) - len(events) + len(delivery.fetch_jobs) - len(jobs)
        if dropped:
            delivery.events, delivery.fetch_jobs = events, jobs
            self.withheld.labels(name, "webhook").inc(dropped)
        return dropped

    async def may_fetch(self, user_id: str, provider: str) -> bool:
        """False (counted) when the person withdrew consent for the provider."""
        if await self.consents.is_withdrawn(user_id, provider):
            self.withheld.labels(provider, "fetch").inc()
            return False
        return True

    async def given(self, connection: Connection, text_version: str | None) -> None:
        """Record the person's consent for a connection about to be stored (the version of
        the text their connect link showed, or the current one), and stop screening them."""
        await self.consents.record(Consent(
            consent_id=uuid.uuid4().hex, user_id=connection.user_id,
            provider=connection.provider, provider_user_id=connection.provider_user_id,
            purpose=texts.PURPOSE, scopes=tuple(connection.scopes),
            text_version=text_version if text_version in texts.TEXTS
            else texts.CURRENT_VERSION, given_at=connection.connected_at))
        self.forget(connection.provider, connection.user_id)
