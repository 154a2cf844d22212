"""Withings Public API: ``action=`` calls whose answers are ``{"status", "body"}``.

A notification names a category (``appli``) and a time window: 1 (weight) and 4 (heart rate,
SpO2, temperatures, blood pressure) are measures (``getmeas``, values scaled by powers of ten),
16 the day's activity, 44 the night's sleep summary; 46 with ``action=unlink`` means the
person withdrew access. Measures are read by the window's instants, days and nights by their
dates (a day either side, since a night's date is the day it ends). Lists page with ``more``
and ``offset``. On connect, AUREN subscribes its webhook (``AUREN_PUBLIC_URL/webhooks/withings``)
to each category; Withings first probes it with HEAD. Revoking is signed: a nonce from the
signature service, then ``action=revoke`` with an HMAC-SHA256 over the action, the client id
and the nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi
from auren.connections.base import Connection
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.events import FetchJob
from auren.providers import withings
from auren.providers._common import EventBatch, Subject, each_item

SCOPES = "user.info,user.metrics,user.activity,user.sleepevents"
# The categories AUREN subscribes to: measures, activity, sleep, and user events (unlink).
SUBSCRIBED = ("1", "4", "16", "44", "46")
_MAX_PAGES = 1000


def sign(secret: str, *values: str) -> str:
    return hmac.new(secret.encode(), ",".join(values).encode(), hashlib.sha256).hexdigest()


class WithingsApi(ProviderApi):
    name = "withings"
    dialect = "withings"
    chunk_days = 30

    def oauth(self) -> OAuthSpec:
        s = self.settings
        secret = s.withings_client_secret.get_secret_value() if s.withings_client_secret \
            else ""
        # The token endpoint is an action of /v2/oauth2 and answers in Withings' envelope.
        return OAuthSpec(self.name, s.withings_authorize_url, s.withings_token_url,
                         s.withings_client_id or "", secret, SCOPES, "client_secret_post",
                         pkce=False, token_params={"action": "requesttoken"},
                         dialect="withings")

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        user = answer.extra.get("userid")
        if isinstance(user, bool) or not isinstance(user, int | str) or str(user) == "":
            raise UpstreamRejected("withings: the token answer has no userid")
        return str(user), {}

    async def after_connect(self, session: Session, connection: Connection,
                            public_url: str) -> dict[str, Any]:
        callback = public_url.rstrip("/") + "/webhooks/withings"
        for appli in SUBSCRIBED:
            await session.call("POST", "/notify", data={"action": "subscribe",
                                                        "callbackurl": callback,
                                                        "appli": appli})
        return {"subscribed": list(SUBSCRIBED)}

    async def revoke(self, session: Session, connection: Connection) -> None:
        spec = self.oauth()
        stamp = str(int(time.time()))
        answer = await session.call("POST", "/v2/signature", bearer=False, data={
            "action": "getnonce", "client_id": spec.client_id, "timestamp": stamp,
            "signature": sign(spec.client_secret, "getnonce", spec.client_id, stamp)})
        nonce = answer.get("nonce") if isinstance(answer, dict) else None
        if not isinstance(nonce, str):
            raise UpstreamRejected("withings: the signature service gave no nonce")
        await session.call("POST", spec.token_url, bearer=False, data={
            "action": "revoke", "client_id": spec.client_id, "nonce": nonce,
            "userid": connection.provider_user_id,
            "signature": sign(spec.client_secret, "revoke", spec.client_id, nonce)})

    async def _paged(self, run: JobRun, path: str, form: dict[str, str], key: str,
                     add: Callable[[Any, Subject, EventBatch], None]) -> None:
        offset = 0
        for _ in range(_MAX_PAGES):
            body = await run.session.call("POST", path, data={**form, "offset": str(offset)})
            each_item(body.get(key) if isinstance(body, dict) else None, key, run.batch,
                      lambda item: add(item, run.subject, run.batch))
            more = body.get("more") if isinstance(body, dict) else None
            next_offset = body.get("offset") if isinstance(body, dict) else None
            if not more or not isinstance(next_offset, int) or next_offset <= offset:
                return
            offset = next_offset
        raise UpstreamRejected(f"withings: {path} did not stop paging")

    async def _measures(self, run: JobRun, start: int, end: int, types: tuple[int, ...]) -> None:
        await self._paged(run, "/measure", {
            "action": "getmeas", "category": "1", "startdate": str(start),
            "enddate": str(end), "meastypes": ",".join(map(str, types))},
            "measuregrps", withings.measure_group)

    async def _days(self, run: JobRun, first: date, last: date) -> None:
        await self._paged(run, "/v2/measure", {
            "action": "getactivity", "startdateymd": first.isoformat(),
            "enddateymd": last.isoformat()}, "activities", withings.activity_day)

    async def _nights(self, run: JobRun, first: date, last: date) -> None:
        await self._paged(run, "/v2/sleep", {
            "action": "getsummary", "startdateymd": first.isoformat(),
            "enddateymd": last.isoformat()}, "series", withings.sleep_summary)

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        every = tuple(sorted({t for types in withings.MEASURE_TYPES.values() for t in types}))
        if job.kind == "history":
            first, last = run.window()
            start = int(datetime.combine(first, datetime.min.time(), UTC).timestamp())
            end = int(datetime.combine(last + timedelta(days=1), datetime.min.time(),
                                       UTC).timestamp())
            await self._measures(run, start, end, every)
            await self._days(run, first, last)
            await self._nights(run, first, last)
            return
        window = self._window(job.params)
        if window is None:
            run.note = f"nothing to fetch for appli {job.kind} (no window)"
            return
        start, end = window
        first = datetime.fromtimestamp(start, UTC).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, UTC).date() + timedelta(days=1)
        if job.kind in withings.MEASURE_TYPES:
            await self._measures(run, start, end, withings.MEASURE_TYPES[job.kind])
        elif job.kind == "16":
            await self._days(run, first, last)
        elif job.kind == "44":
            await self._nights(run, first, last)
        else:
            run.note = f"nothing to fetch for appli {job.kind}"

    @staticmethod
    def _window(params: dict[str, Any]) -> tuple[int, int] | None:
        start, end = params.get("startdate"), params.get("enddate")
        if isinstance(start, int) and isinstance(end, int):
            return start, end
        day = params.get("date")
        if isinstance(day, str) and len(day) == 10:
            first = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
            return first, first + 86_400
        return None

    def is_revocation(self, job: FetchJob) -> bool:
        return job.kind == "46" and job.params.get("action") == "unlink"
