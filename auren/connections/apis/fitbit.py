"""Fitbit Web API: a day's collection for a notification, ranges for history.

Times are the person's local wall-clock times, placed with the profile's UTC offset (read when
the account is connected and again when a job finds none). A ``sleep`` notification brings the
night's sleep logs and its nightly series (HRV, skin temperature deviation, breathing rate,
SpO2); an ``activities`` one the day's summary. History reads the ranges (30 days at most for
the nightly series, 100 for sleep) and the daily summaries one by one (there is no range).
Notifications come only for accounts with a subscription, made when the account connects.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, timedelta
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi, first_secret
from auren.connections.base import Connection
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.providers import fitbit

SCOPES = "activity heartrate sleep profile temperature oxygen_saturation respiratory_rate"
# Nightly series by date: (path segment, fitbit.DAILY_SERIES key).
NIGHTLY = (("hrv", "hrv"), ("temp/skin", "temp"), ("br", "br"), ("spo2", "spo2"))
EXISTS = frozenset({409})


def subscription_id(connection: Connection) -> str:
    digest = hashlib.sha256(f"{connection.user_id}|{connection.provider_user_id}".encode())
    return "auren-" + digest.hexdigest()[:16]


class FitbitApi(ProviderApi):
    name = "fitbit"
    revocation_kinds = frozenset({"userRevokedAccess"})
    chunk_days = 30  # the nightly series' range limit

    def oauth(self) -> OAuthSpec:
        s = self.settings
        # PKCE (S256); the app's credentials only as HTTP Basic; errors in Fitbit's format.
        return OAuthSpec(self.name, s.fitbit_authorize_url, s.fitbit_token_url,
                         s.fitbit_client_id or "", first_secret(s.fitbit_client_secret), SCOPES,
                         "client_secret_basic", pkce=True, dialect="fitbit")

    async def _offset(self, session: Session) -> int:
        profile = await session.call("GET", "/1/user/-/profile.json")
        user = profile.get("user") if isinstance(profile, dict) else None
        millis = user.get("offsetFromUTCMillis") if isinstance(user, dict) else None
        return int(millis) // 60_000 if isinstance(millis, int) and not isinstance(
            millis, bool) and abs(millis) <= 14 * 3_600_000 else 0

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        user = answer.extra.get("user_id")
        if not isinstance(user, str) or not user:
            raise UpstreamRejected("fitbit: the token answer has no user_id")
        return user, {"utc_offset_min": await self._offset(session)}

    async def after_connect(self, session: Session, connection: Connection,
                            public_url: str) -> dict[str, Any]:
        sid = subscription_id(connection)
        await session.call("POST", f"/1/user/-/apiSubscriptions/{sid}.json", allow=EXISTS)
        return {"subscription_id": sid}

    async def revoke(self, session: Session, connection: Connection) -> None:
        spec = self.oauth()
        token = connection.tokens.refresh_token or connection.tokens.access_token \
            if connection.tokens else ""
        basic = base64.b64encode(f"{spec.client_id}:{spec.client_secret}".encode()).decode()
        await session.call("POST", "/oauth2/revoke", data={"token": token},
                           headers={"authorization": f"Basic {basic}"}, bearer=False,
                           allow=frozenset({400, 404}))

    async def _offset_of(self, run: JobRun) -> int:
        found = run.connection.meta.get("utc_offset_min")
        if isinstance(found, int):
            return found
        run.meta["utc_offset_min"] = offset = await self._offset(run.session)
        return offset

    async def _activities(self, run: JobRun, day: str, offset: int) -> None:
        answer = await run.session.call("GET", f"/1/user/-/activities/date/{day}.json")
        fitbit.activity_summary(day, answer, offset, run.subject, run.batch)

    async def _nightly(self, run: JobRun, first: str, last: str, offset: int) -> None:
        span = first if first == last else f"{first}/{last}"
        sleep_path = f"/1.2/user/-/sleep/date/{span}.json"
        fitbit.sleep_logs(await run.session.call("GET", sleep_path), offset, run.subject,
                          run.batch)
        for segment, kind in NIGHTLY:
            answer = await run.session.call("GET", f"/1/user/-/{segment}/date/{span}.json")
            fitbit.daily_series(kind, answer, offset, run.subject, run.batch)

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        offset = await self._offset_of(run)
        if job.kind == "history":
            first, last = run.window()
            await self._nightly(run, first.isoformat(), last.isoformat(), offset)
            heart = await run.session.call(
                "GET", f"/1/user/-/activities/heart/date/{first}/{last}.json")
            fitbit.daily_series("heart", heart, offset, run.subject, run.batch)
            day: date = first
            while day <= last:
                await self._activities(run, day.isoformat(), offset)
                day += timedelta(days=1)
            return
        day_text = job.object_id or ""
        if job.kind == "sleep":
            await self._nightly(run, day_text, day_text, offset)
        elif job.kind == "activities":
            await self._activities(run, day_text, offset)
        else:
            run.note = f"nothing to fetch for {job.kind}"
