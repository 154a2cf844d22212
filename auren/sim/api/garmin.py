"""Garmin Health API (OAuth 2.0 PKCE), simulated: user id, permissions, pull, backfill.

Quirks reproduced: PKCE (S256) is required and there are no scopes, only the permissions the
user grants (``GET …/user/permissions``; ``sim_scopes`` at the consent page can leave
``HISTORICAL_DATA_EXPORT`` out); every refresh rotates the refresh token; the user id comes
from ``GET /wellness-api/rest/user/id`` (``/partner-gateway/rest/user/id`` too); data is never
polled: a ping names a ``callbackURL`` (on ``apis.garmin.com``; the fetcher sends its path and
query to its own ``GARMIN_API_URL``) whose ``uploadStartTimeInSeconds``/``…End…`` window, at
most 86,400 s, selects summaries by *upload* time; the ping's key ``pulseox`` pulls from
``pulseOx``; backfill (``GET /wellness-api/rest/backfill/{type}``) answers 202 with nothing and
pings later, at most 30 days per request, 409 for a window already requested, 403 without
``HISTORICAL_DATA_EXPORT``; deregistration (``DELETE …/user/registration``, 204) sends a
``deregistrations`` notification and the token cannot be used again. Errors are
``{"errorMessage": …}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from auren.sim.api.core import (
    AccessStatus,
    Grant,
    OAuthPolicy,
    Outgoing,
    ProviderApi,
    Reply,
    delivery_id,
    json_response,
)
from auren.sim.api.wearers import Wearer
from auren.sim.render import RenderContext, render_garmin, uid
from auren.sim.wearers import DayRecord

PERMISSIONS = ("ACTIVITY_EXPORT", "HEALTH_EXPORT", "HISTORICAL_DATA_EXPORT",
               "WORKOUT_IMPORT")
REST = "/wellness-api/rest"
CALLBACK_BASE = "https://apis.garmin.com"
MAX_PULL_WINDOW_S = 86_400
MAX_BACKFILL_S = 30 * 86_400
# Ping key -> pull path segment, for the summaries the simulated watch records.
SUMMARIES = {"dailies": "dailies", "sleeps": "sleeps", "hrv": "hrv", "pulseox": "pulseOx",
             "skinTemp": "skinTemp"}
EMPTY = ("epochs", "stressDetails", "respiration", "bodyComps", "userMetrics", "activities",
         "activityDetails", "moveiq", "healthSnapshot", "bloodPressures")


def summaries(wearer: Wearer, r: DayRecord) -> dict[str, dict[str, Any]]:
    """The day's summaries by ping key (dailies, sleeps and hrv as ``auren simulate`` pushes
    them, plus pulse oximetry and skin temperature)."""
    pushed = orjson.loads(render_garmin(r, RenderContext("api", 0.0))[0].body)
    out = {key: items[0] for key, items in pushed.items()}
    common = {k: out["sleeps"][k] for k in ("userId", "userAccessToken", "calendarDate",
                                            "startTimeOffsetInSeconds")}
    start = int(r.sleep_start.timestamp())
    out["pulseox"] = {**common, "summaryId": f"x{uid('pulseox', wearer.id, r.day)[:8]}-{start:x}",
                      "startTimeInSeconds": start, "durationInSeconds": r.time_in_bed_s,
                      "timeOffsetSpo2Values": {"0": round(r.spo2_pct)}, "onDemand": False}
    out["skinTemp"] = {**common,
                       "summaryId": f"x{uid('skinTemp', wearer.id, r.day)[:8]}-{start:x}",
                       "startTimeInSeconds": start, "durationInSeconds": r.time_in_bed_s,
                       "avgDeviationCelsius": r.temperature_deviation_c}
    return out


class GarminApi(ProviderApi):
    name = "garmin"
    policy = OAuthPolicy(scopes=(), client_auth=frozenset({"post"}), pkce="required",
                         refresh="rotate")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backfills: set[tuple[str, str, int, int]] = set()
        # Set by the app: sends pings and lifecycle notifications.
        self.send: Any = None

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Any = None) -> Response:
        return json_response({"errorMessage": message}, status, headers)

    def unauthorized(self, reason: AccessStatus) -> Response:
        return self.error(401, f"Unauthorized: the access token is {reason}")

    def token_body(self, grant: Any, access: str, refresh: str | None, ttl_s: int) -> Any:
        return {"access_token": access, "token_type": "bearer", "expires_in": ttl_s,
                "refresh_token": refresh, "refresh_token_expires_in": 90 * 86_400,
                "scope": " ".join(grant.scopes), "jti": delivery_id()}

    def requested_scopes(self, raw: str | None) -> tuple[str, ...] | None:
        return PERMISSIONS  # chosen in the portal and on the consent page, not in the URL

    # -- pings ----------------------------------------------------------------------------------

    def ping(self, grant: Grant, key: str, start: int, end: int) -> Outgoing:
        item = {"userId": grant.provider_user_id,
                "userAccessToken": uid("garmin-token", grant.wearer.id),
                "uploadStartTimeInSeconds": start, "uploadEndTimeInSeconds": end,
                "callbackURL": f"{CALLBACK_BASE}{REST}/{SUMMARIES[key]}?uploadStartTimeInSeconds="
                               f"{start}&uploadEndTimeInSeconds={end}"}
        return Outgoing(key, orjson.dumps({key: [item]}), delivery_id())

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None:
            return []
        out = []
        for r in records:
            uploaded = int(wearer.upload_time(r))
            # Each summary type has its own endpoint at Garmin: one ping per type.
            out += [self.ping(grant, key, uploaded, uploaded + 1) for key in SUMMARIES]
        return out

    def revocation_notifications(self, grant: Grant) -> list[Outgoing]:
        item = {"userId": grant.provider_user_id,
                "userAccessToken": uid("garmin-token", grant.wearer.id)}
        return [Outgoing("deregistrations", orjson.dumps({"deregistrations": [item]}),
                         delivery_id())]

    # -- routes ---------------------------------------------------------------------------------

    def _seconds(self, request: Request, name: str) -> int:
        raw = request.query_params.get(name, "")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            raise Reply(self.error(400, f"{name} is required (Unix seconds)"))
        return int(raw)

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth2Confirm", "/di-oauth2-service/oauth/token")

        async def user_id(request: Request) -> Response:
            call = await self.begin(request)
            return self.finish(call, {"userId": call.grant.provider_user_id})

        for path in (f"{REST}/user/id", "/partner-gateway/rest/user/id"):
            router.add_api_route(path, user_id, methods=["GET"], include_in_schema=False)

        @router.get(f"{REST}/user/permissions", include_in_schema=False)
        async def permissions(request: Request) -> Response:
            call = await self.begin(request)
            return self.finish(call, {"permissions": list(call.grant.scopes)})

        @router.delete(f"{REST}/user/registration", include_in_schema=False)
        async def deregister(request: Request) -> Response:
            call = await self.begin(request)
            notes = self.revocation_notifications(call.grant)
            self.state.revoke(call.grant)
            if self.send is not None:
                self.send(self.name, call.wearer, notes)
            return Response(status_code=204)

        @router.get(f"{REST}/backfill/{{kind}}", include_in_schema=False)
        async def backfill(request: Request, kind: str) -> Response:
            call = await self.begin(request)
            start = self._seconds(request, "summaryStartTimeInSeconds")
            end = self._seconds(request, "summaryEndTimeInSeconds")
            key = next((k for k, v in SUMMARIES.items() if v == kind), None)
            if key is None and kind not in EMPTY:
                return self.error(404, f"unknown summary type {kind[:32]}")
            if "HISTORICAL_DATA_EXPORT" not in call.grant.scopes:
                return self.error(403, "the user has not granted HISTORICAL_DATA_EXPORT")
            if not 0 < end - start <= MAX_BACKFILL_S:
                return self.error(400, "the backfill window must be 1 s to 30 days")
            request_key = (call.grant.id, kind, start, end)
            if request_key in self._backfills:
                return self.error(409, "a backfill of this window was already requested")
            self._backfills.add(request_key)
            if key is not None and self.send is not None:
                w = call.wearer
                notes = []
                for r in w.days:
                    summary = summaries(w, r)[key]
                    if start <= summary["startTimeInSeconds"] < end:
                        uploaded = int(w.upload_time(r))
                        notes.append(self.ping(call.grant, key, uploaded, uploaded + 1))
                self.send(self.name, w, notes)
            return Response(status_code=202, headers=self.limit_headers(call.limit))

        @router.get(f"{REST}/{{kind}}", include_in_schema=False)
        async def pull(request: Request, kind: str) -> Response:
            key = next((k for k, v in SUMMARIES.items() if v == kind), None)
            if key is None and kind not in EMPTY:
                return self.error(404, f"unknown summary type {kind[:32]}")
            call = await self.begin(request)
            start = self._seconds(request, "uploadStartTimeInSeconds")
            end = self._seconds(request, "uploadEndTimeInSeconds")
            if not 0 < end - start <= MAX_PULL_WINDOW_S:
                return self.error(400, "the upload window must be 1 to 86400 seconds")
            if key is None:
                return self.finish(call, [])
            w = call.wearer
            items = [summaries(w, r)[key] for r in w.days
                     if start <= w.upload_time(r) < end]
            return self.finish(call, items)

        return router


