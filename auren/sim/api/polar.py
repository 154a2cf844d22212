"""Polar AccessLink v3, simulated: OAuth, user registration, daily data, deregistration.

Quirks reproduced: the token endpoint takes HTTP Basic credentials and answers
``x_user_id`` (the Polar user id) with a long-lived access token and *no* refresh token (a
refresh grant is ``unsupported_grant_type``); a user must be registered with ``POST /v3/users``
(``{"member-id": …}``; 409 when already registered) before anything is served, and only data
uploaded *after* registration is ever visible (a fresh connection has no history); lists cover
the last 28 days, ``from``/``to`` ranges at most 28 days (400 beyond) and reach back at most
365 days; user info is kebab-case; durations are seconds, except daily activity's ISO 8601
durations (``PT2H33M``); nightly recharge's ``heart_rate_variability_avg`` is RMSSD in ms;
skin temperature is absolute with the deviation beside it; deregistration is
``DELETE /v3/users/{id}`` (204); errors are ``{timestamp, status, errorType, message, corrId}``;
limits are per app and grow with registered users (500 + 20 per user per 15 minutes, 5,000 +
100 per user per day) with ``RateLimit-Usage/Limit/Reset`` headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
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
from auren.sim.wearers import DayRecord

SCOPES = ("accesslink.read_all",)
BASE = "https://www.polaraccesslink.com"  # what ``polar_user`` links and webhook URLs name
MAX_RANGE_DAYS = 28
# One record (a day, a night) in Polar's shape.
Render = Callable[[Wearer, DayRecord], dict[str, Any]]
DEFAULT_TOKEN_TTL_S = 10 * 365 * 86_400


def iso_duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (
        f"{secs}S" if secs or not (hours or minutes) else "")


def night(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    off = r.utc_offset_min
    return {"polar_user": f"{BASE}/v3/users/{wearer.provider_user_id('polar')}",
            "date": r.day.isoformat(), "device_id": "SIM-POLAR",
            "sleep_start_time": shapes.local_iso(r.sleep_start, off, millis=True),
            "sleep_end_time": shapes.local_iso(r.sleep_end, off, millis=True),
            "continuity": 3.1, "continuity_class": 3, "light_sleep": r.light_s,
            "deep_sleep": r.deep_s, "rem_sleep": r.rem_s, "unrecognized_sleep_stage": 0,
            "sleep_score": shapes.sleep_score(r), "total_interruption_duration": r.awake_s,
            "sleep_charge": 3, "sleep_goal": 28_800, "sleep_rating": 3,
            "short_interruption_duration": r.awake_s // 2,
            "long_interruption_duration": r.awake_s - r.awake_s // 2,
            "sleep_cycles": max(1, r.sleep_duration_s // 5400), "group_duration_score": 80.0,
            "group_solidity_score": 75.0, "group_regeneration_score": 70.0,
            "hypnogram": {}, "heart_rate_samples": {}}


def recharge(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    return {"polar_user": f"{BASE}/v3/users/{wearer.provider_user_id('polar')}",
            "date": r.day.isoformat(), "heart_rate_avg": round(shapes.sleep_heart_rate(r)),
            "beat_to_beat_avg": round(60_000 / shapes.sleep_heart_rate(r)),
            "heart_rate_variability_avg": round(r.hrv_rmssd_ms),
            "breathing_rate_avg": r.respiratory_rate, "nightly_recharge_status": 4,
            "ans_charge": 1.5, "ans_charge_status": 3, "hrv_samples": {},
            "breathing_samples": {}}


def activity(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    active = shapes.active_seconds(r)
    return {"start_time": f"{r.day.isoformat()}T00:00:00.000",
            "end_time": f"{r.day.isoformat()}T23:59:59.000",
            "active_duration": iso_duration(active),
            "inactive_duration": iso_duration(86_400 - active - r.time_in_bed_s),
            "daily_activity": round(min(200.0, r.steps / 100), 1),
            "calories": shapes.bmr_kcal(wearer) + round(r.active_energy_kcal),
            "active_calories": round(r.active_energy_kcal), "steps": r.steps,
            "inactivity_alert_count": 0, "distance_from_steps": r.distance_m}


def spo2_test(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    return {"source_device_id": "SIM-POLAR",
            "test_time": int(r.sleep_end.timestamp()) + 600,
            "time_zone_offset": r.utc_offset_min, "test_status": "COMPLETE",
            "blood_oxygen_percent": round(r.spo2_pct), "spo2_class": "NORMAL",
            "spo2_value_deviation_from_baseline": "NO_BASELINE",
            "spo2_quality_average_percent": 95.0,
            "average_heart_rate_bpm": r.resting_hr_bpm + 8,
            "heart_rate_variability_ms": r.hrv_rmssd_ms,
            "spo2_hrv_deviation_from_baseline": "NO_BASELINE", "altitude_meters": 0.0}


def skin_temperature(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    return {"source_device_id": "SIM-POLAR", "sleep_date": r.day.isoformat(),
            "sleep_time_skin_temperature_celsius": shapes.skin_temperature_c(r),
            "deviation_from_baseline_celsius": r.temperature_deviation_c}


class PolarApi(ProviderApi):
    name = "polar"
    policy = OAuthPolicy(scopes=SCOPES, client_auth=frozenset({"basic"}), pkce="none",
                         refresh="none")

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Any = None) -> Response:
        return json_response({"timestamp": shapes.utc_z(self.state.clock()), "status": status,
                              "errorType": code, "message": message,
                              "corrId": str(uuid.uuid4())}, status, headers)

    def unauthorized(self, reason: AccessStatus) -> Response:
        return self.error(401, f"Unauthorized: access token is {reason}", code="unauthorized")

    def limit_headers(self, limit: LimitState | None) -> dict[str, str]:
        if limit is None:
            return {}
        return {"RateLimit-Usage": str(limit.limit - limit.remaining),
                "RateLimit-Limit": str(limit.limit), "RateLimit-Reset": str(limit.reset_s)}

    def token_body(self, grant: Any, access: str, refresh: str | None, ttl_s: int) -> Any:
        return {"access_token": access, "token_type": "bearer", "expires_in": ttl_s,
                "x_user_id": int(grant.provider_user_id)}

    def _registered(self, call: Call) -> None:
        if call.grant.registered_at is None:
            raise Reply(self.error(403, "User is not registered: POST /v3/users first",
                                   code="user_not_registered"))

    async def _member(self, request: Request) -> Call:
        """A data call: authorised, and for a user registered with ``POST /v3/users``."""
        call = await self.begin(request)
        self._registered(call)
        return call

    def _recent(self, call: Call) -> list[DayRecord]:
        """What the longest range Polar serves, up to today, holds."""
        last = call.wearer.today
        return self._in(call, last - timedelta(days=MAX_RANGE_DAYS - 1), last)

    def visible(self, call: Call) -> list[DayRecord]:
        """Only what was uploaded after registration."""
        w, since = call.wearer, call.grant.registered_at or float("inf")
        return [r for r in w.days if w.upload_time(r) >= since]

    def _window(self, request: Request, call: Call) -> tuple[date, date]:
        q = request.query_params
        today = call.wearer.today
        try:
            last = date.fromisoformat(q["to"]) if q.get("to") else today
            first = (date.fromisoformat(q["from"]) if q.get("from")
                     else last - timedelta(days=MAX_RANGE_DAYS - 1))
        except ValueError:
            raise Reply(self.error(400, "from and to must be dates YYYY-MM-DD",
                                   code="bad_request")) from None
        if last < first or (last - first).days + 1 > MAX_RANGE_DAYS:
            raise Reply(self.error(400, f"the range may span at most {MAX_RANGE_DAYS} days",
                                   code="bad_request"))
        if first < today - timedelta(days=365):
            raise Reply(self.error(400, "from may be at most 365 days ago", code="bad_request"))
        return first, last

    def _in(self, call: Call, first: date, last: date) -> list[DayRecord]:
        return [r for r in self.visible(call) if first <= r.day <= last]

    def _on(self, call: Call, day: str) -> DayRecord:
        try:
            wanted = date.fromisoformat(day)
        except ValueError:
            raise Reply(self.error(400, "date must be YYYY-MM-DD", code="bad_request")) from None
        found = next((r for r in self.visible(call) if r.day == wanted), None)
        if found is None:
            raise Reply(self.error(404, "No data for the date", code="not_found"))
        return found

    def user_info(self, call: Call) -> dict[str, Any]:
        w = call.wearer
        registered = call.grant.registered_at or self.state.clock()
        return {"polar-user-id": int(call.grant.provider_user_id),
                "member-id": call.grant.member_id, "registration-date": shapes.utc_z(registered),
                "first-name": "Sim", "last-name": w.id, "birthdate": "1990-01-01",
                "gender": "FEMALE" if w.index % 2 else "MALE",
                "weight": round(w.weight_kg, 1), "height": round(160 + w.weight_kg / 5, 1),
                "extra-info": []}

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None or grant.registered_at is None:
            return []
        now = shapes.utc_z(self.state.clock(), millis=False)
        out = []
        for r in records:
            day = r.day.isoformat()
            for event, url in (("SLEEP", f"{BASE}/v3/users/sleep/{day}"),
                               ("ACTIVITY_SUMMARY", f"{BASE}/v3/users/activities/{day}")):
                body = {"event": event, "user_id": int(grant.provider_user_id), "date": day,
                        "timestamp": now, "url": url}
                out.append(Outgoing(event, orjson.dumps(body), delivery_id(),
                                    {"event": event}))
        return out

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth2/authorization", "/v2/oauth2/token")

        @router.post("/v3/users", include_in_schema=False)
        async def register(request: Request) -> Response:
            call = await self.begin(request)
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                body = None
            member = body.get("member-id") if isinstance(body, dict) else None
            if not isinstance(member, str) or not 1 <= len(member) <= 256:
                return self.error(400, "body must be {\"member-id\": \"…\"}", code="bad_request")
            if call.grant.registered_at is not None:
                return self.error(409, "User already registered", code="conflict")
            call.grant.registered_at = self.state.clock()
            call.grant.member_id = member
            return self.finish(call, self.user_info(call))

        @router.get("/v3/users/{user_id:int}", include_in_schema=False)
        async def user(request: Request, user_id: int) -> Response:
            call = await self._member(request)
            if str(user_id) != call.grant.provider_user_id:
                return self.error(403, "Forbidden", code="forbidden")
            return self.finish(call, self.user_info(call))

        @router.delete("/v3/users/{user_id:int}", include_in_schema=False)
        async def deregister(request: Request, user_id: int) -> Response:
            call = await self.begin(request)
            if str(user_id) != call.grant.provider_user_id:
                return self.error(403, "Forbidden", code="forbidden")
            self.state.revoke(call.grant)
            return Response(status_code=204)

        @router.get("/v3/users/sleep", include_in_schema=False)
        async def sleeps(request: Request) -> Response:
            call = await self._member(request)
            return self.finish(call, {"nights": [night(call.wearer, r)
                                                 for r in self._recent(call)]})

        @router.get("/v3/users/sleep/available", include_in_schema=False)
        async def available(request: Request) -> Response:
            call = await self._member(request)
            return self.finish(call, {"available": [
                {"date": r.day.isoformat(),
                 "start_time": shapes.local_iso(r.sleep_start, r.utc_offset_min, millis=True),
                 "end_time": shapes.local_iso(r.sleep_end, r.utc_offset_min, millis=True)}
                for r in self._recent(call)]})

        @router.get("/v3/users/nightly-recharge", include_in_schema=False)
        async def recharges(request: Request) -> Response:
            call = await self._member(request)
            return self.finish(call, {"recharges": [recharge(call.wearer, r)
                                                    for r in self._recent(call)]})

        @router.get("/v3/exercises", include_in_schema=False)
        async def exercises(request: Request) -> Response:
            call = await self._member(request)
            return self.finish(call, [])

        # Lists over a from/to window, and one day's record (after the fixed paths above, such
        # as /v3/users/sleep/available, which a {day} would otherwise take).
        for path, render in (("/v3/users/activities", activity),
                             ("/v3/users/biosensing/spo2", spo2_test),
                             ("/v3/users/biosensing/skintemperature", skin_temperature)):
            router.add_api_route(path, self._windowed(render), methods=["GET"],
                                 include_in_schema=False)
        for path, render in (("/v3/users/activities/{day}", activity),
                             ("/v3/users/sleep/{day}", night),
                             ("/v3/users/nightly-recharge/{day}", recharge)):
            router.add_api_route(path, self._one_day(render), methods=["GET"],
                                 include_in_schema=False)
        return router

    def _windowed(self, render: Render) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            call = await self._member(request)
            first, last = self._window(request, call)
            return self.finish(call, [render(call.wearer, r) for r in self._in(call, first, last)])

        return endpoint

    def _one_day(self, render: Render) -> Callable[[Request, str], Awaitable[Response]]:
        async def endpoint(request: Request, day: str) -> Response:
            call = await self._member(request)
            return self.finish(call, render(call.wearer, self._on(call, day)))

        return endpoint
