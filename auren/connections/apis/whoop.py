"""WHOOP API v2: a sleep or a recovery by id for a notification, collections for history.

The id a ``recovery.updated`` notification carries is not settled by WHOOP (the cycle id in
v1, in v2 by most accounts the sleep's UUID): both are accepted. A UUID is the sleep; its
cycle's recovery follows. An integer is the cycle. Either way the recovery is placed in the
sleep it was measured in, and the cycles around it are read for their energy (only finished
cycles are stored).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi, day_start, first_secret
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.events import iso
from auren.providers import whoop
from auren.providers._common import each_item

NOT_FOUND = frozenset({404})
SCOPES = "read:recovery read:cycles read:sleep read:profile read:body_measurement offline"
PAGE = 25
_MAX_PAGES = 1000


class WhoopApi(ProviderApi):
    name = "whoop"

    def oauth(self) -> OAuthSpec:
        s = self.settings
        # Credentials in the form body only; a refresh token only with ``offline``; PKCE
        # support is undocumented.
        return OAuthSpec(self.name, s.whoop_authorize_url, s.whoop_token_url,
                         s.whoop_client_id or "", first_secret(s.whoop_client_secret), SCOPES,
                         "client_secret_post", pkce=False)

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        profile = await session.call("GET", "/v2/user/profile/basic")
        user = profile.get("user_id") if isinstance(profile, dict) else None
        if not isinstance(user, int | str) or isinstance(user, bool) or str(user) == "":
            raise UpstreamRejected("whoop: the profile has no user_id")
        return str(user), {}

    async def revoke(self, session: Session, connection: Any) -> None:
        await session.call("DELETE", "/v2/user/access", allow=NOT_FOUND)

    async def _records(self, run: JobRun, path: str, start: datetime,
                       end: datetime) -> list[Any]:
        records: list[Any] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params = {"start": iso(start), "end": iso(end), "limit": str(PAGE)}
            if token:
                params["nextToken"] = token
            page = await run.session.call("GET", path, params=params)
            found = page.get("records") if isinstance(page, dict) else None
            records += found if isinstance(found, list) else []
            token = page.get("next_token") if isinstance(page, dict) else None
            if not token:
                return records
        raise UpstreamRejected(f"whoop: {path} did not stop paging")

    def _sleeps(self, run: JobRun, sleeps: list[Any]) -> dict[str, tuple[Any, Any]]:
        windows: dict[str, tuple[Any, Any]] = {}

        def add(record: Any) -> None:
            whoop.sleep(record, run.subject, run.batch)
            windows[str(record.get("id"))] = whoop.sleep_window(record, run.subject)

        each_item(sleeps, "sleep", run.batch, add)
        return windows

    async def _recovery(self, run: JobRun, cycle: Any, sleep: Any) -> None:
        recovery = await run.session.call("GET", f"/v2/cycle/{cycle}/recovery",
                                          allow=NOT_FOUND)
        if recovery is None:
            run.note = "no recovery for the cycle yet (404)"
            return
        window = whoop.sleep_window(sleep, run.subject)
        each_item([recovery], "recovery", run.batch,
                  lambda r: whoop.recovery(r, window, run.subject, run.batch))

    async def _cycles_around(self, run: JobRun, moment: datetime) -> None:
        cycles = await self._records(run, "/v2/cycle", moment - timedelta(days=2),
                                     run.now + timedelta(minutes=1))
        each_item(cycles, "cycle", run.batch, lambda c: whoop.cycle(c, run.subject, run.batch))

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        if job.kind == "history":
            await self._history(run)
            return
        if job.kind.endswith(".deleted") or job.kind not in ("sleep.updated",
                                                             "recovery.updated"):
            run.note = f"nothing to fetch for {job.kind}"
            return
        ref = job.object_id or ""
        if job.kind == "sleep.updated" or not ref.isdigit():
            sleep = await run.session.call("GET", f"/v2/activity/sleep/{ref}", allow=NOT_FOUND)
            if sleep is None:
                run.note = "the sleep is gone (404)"
                return
            windows = self._sleeps(run, [sleep])
            if job.kind == "recovery.updated" and isinstance(sleep, dict):
                await self._recovery(run, sleep.get("cycle_id"), sleep)
                # The cycle that ended as this sleep began is finished: its energy is final.
                await self._cycles_around(run, next(iter(windows.values()), (run.now,))[0])
            return
        # A cycle id (WHOOP's v1 reading of recovery.updated).
        sleep = await run.session.call("GET", f"/v2/cycle/{ref}/sleep", allow=NOT_FOUND)
        if sleep is None:
            run.note = "the cycle has no sleep (404)"
            return
        windows = self._sleeps(run, [sleep])
        await self._recovery(run, ref, sleep)
        await self._cycles_around(run, next(iter(windows.values()), (run.now,))[0])

    async def _history(self, run: JobRun) -> None:
        first, last = run.window()
        start, end = day_start(first), day_start(last + timedelta(days=1))
        sleeps = await self._records(run, "/v2/activity/sleep", start, end)
        by_id = {str(s.get("id")): s for s in sleeps if isinstance(s, dict)}
        self._sleeps(run, sleeps)
        for recovery in await self._records(run, "/v2/recovery", start, end):
            sleep = by_id.get(str(recovery.get("sleep_id"))) if isinstance(
                recovery, dict) else None
            if sleep is None and isinstance(recovery, dict) and recovery.get("sleep_id"):
                sleep = await run.session.call(
                    "GET", f"/v2/activity/sleep/{recovery['sleep_id']}", allow=NOT_FOUND)
            if sleep is None:
                continue
            window = whoop.sleep_window(sleep, run.subject)
            # Called at once, inside this iteration: the loop variable cannot change under it.
            each_item([recovery], "recovery", run.batch,
                      lambda r: whoop.recovery(r, window, run.subject, run.batch))  # noqa: B023
        cycles = await self._records(run, "/v2/cycle", start, end)
        each_item(cycles, "cycle", run.batch, lambda c: whoop.cycle(c, run.subject, run.batch))
