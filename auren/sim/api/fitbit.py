"""Fitbit Web API (legacy), simulated: OAuth 2 with PKCE, daily and sleep data, subscriptions.

Quirks reproduced: the token endpoint takes the app's credentials only as HTTP Basic; the
token response carries the Fitbit ``user_id`` (an encoded id such as ``1A2B3C4D``); every
refresh rotates the refresh token (the old one is dead once used); errors are
``{"errors": [{"errorType", "message"}], "success": false}`` with ``expired_token`` told apart
from ``invalid_token``; times are local wall-clock times *without* an offset (the profile's
``offsetFromUTCMillis`` says where); distances follow ``Accept-Language`` (``en_US``: miles,
anything else: kilometres); a day without data still answers its activity summary with zeros;
the HRV, skin-temperature and breathing-rate ranges span at most 30 days and sleep ranges 100
(400 beyond); skin temperature is ``nightlyRelative``, a deviation; the sleep list pages by
``offset``/``limit`` (at most 100) and ``pagination.next``; ``Fitbit-Rate-Limit-*`` headers
on every answer, 150 calls per user per hour resetting at the top of the hour. Notifications
go only to users with a subscription (``POST …/apiSubscriptions/{id}.json``).
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
    Grant,
    LimitState,
    OAuthPolicy,
    Outgoing,
    ProviderApi,
    Reply,
    add_query,
    delivery_id,
    json_response,
)
from auren.sim.api.wearers import Wearer
from auren.sim.render import number_id
from auren.sim.wearers import DayRecord

SCOPES = ("activity", "heartrate", "sleep", "profile", "temperature", "oxygen_saturation",
          "respiratory_rate", "weight", "settings", "location", "nutrition", "social")
COLLECTIONS = ("activities", "body", "foods", "sleep", "userRevokedAccess")
MILE_M = 1609.344


def log_id(wearer_id: str, day: date) -> int:
    return number_id(f"{wearer_id}|{day}|sleep", 11)


def sleep_log(r: DayRecord, wearer: Wearer) -> dict[str, Any]:
    off = r.utc_offset_min

    def stage(seconds: int, count: int) -> dict[str, int]:
        return {"count": count, "minutes": round(seconds / 60), "thirtyDayAvgMinutes": 0}

    return {
        "logId": log_id(wearer.id, r.day), "dateOfSleep": r.day.isoformat(),
        "startTime": shapes.local_naive(r.sleep_start, off),
        "endTime": shapes.local_naive(r.sleep_end, off),
        "duration": r.time_in_bed_s * 1000, "minutesAsleep": round(r.sleep_duration_s / 60),
        "minutesAwake": round(r.awake_s / 60), "minutesToFallAsleep": 0,
        "minutesAfterWakeup": 0, "timeInBed": round(r.time_in_bed_s / 60),
        "efficiency": round(r.sleep_efficiency_pct), "isMainSleep": True, "type": "stages",
        "infoCode": 0, "logType": "auto_detected",
        "levels": {"summary": {"deep": stage(r.deep_s, 3), "light": stage(r.light_s, 20),
                               "rem": stage(r.rem_s, 5), "wake": stage(r.awake_s, 12)},
                   "data": [], "shortData": []}}


class FitbitApi(ProviderApi):
    name = "fitbit"
    policy = OAuthPolicy(scopes=SCOPES, client_auth=frozenset({"basic"}), pkce="optional",
                         refresh="rotate")

    # -- formats ------------------------------------------------------------------------------

    def error(self, status: int, message: str, *, code: str = "system",
              headers: Any = None) -> Response:
        return json_response({"errors": [{"errorType": code, "message": message}],
                              "success": False}, status, headers)

    def unauthorized(self, reason: AccessStatus) -> Response:
        if reason == "expired":
            return self.error(401, "Access token expired. Visit https://dev.fitbit.com/docs/"
                                   "oauth2 for more information on the Fitbit Web API "
                                   "authorization process.", code="expired_token")
        return self.error(401, f"Access token invalid ({reason}).", code="invalid_token")

    def rate_limited(self, retry_after_s: int, limit: LimitState | None) -> Response:
        return self.error(429, "Too Many Requests", code="system",
                          headers={"Retry-After": str(retry_after_s),
                                   **self.limit_headers(limit)})

    def limit_headers(self, limit: LimitState | None) -> dict[str, str]:
        if limit is None:
            return {}
        return {"Fitbit-Rate-Limit-Limit": str(limit.limit),
                "Fitbit-Rate-Limit-Remaining": str(limit.remaining),
                "Fitbit-Rate-Limit-Reset": str(limit.reset_s)}

    def token_error(self, error: str, description: str, status: int = 400) -> Response:
        return self.error(status, description, code=error)

    def token_body(self, grant: Any, access: str, refresh: str | None, ttl_s: int) -> Any:
        body = super().token_body(grant, access, refresh, ttl_s)
        body["user_id"] = grant.provider_user_id
        return body

    # -- helpers ------------------------------------------------------------------------------

    def _owner(self, call: Call, user: str) -> None:
        if user not in ("-", call.grant.provider_user_id):
            raise Reply(self.error(403, "The caller is not authorized to view the requested "
                                        "resource.", code="insufficient_permissions"))

    def _scope(self, call: Call, scope: str) -> None:
        if scope not in call.grant.scopes:
            raise Reply(self.error(403, f"This application does not have permission to access "
                                        f"{scope} data.", code="insufficient_scope"))

    def _day(self, text: str, field: str = "date") -> date:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise Reply(self.error(400, f"Invalid date: {text[:32]}", code="validation")) from None

    def _range(self, start: str, end: str, max_days: int) -> tuple[date, date]:
        first, last = self._day(start, "startDate"), self._day(end, "endDate")
        if last < first or (last - first).days + 1 > max_days:
            raise Reply(self.error(400, f"The date range must be at most {max_days} days and "
                                        "not end before it starts.", code="validation"))
        return first, last

    # -- notifications ------------------------------------------------------------------------

    def _subscription(self, grant: Grant, collection: str) -> str | None:
        subs = grant.subscriptions
        found = subs.get(collection) or subs.get("")
        if found is None and not self.settings.subscriptions_required:
            return f"{grant.provider_user_id}-{collection}"
        return found

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None:
            return []
        out = []
        for r in records:
            items = [{"collectionType": c, "date": r.day.isoformat(),
                      "ownerId": grant.provider_user_id, "ownerType": "user",
                      "subscriptionId": sid}
                     for c in ("sleep", "activities")
                     if (sid := self._subscription(grant, c)) is not None]
            if items:  # one POST may batch several collections
                out.append(Outgoing("+".join(i["collectionType"] for i in items),
                                    orjson.dumps(items), delivery_id()))
        return out

    def revocation_notifications(self, grant: Grant) -> list[Outgoing]:
        sid = self._subscription(grant, "userRevokedAccess")
        if sid is None:
            return []
        item = {"collectionType": "userRevokedAccess",
                "date": grant.wearer.today.isoformat(), "ownerId": grant.provider_user_id,
                "ownerType": "user", "subscriptionId": sid}
        return [Outgoing("userRevokedAccess", orjson.dumps([item]), delivery_id())]

    # -- routes -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth2/authorize", "/oauth2/token")

        @router.post("/oauth2/revoke", include_in_schema=False)
        async def revoke(request: Request) -> Response:
            form = await self.form(request)
            if not self.authenticate_client(request, form):
                return self.token_error("invalid_client", "Basic authentication failed", 401)
            value = form.get("token", "")
            found, _ = self.state.lookup(value)
            grant = found.grant if found else self.state.refresh.get(value)
            if grant is not None and grant.provider == self.name:
                self.state.revoke(grant)
            return json_response({})  # RFC 7009: unknown tokens are not an error

        @router.get("/1/user/{user}/profile.json", include_in_schema=False)
        async def profile(request: Request, user: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "profile")
            off = call.wearer.history.profile.utc_offset_min
            return self.finish(call, {"user": {
                "encodedId": call.grant.provider_user_id, "displayName": call.wearer.id,
                "timezone": shapes.zone_name(off), "offsetFromUTCMillis": off * 60_000,
                "distanceUnit": "METRIC", "weight": round(call.wearer.weight_kg, 1),
                "memberSince": "2020-01-01"}})

        @router.get("/1/user/{user}/activities/date/{day}.json", include_in_schema=False)
        async def activities(request: Request, user: str, day: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "activity")
            r = call.wearer.day(self._day(day))
            miles = request.headers.get("accept-language", "").replace("-", "_") == "en_US"
            summary: dict[str, Any] = {
                "steps": 0, "caloriesOut": shapes.bmr_kcal(call.wearer), "activityCalories": 0,
                "caloriesBMR": shapes.bmr_kcal(call.wearer), "marginalCalories": 0,
                "sedentaryMinutes": 1440, "lightlyActiveMinutes": 0, "fairlyActiveMinutes": 0,
                "veryActiveMinutes": 0, "distances": [{"activity": "total", "distance": 0}]}
            if r is not None:
                distance = r.distance_m / (MILE_M if miles else 1000.0)
                active_min = shapes.active_seconds(r) // 60
                summary.update({
                    "steps": r.steps,
                    "caloriesOut": shapes.bmr_kcal(call.wearer) + round(r.active_energy_kcal),
                    "activityCalories": round(r.active_energy_kcal),
                    "marginalCalories": round(r.active_energy_kcal * 0.6),
                    "restingHeartRate": r.resting_hr_bpm,
                    "sedentaryMinutes": 1440 - active_min - r.time_in_bed_s // 60,
                    "lightlyActiveMinutes": active_min // 2,
                    "fairlyActiveMinutes": active_min // 3,
                    "veryActiveMinutes": active_min - active_min // 2 - active_min // 3,
                    "distances": [{"activity": "total", "distance": round(distance, 2)},
                                  {"activity": "tracker", "distance": round(distance, 2)}]})
            return self.finish(call, {"activities": [], "goals": {
                "steps": 10000, "caloriesOut": 2500, "activeMinutes": 30}, "summary": summary})

        def heart(r: DayRecord) -> dict[str, Any]:
            return {"dateTime": r.day.isoformat(), "value": {
                "customHeartRateZones": [], "restingHeartRate": r.resting_hr_bpm,
                "heartRateZones": [
                    {"name": "Out of Range", "min": 30, "max": 97, "minutes": 1300},
                    {"name": "Fat Burn", "min": 97, "max": 136, "minutes": 90},
                    {"name": "Cardio", "min": 136, "max": 165, "minutes": 10},
                    {"name": "Peak", "min": 165, "max": 220, "minutes": 0}]}}

        @router.get("/1/user/{user}/activities/heart/date/{day}/{period}.json",
                    include_in_schema=False)
        async def heart_range(request: Request, user: str, day: str, period: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "heartrate")
            first = self._day(day)
            if period in ("1d", "7d", "30d", "1w", "1m"):
                days = {"1d": 1, "7d": 7, "30d": 30, "1w": 7, "1m": 30}[period]
                first, last = first - timedelta(days=days - 1), first
            else:
                first, last = self._range(day, period, 366)
            records = call.wearer.between(first, last)
            return self.finish(call, {"activities-heart": [heart(r) for r in records]})

        def ranged(path: str, scope: str, max_days: int, key: str,
                   item: Any) -> None:
            async def one(request: Request, user: str, day: str) -> Response:
                return await many(request, user, day, day)

            async def many(request: Request, user: str, start: str, end: str) -> Response:
                call = await self.begin(request)
                self._owner(call, user)
                self._scope(call, scope)
                first, last = self._range(start, end, max_days)
                items = [item(r) for r in call.wearer.between(first, last)]
                return self.finish(call, {key: items} if key else items)

            router.add_api_route(f"/1/user/{{user}}/{path}/date/{{day}}.json", one,
                                 methods=["GET"], include_in_schema=False)
            router.add_api_route(f"/1/user/{{user}}/{path}/date/{{start}}/{{end}}.json", many,
                                 methods=["GET"], include_in_schema=False)

        ranged("hrv", "heartrate", 30, "hrv", lambda r: {
            "dateTime": r.day.isoformat(),
            "value": {"dailyRmssd": r.hrv_rmssd_ms, "deepRmssd": round(r.hrv_rmssd_ms * 0.9, 1)}})
        ranged("temp/skin", "temperature", 30, "tempSkin", lambda r: {
            "dateTime": r.day.isoformat(), "value": {"nightlyRelative": r.temperature_deviation_c},
            "logType": "dedicated_temp_sensor"})
        ranged("br", "respiratory_rate", 30, "br", lambda r: {
            "dateTime": r.day.isoformat(), "value": {"breathingRate": r.respiratory_rate}})

        def spo2(r: DayRecord) -> dict[str, Any]:
            return {"dateTime": r.day.isoformat(),
                    "value": {"avg": r.spo2_pct, "min": round(r.spo2_pct - 2.1, 1),
                              "max": round(min(100.0, r.spo2_pct + 1.4), 1)}}

        @router.get("/1/user/{user}/spo2/date/{day}.json", include_in_schema=False)
        async def spo2_day(request: Request, user: str, day: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "oxygen_saturation")
            r = call.wearer.day(self._day(day))
            return self.finish(call, spo2(r) if r else {})

        @router.get("/1/user/{user}/spo2/date/{start}/{end}.json", include_in_schema=False)
        async def spo2_range(request: Request, user: str, start: str, end: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "oxygen_saturation")
            first, last = self._range(start, end, 30)
            return self.finish(call, [spo2(r) for r in call.wearer.between(first, last)])

        def sleep_answer(call: Call, records: list[DayRecord]) -> dict[str, Any]:
            logs = [sleep_log(r, call.wearer) for r in records]
            stages = {k: sum(log["levels"]["summary"][k]["minutes"] for log in logs)
                      for k in ("deep", "light", "rem", "wake")}
            return {"sleep": logs, "summary": {
                "totalMinutesAsleep": sum(log["minutesAsleep"] for log in logs),
                "totalSleepRecords": len(logs),
                "totalTimeInBed": sum(log["timeInBed"] for log in logs), "stages": stages}}

        @router.get("/1.2/user/{user}/sleep/date/{day}.json", include_in_schema=False)
        async def sleep_day(request: Request, user: str, day: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "sleep")
            first = self._day(day)
            return self.finish(call, sleep_answer(call, call.wearer.between(first, first)))

        @router.get("/1.2/user/{user}/sleep/date/{start}/{end}.json", include_in_schema=False)
        async def sleep_range(request: Request, user: str, start: str, end: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "sleep")
            first, last = self._range(start, end, 100)
            return self.finish(call, {"sleep": sleep_answer(call, call.wearer.between(
                first, last))["sleep"]})

        @router.get("/1.2/user/{user}/sleep/list.json", include_in_schema=False)
        async def sleep_list(request: Request, user: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "sleep")
            q = request.query_params
            after, before = q.get("afterDate"), q.get("beforeDate")
            sort = q.get("sort", "")
            try:
                limit, offset = int(q.get("limit", "")), int(q.get("offset", "0"))
            except ValueError:
                return self.error(400, "limit and offset must be integers", code="validation")
            if (after is None) == (before is None) or not 1 <= limit <= 100 or offset < 0:
                return self.error(400, "exactly one of afterDate and beforeDate, and a limit "
                                       "of 1 to 100, are required", code="validation")
            if (after is not None and sort != "asc") or (before is not None and sort != "desc"):
                return self.error(400, "sort must be asc with afterDate and desc with "
                                       "beforeDate", code="validation")
            if after is not None:
                bound = self._day(after)
                records = [r for r in call.wearer.days if r.day > bound]
            else:
                bound = self._day(before or "")
                records = [r for r in reversed(call.wearer.days) if r.day < bound]
            chunk = records[offset: offset + limit]
            base = str(request.url.replace(query=""))
            more = offset + limit < len(records)
            next_url = add_query(base, **{"afterDate" if after else "beforeDate": str(bound),
                                          "sort": sort, "limit": str(limit),
                                          "offset": str(offset + limit)}) if more else ""
            previous = add_query(base, **{"afterDate" if after else "beforeDate": str(bound),
                                          "sort": sort, "limit": str(limit),
                                          "offset": str(max(0, offset - limit))}
                                 ) if offset else ""
            return self.finish(call, {
                "sleep": [sleep_log(r, call.wearer) for r in chunk],
                "pagination": {"afterDate" if after else "beforeDate": str(bound),
                               "limit": limit, "offset": offset, "sort": sort,
                               "next": next_url, "previous": previous}})

        @router.get("/1/user/{user}/activities/list.json", include_in_schema=False)
        async def activity_list(request: Request, user: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            self._scope(call, "activity")
            return self.finish(call, {"activities": [], "pagination": {
                "next": "", "previous": "", "limit": 100, "offset": 0, "sort": "asc"}})

        # -- subscriptions ("" is the subscription to every collection) -----------------------

        def subscription(call: Call, collection: str, sid: str) -> dict[str, Any]:
            return {"collectionType": collection or "user", "ownerId": call.grant.provider_user_id,
                    "ownerType": "user", "subscriberId": "1", "subscriptionId": sid}

        async def subscribe(request: Request, user: str, collection: str, sid: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            if collection and collection not in COLLECTIONS:
                return self.error(404, f"unknown collection {collection[:32]}",
                                  code="not_found")
            existing = call.grant.subscriptions.get(collection)
            if existing is not None and existing != sid:
                return self.error(409, "a subscription to this collection exists with another "
                                       "id", code="conflict")
            if sid in call.grant.subscriptions.values() and existing != sid:
                return self.error(409, "the subscription id is in use", code="conflict")
            call.grant.subscriptions[collection] = sid
            return self.finish(call, subscription(call, collection, sid),
                               200 if existing == sid else 201)

        async def unsubscribe(request: Request, user: str, collection: str,
                              sid: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            if call.grant.subscriptions.get(collection) != sid:
                return self.error(404, "no such subscription", code="not_found")
            del call.grant.subscriptions[collection]
            return Response(status_code=204, headers=self.limit_headers(call.limit))

        async def listing(request: Request, user: str, collection: str) -> Response:
            call = await self.begin(request)
            self._owner(call, user)
            subs = [subscription(call, c, s) for c, s in call.grant.subscriptions.items()
                    if not collection or c == collection]
            return self.finish(call, {"apiSubscriptions": subs})

        async def subscribe_all(request: Request, user: str, sid: str) -> Response:
            return await subscribe(request, user, "", sid)

        async def unsubscribe_all(request: Request, user: str, sid: str) -> Response:
            return await unsubscribe(request, user, "", sid)

        async def listing_all(request: Request, user: str) -> Response:
            return await listing(request, user, "")

        base = "/1/user/{user}"
        router.add_api_route(f"{base}/apiSubscriptions/{{sid}}.json", subscribe_all,
                             methods=["POST"], include_in_schema=False)
        router.add_api_route(f"{base}/apiSubscriptions/{{sid}}.json", unsubscribe_all,
                             methods=["DELETE"], include_in_schema=False)
        router.add_api_route(f"{base}/apiSubscriptions.json", listing_all, methods=["GET"],
                             include_in_schema=False)
        router.add_api_route(f"{base}/{{collection}}/apiSubscriptions/{{sid}}.json", subscribe,
                             methods=["POST"], include_in_schema=False)
        router.add_api_route(f"{base}/{{collection}}/apiSubscriptions/{{sid}}.json",
                             unsubscribe, methods=["DELETE"], include_in_schema=False)
        router.add_api_route(f"{base}/{{collection}}/apiSubscriptions.json", listing,
                             methods=["GET"], include_in_schema=False)
        return router
