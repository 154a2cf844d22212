"""Rendering: each provider's wire format for a synthetic wearer's day, signed.

Pure apart from the clock. Each delivery is signed with the provider module's own
``signed_headers`` and the first secret of its rotation list. Within a run every delivery is
unique (its body, and its webhook-id or trace id where the provider has one); delivery ids are
scoped to the run, while the measurements' source record ids derive from user, day and metric.
Sending the same seed twice therefore re-delivers the same nights, which the bridge deduplicates
instead of storing a second copy. A deliberate retry (same ids and body, new signature) is
available through ``redeliver``.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import orjson

from auren.events import METRICS, iso
from auren.providers import PROVIDER_CLASSES
from auren.providers.native import EVENT_TYPE
from auren.settings import Settings
from auren.sim.wearers import DayRecord, UserHistory


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One HTTP request a provider would send: ready to post, signature included."""

    provider: str  # the route segment: POST /webhooks/{provider}
    path: str
    headers: dict[str, str]
    body: bytes
    # The provider's own identity of this delivery (webhook-id, trace id, notification id).
    delivery_id: str
    user_id: str  # the simulated user it is about
    # Measurements (full payloads) or notifications (thin providers) the body carries, as the
    # simulator wrote them; how many canonical events a parser makes of them is its business.
    items: int
    redelivery: bool = False


@dataclass(frozen=True, slots=True)
class UnsignedDelivery:
    body: bytes
    delivery_id: str
    items: int
    # Keyword arguments for the provider's ``signed_headers`` besides the clock.
    sign_args: dict[str, Any] = field(default_factory=dict)


_SIM_NAMESPACE = uuid.UUID("0f3a6c2e-8d1b-5b7e-a4c9-2e6f1d0b7a53")


def uid(*parts: object) -> str:
    """A UUIDv5 over ``parts``: stable for a record, distinct for everything else."""
    return str(uuid.uuid5(_SIM_NAMESPACE, "|".join(map(str, parts))))


def number_id(user_id: str, digits: int = 8) -> int:
    """A provider-style numeric user id, stable per simulated user."""
    number = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")
    return number % int(10**digits)


def _local(moment: datetime, offset_min: int) -> datetime:
    return moment.astimezone(timezone(timedelta(minutes=offset_min)))


def _local_iso(moment: datetime, offset_min: int) -> str:
    return _local(moment, offset_min).isoformat()


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass(slots=True)
class RenderContext:
    """What a renderer needs besides the record: the run's identity and the clock."""

    run_id: str
    now: float

    def delivery_id(self, *parts: object) -> str:
        # Run-scoped: a second run with the same seed sends new deliveries of the same records.
        return uid("delivery", self.run_id, *parts)

    @property
    def now_iso(self) -> str:
        """The send time as providers write it: whole seconds, UTC, ``Z``."""
        return datetime.fromtimestamp(int(self.now), UTC).isoformat().replace("+00:00", "Z")


# -- native (Standard Webhooks over AUREN's own body) ----------------------------------------


def native_events(record: DayRecord) -> list[dict[str, Any]]:
    """The day as AUREN-native events with canonical metric names and units."""
    night = (iso(record.sleep_start), iso(record.sleep_end))
    day = (iso(record.day_start), iso(record.day_end))
    values: list[tuple[str, float, tuple[str, str]]] = [
        ("sleep_duration", record.sleep_duration_s, night),
        ("sleep_deep", record.deep_s, night),
        ("sleep_light", record.light_s, night),
        ("sleep_rem", record.rem_s, night),
        ("sleep_awake", record.awake_s, night),
        ("sleep_efficiency", record.sleep_efficiency_pct, night),
        ("hrv_rmssd", record.hrv_rmssd_ms, night),
        ("resting_heart_rate", record.resting_hr_bpm, night),
        ("respiratory_rate", record.respiratory_rate, night),
        ("spo2", record.spo2_pct, night),
        ("temperature_deviation", record.temperature_deviation_c, night),
        ("steps", record.steps, day),
        ("distance", record.distance_m, day),
        ("active_energy", record.active_energy_kcal, day),
    ]
    return [
        {"metric": metric, "value": value, "unit": METRICS[metric].unit, "start": start,
         "end": end, "id": f"{record.user_id}:{record.day.isoformat()}:{metric}"}
        for metric, value, (start, end) in values
    ]


def _render_native(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    events = native_events(record)
    body = {"type": EVENT_TYPE, "user_id": record.user_id, "events": events}
    msg_id = "msg_" + ctx.delivery_id("auren", record.user_id, record.day).replace("-", "")
    return [UnsignedDelivery(_json(body), msg_id, len(events), {"msg_id": msg_id})]


# -- Terra (full payloads: sleep and daily) ----------------------------------------------------


def render_terra(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    off = record.utc_offset_min
    user = {"user_id": uid("terra-user", record.user_id), "provider": "OURA",
            "reference_id": record.user_id, "scopes": None, "active": True,
            "last_webhook_update": ctx.now_iso}
    sleep = {
        "metadata": {"start_time": _local_iso(record.sleep_start, off),
                     "end_time": _local_iso(record.sleep_end, off),
                     "summary_id": uid("terra-sleep", record.user_id, record.day),
                     "is_nap": False, "upload_type": 1},
        "heart_rate_data": {"summary": {"avg_hr_bpm": record.resting_hr_bpm + 6,
                                        "resting_hr_bpm": record.resting_hr_bpm,
                                        "avg_hrv_rmssd": record.hrv_rmssd_ms,
                                        "avg_hrv_sdnn": record.hrv_sdnn_ms}},
        "sleep_durations_data": {
            "asleep": {"duration_asleep_state_seconds": record.sleep_duration_s,
                       "duration_deep_sleep_state_seconds": record.deep_s,
                       "duration_light_sleep_state_seconds": record.light_s,
                       "duration_REM_sleep_state_seconds": record.rem_s},
            "awake": {"duration_awake_state_seconds": record.awake_s},
            "sleep_efficiency": record.sleep_efficiency_pct},
        "respiration_data": {
            "breaths_data": {"avg_breaths_per_min": record.respiratory_rate},
            "oxygen_saturation_data": {"avg_saturation_percentage": record.spo2_pct}},
        "temperature_data": {"delta": record.temperature_deviation_c},
    }
    daily = {
        "metadata": {"start_time": _local_iso(record.day_start, off),
                     "end_time": _local_iso(record.day_end, off), "upload_type": 1},
        "distance_data": {"steps": record.steps, "distance_meters": record.distance_m},
        "calories_data": {"net_activity_calories": record.active_energy_kcal},
    }
    out = []
    for kind, item, items in (("sleep", sleep, 13), ("daily", daily, 3)):
        # X-Terra-Trace-Id: unique per delivery, the same on Terra's retries.
        trace = ctx.delivery_id("terra", kind, record.user_id, record.day)
        body = {"type": kind, "user": user, "data": [item], "version": "2022-03-16"}
        out.append(UnsignedDelivery(_json(body), trace, items, {"trace_id": trace}))
    return out


# -- Garmin (push: dailies, sleeps, hrv) -------------------------------------------------------


def render_garmin(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    user = uid("garmin-user", record.user_id)
    common = {"userId": user, "userAccessToken": uid("garmin-token", record.user_id),
              "calendarDate": record.day.isoformat(),
              "startTimeOffsetInSeconds": record.utc_offset_min * 60}

    def summary(kind: str, start: datetime) -> str:
        # Garmin's summary ids look like "x<hex>-<hex start>"; updates reuse the same id.
        return f"x{uid(kind, record.user_id, record.day)[:8]}-{int(start.timestamp()):x}"

    body = {
        "dailies": [{**common, "summaryId": summary("dailies", record.day_start),
                     "startTimeInSeconds": int(record.day_start.timestamp()),
                     "durationInSeconds": 86_400, "steps": record.steps,
                     "distanceInMeters": record.distance_m,
                     "activeKilocalories": record.active_energy_kcal,
                     "restingHeartRateInBeatsPerMinute": record.resting_hr_bpm}],
        # As Garmin sends it: the monitored period (awake included), not the sleep.
        "sleeps": [{**common, "summaryId": summary("sleeps", record.sleep_start),
                    "startTimeInSeconds": int(record.sleep_start.timestamp()),
                    "durationInSeconds": record.time_in_bed_s,
                    "deepSleepDurationInSeconds": record.deep_s,
                    "lightSleepDurationInSeconds": record.light_s,
                    "remSleepInSeconds": record.rem_s,
                    "awakeDurationInSeconds": record.awake_s,
                    "respirationAvg": record.respiratory_rate,
                    "avgOxygenSaturation": record.spo2_pct}],
        "hrv": [{**common, "summaryId": summary("hrv", record.sleep_start),
                 "startTimeInSeconds": int(record.sleep_start.timestamp()),
                 "durationInSeconds": record.time_in_bed_s,
                 "lastNightAvg": record.hrv_rmssd_ms}],
    }
    delivery = ctx.delivery_id("garmin", record.user_id, record.day)
    # 4 daily values, 6 sleep values (deep + light + REM as total sleep, time in bed), HRV.
    return [UnsignedDelivery(_json(body), delivery, 11)]


# -- Apple Health via Health Auto Export ---------------------------------------------------------


def _hae_date(moment: datetime, offset_min: int) -> str:
    """Health Auto Export's ``yyyy-MM-dd HH:mm:ss Z`` in the user's local time."""
    return _local(moment, offset_min).strftime("%Y-%m-%d %H:%M:%S %z")


def _render_apple(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    off = record.utc_offset_min

    def metric(name: str, units: str, qty: float, at: datetime) -> dict[str, Any]:
        return {"name": name, "units": units, "data": [{"date": _hae_date(at, off), "qty": qty}]}

    hours = 3600.0
    metrics = [
        # Apple's HRV is SDNN, not RMSSD: a different statistic, rendered as Apple sends it.
        metric("heart_rate_variability", "ms", record.hrv_sdnn_ms, record.sleep_end),
        metric("resting_heart_rate", "count/min", record.resting_hr_bpm, record.day_start),
        metric("blood_oxygen_saturation", "%", record.spo2_pct, record.sleep_end),
        metric("respiratory_rate", "count/min", record.respiratory_rate, record.sleep_end),
        metric("step_count", "count", record.steps, record.day_start),
        metric("active_energy", "kcal", record.active_energy_kcal, record.day_start),
        # An absolute wrist temperature: the deviation around a typical 35.7 °C.
        metric("apple_sleeping_wrist_temperature", "degC",
               round(35.7 + record.temperature_deviation_c, 2), record.sleep_end),
        {"name": "sleep_analysis", "units": "hr", "data": [{
            "date": _hae_date(record.day_start, off),
            "totalSleep": round(record.sleep_duration_s / hours, 3),
            "asleep": 0, "core": round(record.light_s / hours, 3),
            "deep": round(record.deep_s / hours, 3), "rem": round(record.rem_s / hours, 3),
            "awake": round(record.awake_s / hours, 3),
            "sleepStart": _hae_date(record.sleep_start, off),
            "sleepEnd": _hae_date(record.sleep_end, off),
            "inBed": round(record.time_in_bed_s / hours, 3),
            "inBedStart": _hae_date(record.sleep_start, off),
            "inBedEnd": _hae_date(record.sleep_end, off)}]},
    ]
    body = {"data": {"metrics": metrics, "workouts": []}}
    # The phone posts for the AUREN user named in x-auren-user-id (an unbound API key).
    # 7 single values and 6 of the night (total sleep, 4 stages, time in bed).
    return [UnsignedDelivery(_json(body), ctx.delivery_id("apple", record.user_id, record.day),
                             13, {"user_id": record.user_id})]


# -- thin notifications ---------------------------------------------------------------------


def _render_oura(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    out = []
    for data_type in ("sleep", "daily_readiness", "daily_activity", "daily_spo2"):
        # Oura's object id names the record (stable); event_time makes each notification new.
        body = {"event_type": "create", "data_type": data_type,
                "object_id": uid("oura", data_type, record.user_id, record.day),
                "event_time": ctx.now_iso, "user_id": record.user_id}
        out.append(UnsignedDelivery(
            _json(body), ctx.delivery_id("oura", data_type, record.user_id, record.day), 1))
    return out


def _render_whoop(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    user = number_id(record.user_id, 6)
    out = []
    for kind in ("sleep.updated", "recovery.updated"):
        trace = ctx.delivery_id("whoop", kind, record.user_id, record.day)
        body = {"user_id": user, "id": uid("whoop", kind, record.user_id, record.day),
                "type": kind, "trace_id": trace}
        out.append(UnsignedDelivery(_json(body), trace, 1))
    return out


def _render_fitbit(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    owner = f"{number_id(record.user_id, 9):X}"
    body = [{"collectionType": kind, "date": record.day.isoformat(), "ownerId": owner,
             "ownerType": "user", "subscriptionId": f"{owner}-{kind}"}
            for kind in ("sleep", "activities")]
    return [UnsignedDelivery(_json(body), ctx.delivery_id("fitbit", record.user_id, record.day), 2)]


def _render_polar(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    user = number_id(record.user_id, 7)
    day = record.day.isoformat()
    out = []
    for event, url in (("SLEEP", f"https://www.polaraccesslink.com/v3/users/sleep/{day}"),
                       ("ACTIVITY_SUMMARY",
                        f"https://www.polaraccesslink.com/v3/users/activities/{day}")):
        body = {"event": event, "user_id": user, "date": day, "timestamp": ctx.now_iso,
                "url": url}
        out.append(UnsignedDelivery(
            _json(body), ctx.delivery_id("polar", event, record.user_id, day), 1,
            {"event": event}))
    return out


def _render_withings(record: DayRecord, ctx: RenderContext) -> list[UnsignedDelivery]:
    user = number_id(record.user_id, 7)
    out = []
    # appli 44 = sleep, 16 = activity; the window is what changed, in Unix seconds.
    for appli, start, end in ((44, record.sleep_start, record.sleep_end),
                              (16, record.day_start, record.day_end)):
        body = urlencode({"userid": user, "appli": appli, "startdate": int(start.timestamp()),
                          "enddate": int(end.timestamp())}).encode()
        out.append(UnsignedDelivery(
            body, ctx.delivery_id("withings", appli, record.user_id, record.day), 1))
    return out


@dataclass(frozen=True, slots=True)
class _Spec:
    setting: str  # the Settings field holding its secret
    render: Callable[[DayRecord, RenderContext], list[UnsignedDelivery]]


# Keyed like auren.providers.PROVIDER_CLASSES: the name is also the route segment.
PROVIDERS: dict[str, _Spec] = {
    "auren": _Spec("standard_webhook_secret", _render_native),
    "terra": _Spec("terra_signing_secret", render_terra),
    "garmin": _Spec("garmin_client_id", render_garmin),
    "apple": _Spec("hae_api_keys", _render_apple),
    "oura": _Spec("oura_client_secret", _render_oura),
    "whoop": _Spec("whoop_client_secret", _render_whoop),
    "fitbit": _Spec("fitbit_client_secret", _render_fitbit),
    "polar": _Spec("polar_signature_secret", _render_polar),
    "withings": _Spec("withings_enabled", _render_withings),
}


# -- choosing providers and signing ------------------------------------------------------------

SignFunction = Callable[..., dict[str, str]]


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """A provider ready to render for: its name (the route segment), first secret and the
    provider module's signer."""

    name: str
    secret: str
    spec: _Spec
    signer: SignFunction
    takes_secret: bool
    keywords: frozenset[str]

    def sign(self, unsigned: UnsignedDelivery, user_id: str, now: float, *,
             redelivery: bool = False) -> WebhookDelivery:
        # Every attempt is signed anew, as a provider does on a retry: a re-delivery has the
        # same ids and body but a fresh timestamp.
        pool: dict[str, Any] = {"timestamp": int(now), "timestamp_ms": int(now * 1000),
                                **unsigned.sign_args}
        kwargs = {k: v for k, v in pool.items() if k in self.keywords}
        args: tuple[Any, ...] = ((self.secret, unsigned.body) if self.takes_secret
                                 else (unsigned.body,))
        headers = self.signer(*args, **kwargs)
        return WebhookDelivery(self.name, f"/webhooks/{self.name}", headers, unsigned.body,
                               unsigned.delivery_id, user_id, unsigned.items, redelivery)

    def render(self, record: DayRecord, *, run_id: str, now: float) -> list[WebhookDelivery]:
        ctx = RenderContext(run_id, now)
        return [self.sign(u, record.user_id, now) for u in self.spec.render(record, ctx)]


def _secret(settings: Settings, setting: str) -> str | None:
    """The secret a sender signs with: the first of a rotation list (the current one)."""
    if setting == "withings_enabled":
        # Withings signs nothing; the bridge takes its route when enabled or IP-filtered.
        return "" if settings.withings_enabled or settings.withings_allowed_ips else None
    value = getattr(settings, setting)
    if not isinstance(value, tuple):
        raise TypeError(f"settings field {setting} is not a secret list")
    return value[0].get_secret_value() if value else None


def _signer(name: str) -> SignFunction:
    """``signed_headers`` of the module that defines the provider's class (every one has it)."""
    signer: SignFunction = sys.modules[PROVIDER_CLASSES[name].__module__].signed_headers
    return signer


def _signer_shape(fn: SignFunction) -> tuple[bool, frozenset[str], list[str]]:
    """Whether ``fn`` takes a secret, which keywords it accepts and which it requires."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = frozenset(p.name for p in params if p.kind == p.KEYWORD_ONLY)
    required = [p.name for p in params
                if p.kind == p.KEYWORD_ONLY and p.default is inspect.Parameter.empty]
    return len(positional) >= 2, keywords, required


# The keywords a renderer can supply to a provider's signed_headers.
_KNOWN_SIGN_ARGS = frozenset({"timestamp", "timestamp_ms", "msg_id", "trace_id", "event",
                              "user_id"})


def resolve_providers(settings: Settings, names: Iterable[str]
                      ) -> tuple[list[ProviderTarget], dict[str, str]]:
    """The providers that can be simulated, and why each of the others cannot.

    Raises:
        ValueError: a name the simulator does not know.
    """
    targets: list[ProviderTarget] = []
    skipped: dict[str, str] = {}
    for name in names:
        spec = PROVIDERS.get(name)
        if spec is None:
            raise ValueError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
        secret = _secret(settings, spec.setting)
        if secret is None:
            skipped[name] = (f"{spec.setting.upper()} is not set" if name != "withings" else
                             "neither WITHINGS_ENABLED nor WITHINGS_ALLOWED_IPS is set")
            continue
        if name == "apple" and ":" in secret:
            # A bound "user_id:key" entry may only write for that one user (403 otherwise).
            skipped[name] = ("the first HAE_API_KEYS entry is bound to one user (user_id:key); "
                             "simulating many users needs an unbound key first")
            continue
        signer = _signer(name)
        takes_secret, keywords, required = _signer_shape(signer)
        unknown = sorted(set(required) - _KNOWN_SIGN_ARGS)
        if unknown:
            skipped[name] = (f"the {name} signer needs {', '.join(unknown)}, which the "
                             "simulator does not supply")
            continue
        targets.append(ProviderTarget(name, secret, spec, signer, takes_secret, keywords))
    return targets, skipped

def render_deliveries(
    histories: Sequence[UserHistory],
    targets: Sequence[ProviderTarget],
    *,
    run_id: str | None = None,
    redeliver: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[WebhookDelivery]:
    """Every delivery for every user, day and provider, day by day, signed when produced.

    Lazy on purpose: a rate-limited run of many days signs each delivery just before it is
    sent, so its timestamp is always inside the receiver's replay window. ``redeliver`` is the
    probability that a delivery is immediately sent again as a provider retry would (same ids
    and body, new signature); those are marked ``redelivery=True``.
    """
    if not 0.0 <= redeliver <= 1.0:
        raise ValueError("redeliver must be between 0 and 1")
    run = run_id or uuid.uuid4().hex
    rng = random.Random(f"auren-sim-redeliver|{run}")
    for index in range(max((len(h.days) for h in histories), default=0)):
        for history in histories:
            if index >= len(history.days):
                continue
            record = history.days[index]
            for target in targets:
                now = clock()
                for unsigned in target.spec.render(record, RenderContext(run, now)):
                    yield target.sign(unsigned, record.user_id, now)
                    if redeliver and rng.random() < redeliver:
                        yield target.sign(unsigned, record.user_id, clock(), redelivery=True)
