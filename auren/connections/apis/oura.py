"""Oura API v2: a document by id for a notification, collections by date for history."""

from __future__ import annotations

from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi, first_secret
from auren.connections.http import Session
from auren.connections.oauth import OAuthSpec, TokenAnswer
from auren.errors import UpstreamRejected
from auren.providers import oura

NOT_FOUND = frozenset({404})
# personal: the user id; daily: sleep, readiness, activity; spo2. Oura lets the person untick
# scopes, and the granted ones come back with the token.
SCOPES = "personal daily heartrate spo2"
_MAX_PAGES = 1000


class OuraApi(ProviderApi):
    name = "oura"
    chunk_days = 30

    def oauth(self) -> OAuthSpec:
        s = self.settings
        # PKCE support is undocumented (integrations do not send it); credentials in the body
        # work (Basic too, per one integration).
        return OAuthSpec(self.name, s.oura_authorize_url, s.oura_token_url,
                         s.oura_client_id or "", first_secret(s.oura_client_secret), SCOPES,
                         "client_secret_post", pkce=False)

    async def identify(self, session: Session, answer: TokenAnswer) -> tuple[str, dict[str, Any]]:
        info = await session.call("GET", "/v2/usercollection/personal_info")
        user = info.get("id") if isinstance(info, dict) else None
        if not isinstance(user, str) or not user:
            raise UpstreamRejected("oura: personal_info has no id")
        return user, {}

    async def revoke(self, session: Session, connection: Any) -> None:
        token = connection.tokens.access_token if connection.tokens else ""
        await session.call("POST", "/oauth/revoke", params={"access_token": token},
                           allow=frozenset({400, 404}))

    async def _collection(self, run: JobRun, data_type: str, first: str, last: str) -> None:
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params = {"start_date": first, "end_date": last}
            if token:
                params["next_token"] = token
            page = await run.session.call(
                "GET", f"/v2/usercollection/{oura.api_path(data_type)}", params=params)
            docs = page.get("data") if isinstance(page, dict) else None
            run.ignored += oura.documents(data_type, docs if isinstance(docs, list) else [],
                                          run.subject, run.batch)
            token = page.get("next_token") if isinstance(page, dict) else None
            if not token:
                return
        raise UpstreamRejected(f"oura: {data_type} did not stop paging")

    async def fetch(self, run: JobRun) -> None:
        job = run.job
        if job.kind == "history":
            first, last = run.window()
            for data_type in oura.COLLECTIONS:
                await self._collection(run, data_type, first.isoformat(), last.isoformat())
            return
        data_type = job.kind
        if job.params.get("event_type") == "delete" or data_type not in oura.COLLECTIONS:
            run.note = f"nothing to fetch for {data_type} {job.params.get('event_type')}"
            return
        if job.object_id:
            doc = await run.session.call(
                "GET", f"/v2/usercollection/{oura.api_path(data_type)}/{job.object_id}",
                allow=NOT_FOUND)
            if doc is None:
                run.note = "the document is gone (404)"
                return
            run.ignored += oura.documents(data_type, [doc], run.subject, run.batch)
            return
        start, end = job.window_start, job.window_end
        if start is None or end is None:
            raise UpstreamRejected("oura: a notification with neither an object nor a window")
        await self._collection(run, data_type, start.date().isoformat(),
                               end.date().isoformat())
