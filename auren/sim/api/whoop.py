"""WHOOP developer API v2, simulated: OAuth, cycles, recoveries, sleeps, profile, revoke.

Quirks reproduced: client credentials go in the form body; a refresh token is issued only
with the ``offline`` scope and every refresh rotates it (the old one is dead once used);
``state`` must have at least 8 characters; collections take ``limit`` (default 10, at most
25), ``start`` (inclusive), ``end`` (exclusive) and ``nextToken`` and answer
``{"records": […], "next_token": …}`` (request ``nextToken``, response ``next_token``), newest
first; durations are milliseconds (``*_milli``); energy is ``kilojoule`` (the whole cycle's
expenditure, basal included); skin temperature is absolute (``skin_temp_celsius``); every
answer carries ``X-RateLimit-Limit/Remaining/Reset`` (100 a minute and 10,000 a day per app).
The cycle of a night starts at sleep onset and has no ``end`` while it is the current one.
The id a ``recovery.updated`` webhook carries is not settled by WHOOP: by default the
simulator sends the sleep's UUID; the variant ``recovery_id=cycle`` sends the cycle id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from auren.events import parse_time
from auren.sim.api import shapes
from auren.sim.api.core import Call, LimitState, OAuthPolicy, Outgoing, ProviderApi, Reply
from auren.sim.api.wearers import Wearer
from auren.sim.render import uid
from auren.sim.wearers import DayRecord

SCOPES = ("read:recovery", "read:cycles", "read:workout", "read:sleep", "read:profile",
          "read:body_measurement", "offline")
MAX_LIMIT = 25


def sleep_id(wearer_id: str, r: DayRecord) -> str:
    # The id ``auren simulate`` puts in its sleep.updated webhooks, so both agree.
    return uid("whoop", "sleep.updated", wearer_id, r.day)


def cycle_id(wearer: Wearer, r: DayRecord) -> int:
    return int(wearer.provider_user_id("whoop")) * 100_000 + shapes.day_number(r.day)


def _cycle_end(wearer: Wearer, r: DayRecord) -> datetime | None:
    days = list(wearer.days)
    index = days.index(r)
    return days[index + 1].sleep_start if index + 1 < len(days) else None


def _common(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    uploaded = shapes.utc_z(wearer.upload_time(r))
    return {"user_id": int(wearer.provider_user_id("whoop")), "created_at": uploaded,
            "updated_at": uploaded}


def render_cycle(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    end = _cycle_end(wearer, r)
    body: dict[str, Any] = {
        "id": cycle_id(wearer, r), **_common(wearer, r),
        "start": shapes.utc_z(r.sleep_start),
        "timezone_offset": shapes.offset_text(r.utc_offset_min), "score_state": "SCORED",
        "score": {"strain": shapes.strain(r),
                  "kilojoule": round((shapes.bmr_kcal(wearer) + r.active_energy_kcal) * 4.184,
                                     1),
                  "average_heart_rate": shapes.average_heart_rate(r),
                  "max_heart_rate": shapes.max_heart_rate(r)}}
    if end is not None:
        body["end"] = shapes.utc_z(end)
    return body


def render_recovery(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    return {"cycle_id": cycle_id(wearer, r), "sleep_id": sleep_id(wearer.id, r),
            **_common(wearer, r), "score_state": "SCORED",
            "score": {"user_calibrating": False,
                      "recovery_score": float(shapes.readiness_score(wearer, r)),
                      "resting_heart_rate": float(r.resting_hr_bpm),
                      "hrv_rmssd_milli": r.hrv_rmssd_ms, "spo2_percentage": r.spo2_pct,
                      "skin_temp_celsius": shapes.skin_temperature_c(r)}}


def render_sleep(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    need = round(wearer.history.profile.sleep_need_h * 3_600_000)
    return {"id": sleep_id(wearer.id, r), "cycle_id": cycle_id(wearer, r),
            "v1_id": None, **_common(wearer, r),
            "start": shapes.utc_z(r.sleep_start), "end": shapes.utc_z(r.sleep_end),
            "timezone_offset": shapes.offset_text(r.utc_offset_min), "nap": False,
            "score_state": "SCORED",
            "score": {"stage_summary": {
                "total_in_bed_time_milli": r.time_in_bed_s * 1000,
                "total_awake_time_milli": r.awake_s * 1000, "total_no_data_time_milli": 0,
                "total_light_sleep_time_milli": r.light_s * 1000,
                "total_slow_wave_sleep_time_milli": r.deep_s * 1000,
                "total_rem_sleep_time_milli": r.rem_s * 1000,
                "sleep_cycle_count": max(1, r.sleep_duration_s // 5400),
                "disturbance_count": r.awake_s // 240},
                "sleep_needed": {"baseline_milli": need, "need_from_sleep_debt_milli": 0,
                                 "need_from_recent_strain_milli": 0,
                                 "need_from_recent_nap_milli": 0},
                "respiratory_rate": r.respiratory_rate,
                "sleep_performance_percentage": min(100.0, round(
                    100 * r.sleep_duration_s * 1000 / need)),
                "sleep_consistency_percentage": 80.0,
                "sleep_efficiency_percentage": r.sleep_efficiency_pct}}


class WhoopApi(ProviderApi):
    name = "whoop"
    policy = OAuthPolicy(scopes=SCOPES, client_auth=frozenset({"post"}), pkce="optional",
                         refresh="rotate", refresh_scope="offline", min_state_chars=8)

    def token_body(self, grant: Any, access: str, refresh: str | None, ttl_s: int) -> Any:
        body = super().token_body(grant, access, refresh, ttl_s)
        body["token_type"] = "bearer"  # noqa: S105 - WHOOP writes it in lower case
        return body

    def limit_headers(self, limit: LimitState | None) -> dict[str, str]:
        if limit is None:
            return {}
        windows = ", ".join(f"{item.limit};window={item.window_s}"
                            for item in self.settings.limits)
        return {"X-RateLimit-Limit": f"{limit.limit}, {windows}",
                "X-RateLimit-Remaining": str(limit.remaining),
                "X-RateLimit-Reset": str(limit.reset_s)}

    def _scope(self, call: Call, scope: str) -> None:
        if scope not in call.grant.scopes:
            raise Reply(self.error(403, f"the token lacks the {scope} scope",
                                   code="insufficient_scope"))

    def _collection(self, request: Request, call: Call, kind: str) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "10"))
            start = parse_time(q["start"]) if q.get("start") else None
            end = parse_time(q["end"]) if q.get("end") else None
        except (ValueError, TypeError):
            return self.error(400, "limit must be an integer and start/end ISO 8601 date-times",
                              code="bad_request")
        if not 1 <= limit <= MAX_LIMIT:
            return self.error(400, f"limit must be between 1 and {MAX_LIMIT}", code="bad_request")
        w = call.wearer
        chosen = [r for r in reversed(w.days)  # newest first
                  if (start is None or r.sleep_start >= start)
                  and (end is None or r.sleep_start < end)]
        render = {"cycle": render_cycle, "recovery": render_recovery, "sleep": render_sleep}[kind]
        records = [render(w, r) for r in chosen]
        page, token = self.page(records, q.get("nextToken"), f"{kind}|{start}|{end}", limit)
        return self.finish(call, {"records": page, "next_token": token})

    def _by_cycle(self, call: Call, cycle_value: str) -> DayRecord | None:
        w = call.wearer
        return next((r for r in w.days if str(cycle_id(w, r)) == cycle_value), None)

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None:
            return []
        user = int(grant.provider_user_id)
        out = []
        for r in records:
            recovery_ref: str | int = sleep_id(wearer.id, r)
            if self.settings.variant.get("recovery_id") == "cycle":
                recovery_ref = cycle_id(wearer, r)
            for kind, ref, scope in (("sleep.updated", sleep_id(wearer.id, r), "read:sleep"),
                                     ("recovery.updated", recovery_ref, "read:recovery")):
                if scope in grant.scopes:
                    trace = str(uuid.uuid4())
                    body = {"user_id": user, "id": ref, "type": kind, "trace_id": trace}
                    out.append(Outgoing(kind, orjson.dumps(body), trace))
        return out

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth/oauth2/auth", "/oauth/oauth2/token")
        api = "/developer/v2"

        @router.delete(f"{api}/user/access", include_in_schema=False)
        async def revoke(request: Request) -> Response:
            call = await self.begin(request)
            self.state.revoke(call.grant)
            return Response(status_code=204)

        @router.get(f"{api}/user/profile/basic", include_in_schema=False)
        async def profile(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:profile")
            return self.finish(call, {"user_id": int(call.grant.provider_user_id),
                                      "email": f"{call.wearer.id}@example.invalid",
                                      "first_name": "Sim", "last_name": call.wearer.id})

        @router.get(f"{api}/user/measurement/body", include_in_schema=False)
        async def body(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:body_measurement")
            w = call.wearer
            return self.finish(call, {"height_meter": round(1.6 + w.weight_kg / 500, 2),
                                      "weight_kilogram": round(w.weight_kg, 1),
                                      "max_heart_rate": 190})

        @router.get(f"{api}/cycle", include_in_schema=False)
        async def cycles(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:cycles")
            return self._collection(request, call, "cycle")

        @router.get(f"{api}/recovery", include_in_schema=False)
        async def recoveries(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:recovery")
            return self._collection(request, call, "recovery")

        @router.get(f"{api}/activity/sleep", include_in_schema=False)
        async def sleeps(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:sleep")
            return self._collection(request, call, "sleep")

        @router.get(f"{api}/activity/workout", include_in_schema=False)
        async def workouts(request: Request) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:workout")
            return self.finish(call, {"records": [], "next_token": None})

        async def of_cycle(request: Request, cycle: str, scope: str, what: str,
                           render: Callable[[Wearer, DayRecord], dict[str, Any]]) -> Response:
            call = await self.begin(request)
            self._scope(call, scope)
            found = self._by_cycle(call, cycle)
            if found is None:
                return self.error(404, f"{what} not found", code="not_found")
            return self.finish(call, render(call.wearer, found))

        @router.get(f"{api}/cycle/{{cycle}}", include_in_schema=False)
        async def one_cycle(request: Request, cycle: str) -> Response:
            return await of_cycle(request, cycle, "read:cycles", "cycle", render_cycle)

        @router.get(f"{api}/cycle/{{cycle}}/recovery", include_in_schema=False)
        async def cycle_recovery(request: Request, cycle: str) -> Response:
            return await of_cycle(request, cycle, "read:recovery", "recovery", render_recovery)

        @router.get(f"{api}/cycle/{{cycle}}/sleep", include_in_schema=False)
        async def cycle_sleep(request: Request, cycle: str) -> Response:
            return await of_cycle(request, cycle, "read:sleep", "sleep", render_sleep)

        @router.get(f"{api}/activity/sleep/{{sleep}}", include_in_schema=False)
        async def one_sleep(request: Request, sleep: str) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:sleep")
            w = call.wearer
            found = next((r for r in w.days if sleep_id(w.id, r) == sleep), None)
            if found is None:
                return self.error(404, "sleep not found", code="not_found")
            return self.finish(call, render_sleep(w, found))

        @router.get(f"{api}/activity/workout/{{workout}}", include_in_schema=False)
        async def one_workout(request: Request, workout: str) -> Response:
            call = await self.begin(request)
            self._scope(call, "read:workout")
            return self.error(404, "workout not found", code="not_found")

        return router

