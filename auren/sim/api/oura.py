"""Oura API v2, simulated: OAuth (server-side flow), ``/v2/usercollection/*`` and revoke.

Quirks reproduced: scopes are space-separated and the user may untick some (``scope`` in the
token response says what was granted); collections page with ``next_token`` (``null`` on the
last page); dates select by ``day`` with both bounds inclusive; the webhook's ``vo2_max`` is
the path ``vO2_max``; errors are ``{"detail": …}`` (422 carries a list, as FastAPI writes it);
a temperature is a *deviation* (``temperature_deviation``), never an absolute value; HRV is
``average_hrv`` (RMSSD, an integer). PKCE support is not documented: a challenge is checked
when one is sent, never required. Whether a refresh token is single-use is not documented
either: the simulator hands back the same refresh token (clients must still store the one
returned).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from auren.sim.api import shapes
from auren.sim.api.core import (
    AccessStatus,
    Call,
    LimitState,
    OAuthPolicy,
    Outgoing,
    ProviderApi,
    Reply,
    delivery_id,
    json_response,
)
from auren.sim.api.wearers import Wearer
from auren.sim.render import uid
from auren.sim.wearers import DayRecord

SCOPES = ("email", "personal", "daily", "heartrate", "workout", "tag", "session", "spo2")
# Collections with data, and the scope each needs.
COLLECTIONS = {"sleep": "daily", "daily_sleep": "daily", "daily_readiness": "daily",
               "daily_activity": "daily", "daily_spo2": "spo2"}
# Collections that exist but the simulated ring records nothing for.
EMPTY = {"workout": "workout", "session": "session", "tag": "tag", "enhanced_tag": "tag",
         "sleep_time": "daily", "rest_mode_period": "daily", "ring_configuration": "daily",
         "daily_stress": "daily", "daily_resilience": "daily",
         "daily_cardiovascular_age": "daily", "vO2_max": "daily", "heartrate": "heartrate"}


def object_id(data_type: str, wearer_id: str, day: date) -> str:
    """The id of a day's document (the ``object_id`` of its webhook)."""
    return uid("oura", data_type, wearer_id, day)


def render(data_type: str, wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    off = r.utc_offset_min
    base = {"id": object_id(data_type, wearer.id, r.day), "day": r.day.isoformat()}
    stamp = shapes.local_iso(r.day_start, off)
    if data_type == "sleep":
        return {**base, "type": "long_sleep", "period": 0,
                "bedtime_start": shapes.local_iso(r.sleep_start, off),
                "bedtime_end": shapes.local_iso(r.sleep_end, off),
                "time_in_bed": r.time_in_bed_s, "total_sleep_duration": r.sleep_duration_s,
                "deep_sleep_duration": r.deep_s, "light_sleep_duration": r.light_s,
                "rem_sleep_duration": r.rem_s, "awake_time": r.awake_s,
                "latency": shapes.latency_s(r), "efficiency": round(r.sleep_efficiency_pct),
                "average_heart_rate": shapes.sleep_heart_rate(r),
                "lowest_heart_rate": r.resting_hr_bpm, "average_hrv": round(r.hrv_rmssd_ms),
                "average_breath": r.respiratory_rate, "restless_periods": r.awake_s // 300,
                "heart_rate": None, "hrv": None, "low_battery_alert": False,
                "readiness": {"score": shapes.readiness_score(wearer, r),
                              "temperature_deviation": r.temperature_deviation_c,
                              "temperature_trend_deviation": _trend(r)},
                "readiness_score_delta": None, "sleep_score_delta": None}
    if data_type == "daily_sleep":
        return {**base, "score": shapes.sleep_score(r), "timestamp": stamp,
                "contributors": {"deep_sleep": min(100, r.deep_s // 60),
                                 "efficiency": round(r.sleep_efficiency_pct),
                                 "latency": 80, "rem_sleep": min(100, r.rem_s // 60),
                                 "restfulness": 75, "timing": 85,
                                 "total_sleep": min(100, r.sleep_duration_s // 300)}}
    if data_type == "daily_readiness":
        return {**base, "score": shapes.readiness_score(wearer, r), "timestamp": stamp,
                "temperature_deviation": r.temperature_deviation_c,
                "temperature_trend_deviation": _trend(r),
                "contributors": {"activity_balance": 80, "body_temperature": 90,
                                 "hrv_balance": 75, "previous_day_activity": 80,
                                 "previous_night": shapes.sleep_score(r), "recovery_index": 85,
                                 "resting_heart_rate": 85, "sleep_balance": 80,
                                 "sleep_regularity": 80}}
    if data_type == "daily_activity":
        active = round(r.active_energy_kcal)
        return {**base, "score": shapes.activity_score(r), "timestamp": stamp,
                "steps": r.steps, "active_calories": active,
                "total_calories": active + shapes.bmr_kcal(wearer), "target_calories": 450,
                "equivalent_walking_distance": round(r.distance_m),
                "high_activity_time": shapes.active_seconds(r) // 4,
                "medium_activity_time": shapes.active_seconds(r) // 2,
                "low_activity_time": shapes.active_seconds(r),
                "sedentary_time": 36_000, "resting_time": r.time_in_bed_s,
                "non_wear_time": 0, "inactivity_alerts": 0}
    if data_type == "daily_spo2":
        return {**base, "spo2_percentage": {"average": r.spo2_pct},
                "breathing_disturbance_index": max(0, round((97.5 - r.spo2_pct) * 8))}
    raise KeyError(data_type)


def _trend(r: DayRecord) -> float:
    return round(r.temperature_deviation_c * 0.6, 2)


class OuraApi(ProviderApi):
    name = "oura"
    policy = OAuthPolicy(scopes=SCOPES, client_auth=frozenset({"post", "basic"}),
                         pkce="optional", refresh="reuse")

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Any = None) -> Response:
        return json_response({"detail": message}, status, headers)

    def rate_limited(self, retry_after_s: int, limit: LimitState | None) -> Response:
        return json_response({"detail": "Too Many Requests"}, 429,
                             {"retry-after": str(retry_after_s)})

    def unauthorized(self, reason: AccessStatus) -> Response:
        return self.error(401, "The access token provided is expired, malformed or revoked "
                               f"({reason})")

    def invalid(self, field: str, message: str) -> Reply:
        return Reply(json_response({"detail": [{"loc": ["query", field], "msg": message,
                                                "type": "value_error"}]}, 422))

    def _date(self, request: Request, field: str, default: date) -> date:
        raw = request.query_params.get(field)
        if raw is None:
            return default
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise self.invalid(field, "invalid date format, expected YYYY-MM-DD") from None

    def _scope(self, call: Call, scope: str) -> None:
        if scope not in call.grant.scopes:
            raise Reply(self.error(401, f"the access token lacks the {scope} scope"))

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None:
            return []
        now = shapes.utc_z(self.state.clock(), millis=False)
        out = []
        for r in records:
            for data_type, scope in COLLECTIONS.items():
                if scope in grant.scopes:
                    body = {"event_type": "create", "data_type": data_type,
                            "object_id": object_id(data_type, wearer.id, r.day),
                            "event_time": now, "user_id": grant.provider_user_id}
                    out.append(Outgoing(data_type, orjson.dumps(body), delivery_id()))
        return out

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth/authorize", "/oauth/token")

        @router.api_route("/oauth/revoke", methods=["GET", "POST"], include_in_schema=False)
        async def revoke(request: Request) -> Response:
            value = request.query_params.get("access_token") or self.bearer(request)
            found, _ = self.state.lookup(value)
            if found is None or found.grant.provider != self.name:
                return self.error(400, "invalid access_token")
            self.state.revoke(found.grant)
            return json_response({})

        @router.get("/v2/usercollection/personal_info", include_in_schema=False)
        async def personal_info(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "personal")
            w = call.wearer
            return self.finish(call, {
                "id": call.grant.provider_user_id, "age": 25 + w.index % 40,
                "weight": round(w.weight_kg, 1), "height": round(1.6 + w.weight_kg / 500, 2),
                "biological_sex": "female" if w.index % 2 else "male",
                "email": f"{w.id}@example.invalid" if "email" in call.grant.scopes else None})

        @router.get("/v2/usercollection/{data_type}", include_in_schema=False)
        async def collection(request: Request, data_type: str) -> Response:
            scope = COLLECTIONS.get(data_type) or EMPTY.get(data_type)
            if scope is None:
                return self.error(404, "Not Found")
            call = await self.begin(request)
            self._scope(call, scope)
            q = request.query_params
            if data_type in EMPTY:
                return self.finish(call, {"data": [], "next_token": None})
            end = self._date(request, "end_date", call.wearer.today)
            start = self._date(request, "start_date", end - timedelta(days=1))
            records = call.wearer.between(start, end)
            docs = [render(data_type, call.wearer, r) for r in records]
            page, token = self.page(docs, q.get("next_token"), f"{data_type}|{start}|{end}")
            return self.finish(call, {"data": page, "next_token": token})

        @router.get("/v2/usercollection/{data_type}/{document_id}", include_in_schema=False)
        async def document(request: Request, data_type: str, document_id: str) -> Response:
            scope = COLLECTIONS.get(data_type) or EMPTY.get(data_type)
            if scope is None:
                return self.error(404, "Not Found")
            call = await self.begin(request)
            self._scope(call, scope)
            if data_type in COLLECTIONS:
                for r in call.wearer.days:
                    if object_id(data_type, call.wearer.id, r.day) == document_id:
                        return self.finish(call, render(data_type, call.wearer, r))
            return self.finish(call, {"detail": "Document not found"}, 404)

        return router
