"""Polar AccessLink v3: the notification's URL, moved onto ``POLAR_API_URL``; lists for history.

A person is registered with ``POST /v3/users`` when they connect (409: already registered),
and Polar shows only what their device uploaded after that: a fresh connection's history is
empty, which is the truth, not a failure. A ``SLEEP`` notification brings the night and, by
date, its nightly recharge (RMSSD), skin temperature (absolute and deviation) and SpO2 tests;
an ``ACTIVITY_SUMMARY`` the day's activity (wall-clock times, placed with the UTC offset the
person's nights carry). Tokens are long-lived and cannot be refreshed; revoking is
deregistering (``DELETE /v3/users/{id}``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi
from auren.connections.base import Connection
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.providers import polar
from auren.providers._common import each_item

NOT_FOUND = frozenset({404})
REACH_DAYS = 28  # the lists' span; older data is not served


class PolarApi(ProviderApi):
    name = "polar"
    chunk_days = 28
    reach_days = 365

    def oauth(self) -> OAuthSpec:
        s = self.settings
        secret = s.polar_client_secret.get_secret_value() if s.polar_client_secret else ""
        return OAuthSpec(self.name, s.polar_authorize_url, s.polar_token_url,
                         s.polar_client_id or "", secret, "accesslink.read_all",
                         "client_secret_basic", pkce=False, refreshable=False)

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        user = answer.extra.get("x_user_id")
        if isinstance(user, bool) or not isinstance(user, int | str) or str(user) == "":
            raise UpstreamRejected("polar: the token answer has no x_user_id")
        return str(user), {}

    async def after_connect(self, session: Session, connection: Connection,
                            public_url: str) -> dict[str, Any]:
        await session.call("POST", "/v3/users", json={"member-id": connection.user_id},
                           allow=frozenset({409}))
        return {"registered": True}

    async def revoke(self, session: Session, connection: Connection) -> None:
        await session.call("DELETE", f"/v3/users/{connection.provider_user_id}",
                           allow=NOT_FOUND)

    def _offset(self, run: JobRun) -> int:
        found = run.meta.get("utc_offset_min", run.connection.meta.get("utc_offset_min"))
        return found if isinstance(found, int) else 0

    def _learn_offset(self, run: JobRun, night: Any) -> None:
        """The person's UTC offset, from a night's start time (Polar's activity times have
        none of their own)."""
        text = night.get("sleep_start_time") if isinstance(night, dict) else None
        try:
            offset = datetime.fromisoformat(text).utcoffset() if isinstance(text, str) else None
        except ValueError:
            return
        if offset is not None:
            run.meta["utc_offset_min"] = int(offset.total_seconds() // 60)

    def _nights(self, run: JobRun, nights: list[Any], windows: polar.Nights) -> None:
        for night in nights:
            self._learn_offset(run, night)
        each_item(nights, "sleep", run.batch,
                  lambda n: polar.night(n, run.subject, run.batch, windows))

    async def _biosensing(self, run: JobRun, first: str, last: str,
                          windows: polar.Nights) -> None:
        window = {"from": first, "to": last}
        skin = await run.session.call("GET", "/v3/users/biosensing/skintemperature",
                                      params=window)
        each_item(skin, "skintemperature", run.batch,
                  lambda d: polar.skin_temperature(d, run.subject, run.batch, windows))
        spo2 = await run.session.call("GET", "/v3/users/biosensing/spo2", params=window)
        each_item(spo2, "spo2", run.batch, lambda d: polar.spo2_test(d, run.subject, run.batch))

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        if job.kind == "history":
            await self._history(run)
            return
        if job.kind not in ("SLEEP", "ACTIVITY_SUMMARY"):
            run.note = f"nothing to fetch for {job.kind}"
            return
        url = job.params.get("url")
        if not isinstance(url, str):
            raise UpstreamRejected("polar: the notification names no URL")
        answer = await run.session.call(
            "GET", self.own_url(url, host=self.settings.polar_api_host, prefix="/v3/"),
            allow=NOT_FOUND)
        if answer is None:
            run.note = "nothing at the notification's URL (404)"
            return
        if job.kind == "ACTIVITY_SUMMARY":
            each_item([answer], "activity", run.batch,
                      lambda a: polar.activity(a, self._offset(run), run.subject, run.batch))
            return
        windows: polar.Nights = {}
        self._nights(run, [answer], windows)
        day = str(answer.get("date") or job.object_id) if isinstance(answer, dict) else ""
        recharge = await run.session.call("GET", f"/v3/users/nightly-recharge/{day}",
                                          allow=NOT_FOUND)
        if recharge is not None:
            each_item([recharge], "nightly-recharge", run.batch,
                      lambda r: polar.recharge(r, run.subject, run.batch, windows))
        await self._biosensing(run, day, day, windows)

    async def _history(self, run: JobRun) -> None:
        first, last = run.window()
        windows: polar.Nights = {}
        nights = await run.session.call("GET", "/v3/users/sleep")
        listed = nights.get("nights") if isinstance(nights, dict) else None
        chosen = [n for n in listed if isinstance(n, dict) and first.isoformat()
                  <= str(n.get("date")) <= last.isoformat()] if isinstance(listed, list) else []
        self._nights(run, chosen, windows)
        recharges = await run.session.call("GET", "/v3/users/nightly-recharge")
        listed = recharges.get("recharges") if isinstance(recharges, dict) else None
        each_item([r for r in listed if isinstance(r, dict) and first.isoformat()
                   <= str(r.get("date")) <= last.isoformat()] if isinstance(listed, list)
                  else [], "nightly-recharge", run.batch,
                  lambda r: polar.recharge(r, run.subject, run.batch, windows))
        # The lists reach back 28 days; ranges may span 28 days at most.
        start: date = max(first, run.now.date() - timedelta(days=REACH_DAYS - 1))
        if start <= last:
            activities = await run.session.call(
                "GET", "/v3/users/activities",
                params={"from": start.isoformat(), "to": last.isoformat()})
            each_item(activities, "activity", run.batch,
                      lambda a: polar.activity(a, self._offset(run), run.subject, run.batch))
            await self._biosensing(run, start.isoformat(), last.isoformat(), windows)
