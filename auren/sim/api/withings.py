"""Withings Public API, simulated: enveloped OAuth, measures, activity, sleep, notify.

Quirks reproduced: every call is a POST (GET with a query works too) naming ``action=``; every
answer is HTTP 200 with ``{"status": N, "body": …}`` and the status says what happened (0 OK,
401 token invalid or expired, 503 invalid parameters, 601 too many requests, 2554 unknown
action); the token endpoint is ``/v2/oauth2 action=requesttoken`` with the credentials in the
form (or a ``nonce`` and ``signature`` instead of the secret) and answers the ``userid``, which
notifications carry; scopes are comma-separated; every refresh returns a new refresh token and
the old one keeps working until the new access token is first used or 8 hours have passed;
``getmeas`` values are integers scaled by a power of ten (``value * 10^unit``: 72 450 and -3 are
72.45 kg); ``getmeas`` pages with ``more`` as 0/1 while ``getactivity`` and ``getsummary`` use
``true``/``false``; sleep efficiency is a ratio (0.91), not a percentage; a notification
subscription (``/notify action=subscribe``) first probes its ``callbackurl`` with HEAD and
refuses one that does not answer 2xx; revocation (``action=revoke``) is signed with a nonce
from ``/v2/signature action=getnonce`` (HMAC-SHA256 of the comma-joined values of ``action``,
``client_id`` and ``nonce`` or ``timestamp``, keyed with the client secret). The app may call
120 times a minute (601 beyond; Withings sends no ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import date
from typing import Any
from urllib.parse import urlencode

import httpx
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
    delivery_id,
    json_response,
)
from auren.sim.api.wearers import Wearer
from auren.sim.render import number_id
from auren.sim.wearers import DayRecord

SCOPES = ("user.info", "user.metrics", "user.activity", "user.sleepevents")
OK, AUTH_FAILED, INVALID_PARAMS, TOO_MANY, UNKNOWN_ACTION = 0, 401, 503, 601, 2554
CALLBACK_INVALID = 293
# Measure groups: (suffix, appli of its notification, [(meastype, value, unit)]).
WEIGHT, PULSE, SPO2, SKIN_TEMP = 1, 11, 54, 73


def signature(secret: str, *values: str) -> str:
    """Withings' request signature: HMAC-SHA256 (hex) of the values joined by commas, in
    the order of their keys (``action``, ``client_id``, then ``nonce`` or ``timestamp``)."""
    return hmac.new(secret.encode(), ",".join(values).encode(), hashlib.sha256).hexdigest()


def envelope(status: int, body: Any = None, error: str | None = None) -> Response:
    payload: dict[str, Any] = {"status": status, "body": body if body is not None else {}}
    if error is not None:
        payload["error"] = error
    return json_response(payload)


def measure_groups(wearer: Wearer, r: DayRecord) -> list[tuple[int, dict[str, Any]]]:
    """The day's measure groups with the ``appli`` each is notified under."""
    uploaded = int(wearer.upload_time(r))
    common = {"attrib": 0, "created": uploaded, "modified": uploaded, "category": 1,
              "comment": None}
    weight = shapes.weight_kg(wearer, r.day)
    scale = {"grpid": number_id(f"{wearer.id}|{r.day}|scale", 10),
             "date": int(r.sleep_end.timestamp()) + 900, **common, "deviceid": "sim-scale",
             "hash_deviceid": "sim-scale",
             "measures": [{"value": round(weight * 1000), "type": WEIGHT, "unit": -3,
                           "algo": 0, "fm": 131}]}
    watch = {"grpid": number_id(f"{wearer.id}|{r.day}|watch", 10),
             "date": int(r.sleep_end.timestamp()), **common, "deviceid": "sim-watch",
             "hash_deviceid": "sim-watch",
             "measures": [{"value": r.resting_hr_bpm, "type": PULSE, "unit": 0},
                          {"value": round(r.spo2_pct * 10), "type": SPO2, "unit": -1},
                          {"value": round(shapes.skin_temperature_c(r) * 1000),
                           "type": SKIN_TEMP, "unit": -3}]}
    return [(1, scale), (4, watch)]


def activity(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    active = shapes.active_seconds(r)
    return {"date": r.day.isoformat(), "timezone": shapes.zone_name(r.utc_offset_min),
            "deviceid": "sim-watch", "hash_deviceid": "sim-watch", "brand": 18,
            "is_tracker": True, "steps": r.steps, "distance": r.distance_m, "elevation": 12.0,
            "soft": active, "moderate": active // 2, "intense": active // 4,
            "active": active + active // 2 + active // 4,
            "calories": r.active_energy_kcal,
            "totalcalories": r.active_energy_kcal + shapes.bmr_kcal(wearer),
            "hr_average": shapes.average_heart_rate(r), "hr_min": r.resting_hr_bpm,
            "hr_max": shapes.max_heart_rate(r), "hr_zone_0": 50_000, "hr_zone_1": 3_000,
            "hr_zone_2": 600, "hr_zone_3": 60, "modified": int(wearer.upload_time(r))}


def sleep_summary(wearer: Wearer, r: DayRecord) -> dict[str, Any]:
    uploaded = int(wearer.upload_time(r))
    return {"id": number_id(f"{wearer.id}|{r.day}|sleep", 10),
            "timezone": shapes.zone_name(r.utc_offset_min), "model": 16, "model_id": 93,
            "startdate": int(r.sleep_start.timestamp()), "enddate": int(r.sleep_end.timestamp()),
            "date": r.day.isoformat(), "created": uploaded, "modified": uploaded,
            "data": {"wakeupduration": r.awake_s, "lightsleepduration": r.light_s,
                     "deepsleepduration": r.deep_s, "remsleepduration": r.rem_s,
                     "wakeupcount": r.awake_s // 240, "durationtosleep": shapes.latency_s(r),
                     "durationtowakeup": 0, "total_sleep_time": r.sleep_duration_s,
                     "total_timeinbed": r.time_in_bed_s,
                     "sleep_efficiency": round(r.sleep_efficiency_pct / 100, 3),
                     "sleep_latency": shapes.latency_s(r), "wakeup_latency": 0,
                     "waso": max(0, r.awake_s - shapes.latency_s(r)),
                     "hr_average": round(shapes.sleep_heart_rate(r)),
                     "hr_min": r.resting_hr_bpm, "hr_max": r.resting_hr_bpm + 25,
                     "rr_average": round(r.respiratory_rate), "rr_min": 11, "rr_max": 20,
                     "rmssd_start_avg": round(r.hrv_rmssd_ms * 0.95),
                     "rmssd_end_avg": round(r.hrv_rmssd_ms * 1.05),
                     "sleep_score": shapes.sleep_score(r), "snoring": 0, "snoringepisodecount": 0,
                     "nb_rem_episodes": 4, "breathing_disturbances_intensity": 5,
                     "out_of_bed_count": 0}}


class WithingsApi(ProviderApi):
    name = "withings"
    policy = OAuthPolicy(scopes=SCOPES, scope_separator=",", client_auth=frozenset({"post"}),
                         pkce="none", refresh="grace", min_state_chars=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nonces: dict[str, float] = {}

    # -- formats: HTTP 200 and a status inside -------------------------------------------------

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Any = None) -> Response:
        return envelope(INVALID_PARAMS if status in (400, 404, 422) else status,
                        error=message)

    def unauthorized(self, reason: AccessStatus) -> Response:
        return envelope(AUTH_FAILED, error="XRequestID: Not provided invalid_token: The access "
                                           f"token provided is invalid ({reason})")

    def rate_limited(self, retry_after_s: int, limit: LimitState | None) -> Response:
        return envelope(TOO_MANY, error="Too many requests")

    def token_error(self, error: str, description: str, status: int = 400) -> Response:
        code = INVALID_PARAMS if error in ("invalid_request", "unsupported_grant_type") \
            else AUTH_FAILED
        return envelope(code, error=f"{error}: {description}")

    def token_body(self, grant: Any, access: str, refresh: str | None, ttl_s: int) -> Any:
        return {"status": OK, "body": {
            "userid": grant.provider_user_id, "access_token": access, "refresh_token": refresh,
            "expires_in": ttl_s, "scope": ",".join(grant.scopes),
            "csrf_token": secrets.token_urlsafe(16), "token_type": "Bearer"}}

    # -- signatures -----------------------------------------------------------------------------

    def _signed(self, form: dict[str, str], last: str) -> bool:
        """``form`` is signed over action, client_id and ``last`` (nonce or timestamp)."""
        if form.get("client_id") != self.client.client_id:
            return False
        expected = signature(self.client.client_secret, form.get("action", ""),
                             form["client_id"], form.get(last, ""))
        return hmac.compare_digest(expected, form.get("signature", ""))

    def _nonce_ok(self, form: dict[str, str]) -> bool:
        deadline = self._nonces.pop(form.get("nonce", ""), 0.0)
        return deadline > self.state.clock() and self._signed(form, "nonce")

    def authenticate_client(self, request: Request, form: Any) -> bool:
        if "signature" in form and "nonce" in form:
            return self._nonce_ok(form)
        return super().authenticate_client(request, form)

    # -- data helpers -------------------------------------------------------------------------

    async def _call(self, request: Request, form: dict[str, str]) -> Call:
        return await self.begin(request, self.bearer(request) or form.get("access_token"))

    def _scope(self, call: Call, scope: str) -> None:
        if scope not in call.grant.scopes:
            raise Reply(envelope(AUTH_FAILED, error=f"the token lacks the {scope} scope"))

    @staticmethod
    def _int(form: dict[str, str], key: str) -> int | None:
        value = form.get(key)
        if value is None or value == "":
            return None
        if not value.lstrip("-").isdigit():
            raise Reply(envelope(INVALID_PARAMS, error=f"Invalid Params: {key}"))
        return int(value)

    @staticmethod
    def _ymd(form: dict[str, str], key: str) -> date | None:
        value = form.get(key)
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise Reply(envelope(INVALID_PARAMS, error=f"Invalid Params: {key}")) from None

    def _paged(self, items: list[Any], form: dict[str, str], key: str,
               *, more_as_int: bool) -> dict[str, Any]:
        offset = self._int(form, "offset") or 0
        size = self.settings.page_size
        chunk = items[offset: offset + size]
        more = offset + size < len(items)
        body: dict[str, Any] = {key: chunk, "more": (1 if more else 0) if more_as_int else more,
                                "offset": offset + size if more else 0}
        return body

    def _days(self, call: Call, form: dict[str, str]) -> list[DayRecord]:
        """Days selected by ``startdateymd``/``enddateymd`` (inclusive) or ``lastupdate``."""
        first, last = self._ymd(form, "startdateymd"), self._ymd(form, "enddateymd")
        since = self._int(form, "lastupdate")
        w = call.wearer
        if since is not None:
            return [r for r in w.days if w.upload_time(r) >= since]
        if first is None or last is None:
            raise Reply(envelope(INVALID_PARAMS, error="Invalid Params: startdateymd and "
                                                       "enddateymd, or lastupdate"))
        return w.between(first, last)

    @staticmethod
    def _fields(form: dict[str, str], item: dict[str, Any], keep: set[str]) -> dict[str, Any]:
        wanted = form.get("data_fields")
        if not wanted:
            return item
        names = set(wanted.split(","))
        return {k: v for k, v in item.items() if k in names or k in keep}

    # -- actions ------------------------------------------------------------------------------

    async def getmeas(self, request: Request, form: dict[str, str]) -> Response:
        call = await self._call(request, form)
        self._scope(call, "user.metrics")
        types: set[int] | None = None
        raw = form.get("meastypes") or form.get("meastype")
        if raw:
            try:
                types = {int(t) for t in raw.split(",")}
            except ValueError:
                return envelope(INVALID_PARAMS, error="Invalid Params: meastypes")
        category = self._int(form, "category") or 1
        start, end = self._int(form, "startdate"), self._int(form, "enddate")
        since = self._int(form, "lastupdate")
        groups = []
        w = call.wearer
        for r in reversed(w.days):  # newest first
            for _appli, group in measure_groups(w, r):
                if category != 1 or (start is not None and group["date"] < start) or (
                        end is not None and group["date"] > end) or (
                        since is not None and group["modified"] < since):
                    continue
                measures = [m for m in group["measures"] if types is None or m["type"] in types]
                if measures:
                    groups.append({**group, "measures": measures})
        body = self._paged(groups, form, "measuregrps", more_as_int=True)
        payload = {"updatetime": int(self.state.clock()),
                   "timezone": shapes.zone_name(w.history.profile.utc_offset_min), **body}
        return self.finish(call, {"status": OK, "body": payload})

    async def getactivity(self, request: Request, form: dict[str, str]) -> Response:
        call = await self._call(request, form)
        self._scope(call, "user.activity")
        keep = {"date", "timezone", "deviceid", "hash_deviceid", "brand", "is_tracker",
                "modified"}
        items = [self._fields(form, activity(call.wearer, r), keep)
                 for r in self._days(call, form)]
        body = self._paged(items, form, "activities", more_as_int=False)
        return self.finish(call, {"status": OK, "body": body})

    async def getsummary(self, request: Request, form: dict[str, str]) -> Response:
        call = await self._call(request, form)
        # Sources disagree on whether sleep needs user.activity or user.sleepevents: either.
        if not {"user.activity", "user.sleepevents"} & set(call.grant.scopes):
            self._scope(call, "user.activity")
        series = []
        for r in self._days(call, form):
            item = sleep_summary(call.wearer, r)
            item["data"] = self._fields(form, item["data"], set())
            series.append(item)
        body = self._paged(series, form, "series", more_as_int=False)
        return self.finish(call, {"status": OK, "body": body})

    async def notify(self, request: Request, form: dict[str, str]) -> Response:
        call = await self._call(request, form)
        action = form.get("action")
        subs = call.grant.subscriptions
        if action == "list":
            profiles = [{"appli": int(a), "callbackurl": url, "comment": "",
                         "expires": 2_147_483_647} for a, url in sorted(subs.items())]
            return self.finish(call, {"status": OK, "body": {"profiles": profiles}})
        appli = self._int(form, "appli")
        url = form.get("callbackurl", "")
        if action == "subscribe":
            if appli is None or not url:
                return envelope(INVALID_PARAMS, error="Invalid Params: callbackurl and appli")
            if not await self._probe(url):
                return envelope(CALLBACK_INVALID, error="The callback URL is either absent or "
                                                        "incorrect (HEAD did not answer 2xx)")
            subs[str(appli)] = url
            return self.finish(call, {"status": OK, "body": {}})
        if action in ("revoke", "get"):
            if appli is None or subs.get(str(appli)) != url:
                return envelope(INVALID_PARAMS, error="Invalid Params: no such subscription")
            if action == "revoke":
                del subs[str(appli)]
                return self.finish(call, {"status": OK, "body": {}})
            return self.finish(call, {"status": OK, "body": {
                "appli": appli, "callbackurl": url, "comment": "", "expires": 2_147_483_647}})
        return envelope(UNKNOWN_ACTION, error=f"unknown action {str(action)[:32]}")

    async def _probe(self, url: str) -> bool:
        if self.http is None:
            return False
        try:
            response = await self.http.head(url, timeout=2.0)
        except (httpx.HTTPError, ValueError):
            return False
        return 200 <= response.status_code < 300

    def revoke_grant(self, form: dict[str, str]) -> Response:
        if not self._nonce_ok(form):
            return envelope(AUTH_FAILED, error="invalid signature or nonce")
        grant: Grant | None = next(
            (g for g in self.state.grants.values()
             if g.provider == self.name and not g.revoked
             and g.provider_user_id == form.get("userid")), None)
        if grant is None:
            return envelope(INVALID_PARAMS, error="Invalid Params: userid")
        self.state.revoke(grant)
        grant.subscriptions.clear()
        return envelope(OK)

    # -- notifications ------------------------------------------------------------------------

    def _callback(self, grant: Grant, appli: int) -> str | None:
        found = grant.subscriptions.get(str(appli))
        if found is None and not self.settings.subscriptions_required:
            return ""  # the bridge's own route
        return found

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        grant = self.state.active_grant(self.name, wearer)
        if grant is None:
            return []
        out = []
        for r in records:
            windows = [(44, int(r.sleep_start.timestamp()), int(r.sleep_end.timestamp())),
                       (16, int(r.day_start.timestamp()), int(r.day_end.timestamp()))]
            windows += [(appli, group["date"], group["date"] + 1)
                        for appli, group in measure_groups(wearer, r)]
            for appli, start, end in windows:
                url = self._callback(grant, appli)
                if url is not None:
                    body = urlencode({"userid": grant.provider_user_id, "appli": appli,
                                      "startdate": start, "enddate": end}).encode()
                    out.append(Outgoing(f"appli={appli}", body, delivery_id(), url=url or None))
        return out

    def revocation_notifications(self, grant: Grant) -> list[Outgoing]:
        url = self._callback(grant, 46) or next(iter(grant.subscriptions.values()), None)
        if url is None:
            return []
        body = urlencode({"userid": grant.provider_user_id, "appli": 46,
                          "action": "unlink"}).encode()
        return [Outgoing("unlink", body, delivery_id(), url=url or None)]

    def router(self) -> APIRouter:
        router = self.oauth_router("/oauth2_user/authorize2")

        @router.post("/v2/oauth2", include_in_schema=False)
        async def oauth2(request: Request) -> Response:
            form = await self.form(request)
            action = form.get("action")
            if action == "requesttoken":
                return await self.token(request)
            if action == "revoke":
                return self.revoke_grant(form)
            return envelope(UNKNOWN_ACTION, error=f"unknown action {str(action)[:32]}")

        @router.post("/v2/signature", include_in_schema=False)
        async def signature_service(request: Request) -> Response:
            form = await self.form(request)
            if form.get("action") != "getnonce":
                return envelope(UNKNOWN_ACTION, error="unknown action")
            stamp = self._int(form, "timestamp")
            if stamp is None or abs(stamp - self.state.clock()) > 600 or not self._signed(
                    form, "timestamp"):
                return envelope(AUTH_FAILED, error="invalid signature or timestamp")
            nonce = secrets.token_hex(16)
            self._nonces[nonce] = self.state.clock() + 600
            return envelope(OK, {"nonce": nonce})

        actions = {"/measure": {"getmeas": self.getmeas},
                   "/v2/measure": {"getactivity": self.getactivity,
                                   "getintradayactivity": self._empty("series"),
                                   "getworkouts": self._empty("series")},
                   "/v2/sleep": {"getsummary": self.getsummary, "get": self._empty("series")},
                   "/notify": {"subscribe": self.notify, "list": self.notify,
                               "revoke": self.notify, "get": self.notify}}
        for path, table in actions.items():
            router.add_api_route(path, self._dispatcher(table), methods=["GET", "POST"],
                                 include_in_schema=False)
        return router

    def _dispatcher(self, table: dict[str, Any]) -> Any:
        async def dispatch(request: Request) -> Response:
            form = await self.form(request)
            handler = table.get(form.get("action", ""))
            if handler is None:
                return envelope(UNKNOWN_ACTION, error="unknown action")
            response: Response = await handler(request, form)
            return response
        return dispatch

    def _empty(self, key: str) -> Any:
        async def empty(request: Request, form: dict[str, str]) -> Response:
            call = await self._call(request, form)
            return self.finish(call, {"status": OK, "body": {key: [], "more": False,
                                                             "offset": 0}})
        return empty
