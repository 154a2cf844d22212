"""The simulated providers' notifications: signed as each provider signs, sent to the bridge.

Signing reuses the bridge's own provider modules (``signed_headers``) with the first secret of
each rotation list in the same settings the bridge reads, through the simulator's
``resolve_providers``: a notification verifies at the bridge exactly when the two processes
share their configuration. A provider whose secret is not configured is skipped and the
reason recorded; nothing is ever sent unsigned in its place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import httpx

from auren.providers.withings import signed_headers as withings_headers
from auren.settings import Settings
from auren.sim.api.core import Outgoing, SimState
from auren.sim.api.wearers import PROVIDERS, Wearer
from auren.sim.render import ProviderTarget, UnsignedDelivery, resolve_providers

log = logging.getLogger("auren.sim")

# Notification records kept for GET /_sim/notifications (oldest dropped first).
_LOG_LIMIT = 10_000


class Notifier:
    def __init__(self, state: SimState, settings: Settings, bridge_url: str | None,
                 timeout_s: float) -> None:
        self.state = state
        self.bridge_url = bridge_url.rstrip("/") if bridge_url else None
        self.timeout_s = timeout_s
        signable = [p for p in PROVIDERS if p != "withings"]  # Withings signs nothing
        targets, self.skipped = resolve_providers(settings, signable)
        self.targets: dict[str, ProviderTarget] = {t.name: t for t in targets}
        self.http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        # trust_env=False: proxy variables must not reroute notifications meant for one bridge.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), trust_env=False)

    async def close(self, timeout_s: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
        if self.http is not None:
            await self.http.aclose()

    def later(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background (a provider that answers first and sends after)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _headers(self, provider: str, item: Outgoing,
                 user: str) -> tuple[dict[str, str], str] | str:
        """The signed headers and the bridge path, or why the notification cannot be signed."""
        if provider == "withings":
            return withings_headers(item.body), "/webhooks/withings"
        target = self.targets.get(provider)
        if target is None:
            return self.skipped.get(provider, f"{provider} cannot be signed")
        signed = target.sign(UnsignedDelivery(item.body, item.delivery_id, 1, dict(item.sign_args)),
                             user, time.time())
        return signed.headers, signed.path

    async def send(self, provider: str, wearer: Wearer | None,
                   items: list[Outgoing]) -> list[dict[str, Any]]:
        """Sign and POST each item in order; returns one record per item."""
        results = []
        for item in items:
            results.append(await self._send_one(provider, wearer, item))
        return results

    async def _send_one(self, provider: str, wearer: Wearer | None,
                        item: Outgoing) -> dict[str, Any]:
        record: dict[str, Any] = {"provider": provider, "user": wearer.id if wearer else None,
                                  "kind": item.kind, "delivery_id": item.delivery_id,
                                  "url": None, "status": None, "error": None,
                                  "body": item.body.decode("utf-8", "replace"),
                                  "at": time.time()}
        signed = self._headers(provider, item, wearer.id if wearer else "")
        if isinstance(signed, str):
            record["error"] = f"not sent: {signed}"
        else:
            headers, path = signed
            url = item.url or (self.bridge_url + path if self.bridge_url else None)
            record["url"] = url
            if url is None:
                record["error"] = "not sent: no bridge URL configured"
            elif self.http is None:
                record["error"] = "not sent: the notifier is not running"
            else:
                try:
                    response = await self.http.post(url, content=item.body, headers=headers)
                    record["status"] = response.status_code
                except httpx.HTTPError as exc:
                    record["error"] = type(exc).__name__
        self.state.stats[f"{provider}:notification:{record['status'] or 'unsent'}"] += 1
        log.info("notification", extra={"provider": provider, "detail": item.kind,
                                        "status": record["status"], "error": record["error"]})
        self.state.notifications.append(record)
        del self.state.notifications[:-_LOG_LIMIT]
        return record
