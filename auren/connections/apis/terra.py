"""Terra (aggregator): the widget connects a device; history comes inline; data is pushed.

Terra holds the device's tokens; AUREN's app authenticates every call with ``dev-id`` and
``x-api-key`` and knows a person by the ``reference_id`` (the AUREN user id) it gave the widget
session. The widget's redirect (and Terra's signed ``auth`` webhook, whichever comes first)
connects the account; ``deauth`` and ``access_revoked`` end it. New days are pushed in full to
the bridge, with ``reference_id`` naming the person; history is read with
``to_webhook=false`` so that it comes back in the answer (at most 28 days a request) and is
parsed by the same code as pushed data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auren.connections.apis.base import JobRun, ProviderApi
from auren.connections.base import Connection
from auren.connections.http import Session
from auren.errors import UpstreamRejected
from auren.events import FetchJob
from auren.providers import terra
from auren.providers._common import MAX_FETCHED_EVENTS, each_item

NOT_FOUND = frozenset({404})
HISTORY_TYPES = ("sleep", "daily")
CONNECTED = "auth"


class TerraApi(ProviderApi):
    name = "terra"
    revocation_kinds = frozenset({"deauth", "access_revoked"})
    chunk_days = 28

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s.terra_dev_id and s.terra_api_key)

    def app_headers(self) -> dict[str, str]:
        s = self.settings
        return {"dev-id": s.terra_dev_id or "",
                "x-api-key": s.terra_api_key.get_secret_value() if s.terra_api_key else ""}

    def is_connection(self, job: FetchJob) -> bool:
        """Whether the job is Terra's notice that an account was connected."""
        return job.kind == CONNECTED

    async def widget_session(self, session: Session, user_id: str,
                             success_url: str, failure_url: str) -> str:
        answer = await session.call("POST", "/auth/generateWidgetSession",
                                    headers=self.app_headers(), bearer=False, json={
                                        "reference_id": user_id, "language": "en",
                                        "auth_success_redirect_url": success_url,
                                        "auth_failure_redirect_url": failure_url})
        url = answer.get("url") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise UpstreamRejected("terra: the widget session has no url")
        return url

    async def revoke(self, session: Session, connection: Connection) -> None:
        await session.call("DELETE", "/auth/deauthenticateUser",
                           params={"user_id": connection.provider_user_id},
                           headers=self.app_headers(), bearer=False, allow=NOT_FOUND)

    async def fetch(self, run: JobRun) -> None:
        if run.job.kind != "history":
            run.note = f"nothing to fetch for {run.job.kind}"
            return
        first, last = run.window()
        for kind in HISTORY_TYPES:
            answer = await run.session.call("GET", f"/{kind}", headers=self.app_headers(),
                                            bearer=False, params={
                                                "user_id": run.connection.provider_user_id,
                                                "start_date": first.isoformat(),
                                                "end_date": last.isoformat(),
                                                "to_webhook": "false"})
            data = answer.get("data") if isinstance(answer, dict) else None
            each_item(data, kind, run.batch, self._adder(run, kind))

    @staticmethod
    def _adder(run: JobRun, kind: str) -> Callable[[Any], None]:
        def add(item: Any) -> None:
            before = (len(run.batch), run.batch.skipped_count)
            terra.data_item(kind, item, run.subject, run.batch, MAX_FETCHED_EVENTS)
            if (len(run.batch), run.batch.skipped_count) == before:
                run.ignored += 1

        return add
