"""Garmin Health API (OAuth 2.0 with PKCE): pings name a pull URL; history is requested.

Data is never polled: a ping's ``callbackURL`` (on ``apis.garmin.com``) is read on
``GARMIN_API_URL``, and answers the summaries of an upload window, parsed by the same code as
pushed summaries. History is asked for with the backfill endpoint (30 days at most a request):
Garmin answers 202 and pings later for each summary, so those events arrive through ordinary
pings. A person who did not grant ``HISTORICAL_DATA_EXPORT`` gets 403 there: recorded as a
note, not a failure. ``deregistrations`` notifications say the person withdrew access.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi, day_start, first_secret
from auren.connections.base import Connection
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.providers import garmin
from auren.providers._common import each_item

REST = "/wellness-api/rest"
# Summary types AUREN keeps, by the pull API's path segment.
PULLED = ("dailies", "sleeps", "hrv", "pulseOx", "skinTemp")
# 403: backfill not granted; 409: this window was requested before.
_BACKFILL_REFUSALS = frozenset({403, 409})


class GarminApi(ProviderApi):
    name = "garmin"
    revocation_kinds = frozenset({garmin.DEREGISTRATION})
    chunk_days = 30

    def oauth(self) -> OAuthSpec:
        s = self.settings
        secret = s.garmin_client_secret.get_secret_value() if s.garmin_client_secret else ""
        # PKCE is required; no scopes in the URL (the person grants permissions on Garmin's
        # consent page); credentials in the body; every refresh rotates the refresh token.
        return OAuthSpec(self.name, s.garmin_authorize_url, s.garmin_token_url,
                         first_secret(s.garmin_client_id), secret, None, "client_secret_post",
                         pkce=True)

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        found = await session.call("GET", f"{REST}/user/id")
        user = found.get("userId") if isinstance(found, dict) else None
        if not isinstance(user, str) or not user:
            raise UpstreamRejected("garmin: user/id has no userId")
        granted = await session.call("GET", f"{REST}/user/permissions")
        permissions = granted.get("permissions") if isinstance(granted, dict) else None
        return user, {"permissions": permissions if isinstance(permissions, list) else []}

    async def revoke(self, session: Session, connection: Connection) -> None:
        await session.call("DELETE", f"{REST}/user/registration", allow=frozenset({404}))

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        if job.kind == "history":
            first, last = run.window()
            start = int(day_start(first).timestamp())
            end = int(day_start(last + timedelta(days=1)).timestamp())
            refused = []
            for kind in PULLED:
                answer = await run.session.request(
                    "GET", f"{REST}/backfill/{kind}",
                    params={"summaryStartTimeInSeconds": str(start),
                            "summaryEndTimeInSeconds": str(end)}, allow=_BACKFILL_REFUSALS)
                if answer.status in _BACKFILL_REFUSALS:
                    refused.append(f"{kind} ({answer.status})")
            run.note = ("backfill requested; Garmin pings each summary" if not refused else
                        f"backfill requested; refused or requested before: {', '.join(refused)}")
            return
        url = job.params.get("callback_url")
        if not isinstance(url, str):
            raise UpstreamRejected("garmin: the ping names no callbackURL")
        items = await run.session.call("GET", self.own_url(url, host="apis.garmin.com",
                                                           prefix=REST + "/"))
        # The pull API's segment (pulseOx) is the ping's key (pulseox) to the parser.
        kind = next((k for k, v in garmin.PULL_KINDS.items() if v == job.kind), job.kind)
        each_item(items, kind, run.batch,
                  lambda item: self._summary(run, kind, item))

    @staticmethod
    def _summary(run: JobRun, kind: str, item: Any) -> None:
        if not isinstance(item, dict):
            raise ValueError("a summary must be an object")
        if not garmin.summary_events(kind, item, run.subject, run.batch):
            run.ignored += 1
