"""Withings data-update notifications: thin, form-encoded, and unsigned.

Withings documents no signature. Its advice is to accept notifications only from its published
address blocks (DNS TXT records ``ipblock-notify.withings.net`` and others), so
``WITHINGS_ALLOWED_IPS`` takes addresses and CIDR blocks and, when set, any other peer is
refused. Without it the route is open to anyone who knows the URL; it can only schedule
fetches, and a fetch returns nothing the user's token does not cover.

Subscribing makes Withings probe the callback with ``HEAD``, which must answer 2xx.

Body (``application/x-www-form-urlencoded``, epoch seconds)::

    userid=3318842&appli=44&startdate=1767218400&enddate=1767249000

plus, for some notifications, ``date`` (YYYY-MM-DD or epoch), ``deviceid`` and ``action``.
``appli`` is the data category (1 weight, 4 heart and blood pressure, 16 activity, 44 sleep…).
``startdate`` .. ``enddate`` is also the job's fetch window; every instant (and ``date``) must
lie in the plausible range of :mod:`auren.events`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from auren import events
from auren.errors import InvalidPayload, MalformedPayload, SignatureInvalid
from auren.events import Delivery, FetchJob, check_instant, fetch_job_id
from auren.providers._common import (
    EventBatch,
    Field,
    Subject,
    add_fields,
    any_id,
    calendar_date,
    epoch,
    ip_allowed,
    ip_networks,
    namespaced,
    optional,
    plausible_day,
)
from auren.providers.base import (
    HEAD_HANDSHAKE,
    HandshakeResponse,
    WebhookProvider,
    WebhookRequest,
    body_digest,
)
from auren.settings import Settings

_MAX_FIELDS = 32
_DIGITS = re.compile(r"[0-9]{1,12}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{1,12}")
_WORD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class WithingsProvider(WebhookProvider):
    name = "withings"
    # The subscription probe is a HEAD (a GET is not part of Withings' protocol).
    methods = HEAD_HANDSHAKE

    def __init__(self, allowed_ips: tuple[str, ...] = ()) -> None:
        self._networks = ip_networks(allowed_ips)

    @classmethod
    def from_settings(cls, settings: Settings) -> WithingsProvider | None:
        if not settings.withings_enabled and not settings.withings_allowed_ips:
            return None
        return cls(settings.withings_allowed_ips)

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        # No address check: answering the probe reveals nothing and changes nothing.
        if request.method == "HEAD":
            return HandshakeResponse(200)
        return None

    def verify(self, request: WebhookRequest, now: float) -> None:
        if self._networks and not ip_allowed(request.client_ip, self._networks):
            raise SignatureInvalid("the sender's address is not in WITHINGS_ALLOWED_IPS")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        try:
            pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True,
                              max_num_fields=_MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise MalformedPayload("body is not a form-urlencoded notification") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                raise MalformedPayload(f"{key[:64]} appears more than once")
            form[key] = value
        user = _required(form, "userid", _DIGITS)
        appli = _required(form, "appli", _DIGITS)
        params: dict[str, int | str] = {}
        for name, pattern in (("startdate", _DIGITS), ("enddate", _DIGITS), ("date", _DATE),
                              ("action", _WORD)):
            found = _field(form, name, pattern)
            if found is not None:
                params[name] = int(found) if pattern is _DIGITS else found
        identity = [params.get(k, "") for k in ("startdate", "enddate", "date", "action")]
        try:
            instants = {name: check_instant(epoch(params[name], name), received_at, name)
                        for name in ("startdate", "enddate") if name in params}
            day = params.get("date")
            if isinstance(day, str):
                if day.isdigit():
                    check_instant(epoch(int(day), "date"), received_at, "date")
                else:
                    plausible_day(calendar_date(params, "date"), received_at, "date")
            window = (instants["startdate"], instants["enddate"]) if len(instants) == 2 else None
            if window is not None and window[1] < window[0]:
                raise ValueError("enddate is before startdate")
            user_id = namespaced(self.name, user)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        job = FetchJob(
            job_id=fetch_job_id(self.name, user, appli, *identity),
            provider=self.name,
            # A notification knows only the provider's user; the fetcher stores the
            # events under the person whose connection that user is.
            user_id=user_id,
            provider_user_id=user,
            kind=appli,
            object_id=None,
            params=params,
            received_at=received_at,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
        )
        # Withings' older documentation asks for exactly 200; a 202 might count as a failure.
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        fetch_jobs=[job], success_status=200)


def _field(form: dict[str, str], name: str, pattern: re.Pattern[str]) -> str | None:
    value = form.get(name)
    if not value:
        return None
    if not pattern.fullmatch(value):
        raise InvalidPayload(f"{name} has an unexpected format")
    return value


def _required(form: dict[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = _field(form, name, pattern)
    if value is None:
        raise InvalidPayload(f"{name} is required")
    return value


def signed_headers(body: bytes) -> dict[str, str]:
    """Headers Withings sends (used by the simulator): there is nothing to sign."""
    return {"content-type": "application/x-www-form-urlencoded"}


# --- records fetched from the Public API (pure) -----------------------------------------------
#
# Every answer is ``{"status": N, "body": …}``. ``getmeas`` values are integers scaled by a
# power of ten (``value * 10^unit``); ``getactivity`` days are calendar days in the named time
# zone; ``getsummary`` durations are seconds and ``sleep_efficiency`` is a ratio (0.91), stored
# as a percentage. Skin temperature (73) is absolute.

# meastype -> (metric, unit)
MEASURES: dict[int, tuple[str, str]] = {
    1: ("weight", "kg"),
    6: ("body_fat", "%"),
    9: ("blood_pressure_diastolic", "mm[Hg]"),
    10: ("blood_pressure_systolic", "mm[Hg]"),
    11: ("heart_rate", "/min"),
    12: ("body_temperature", "Cel"),
    54: ("spo2", "%"),
    71: ("body_temperature", "Cel"),
    73: ("skin_temperature", "Cel"),
}
# What to ask getmeas for, per notification category (appli).
MEASURE_TYPES: dict[str, tuple[int, ...]] = {"1": (1, 6), "4": (9, 10, 11, 12, 54, 71, 73)}
ACTIVITY_FIELDS: tuple[Field, ...] = (
    ("steps", "steps", "{steps}"),
    ("distance", "distance", "m"),
    ("calories", "active_energy", "kcal"),
    ("totalcalories", "total_energy", "kcal"),
)
SLEEP_FIELDS: tuple[Field, ...] = (
    ("data.total_sleep_time", "sleep_duration", "s"),
    ("data.total_timeinbed", "time_in_bed", "s"),
    ("data.lightsleepduration", "sleep_light", "s"),
    ("data.deepsleepduration", "sleep_deep", "s"),
    ("data.remsleepduration", "sleep_rem", "s"),
    ("data.wakeupduration", "sleep_awake", "s"),
    ("data.rr_average", "respiratory_rate", "/min"),
    ("data.sleep_score", "sleep_score", "{score}"),
)
_MAX_EXPONENT = 12


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise events.MeasurementError(f"{what} must be an object", events.INVALID_ITEM)
    return value


def scaled(value: Any, unit: Any) -> float:
    """``value * 10^unit``, Withings' integer encoding of a measurement."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or isinstance(unit, bool)
            or not isinstance(unit, int) or abs(unit) > _MAX_EXPONENT):
        raise events.MeasurementError("value and unit must be numbers (value * 10^unit)",
                                      events.INVALID_VALUE)
    return float(value) * 10.0 ** int(unit)


def measure_group(group: Any, subject: Subject, batch: EventBatch) -> None:
    item = _object(group, "measure group")
    at = epoch(item.get("date"), "date")
    grpid = any_id(item, "grpid")
    measures = item.get("measures")
    if not isinstance(measures, list):
        raise events.MeasurementError("measures must be an array", events.INVALID_ITEM)
    for measure in measures:
        entry = _object(measure, "measure")
        kind = entry.get("type")
        found = MEASURES.get(kind) if isinstance(kind, int) else None
        if found is None:
            continue
        metric, unit = found
        where = f"measure.{kind}"
        try:
            value = scaled(entry.get("value"), entry.get("unit"))
        except events.MeasurementError as exc:
            batch.skip(where, exc.reason, str(exc))
            continue
        batch.measure(subject, where, metric, value, unit, field=f"type {kind}", start=at,
                      record=f"{grpid}:{kind}")


def activity_day(item: Any, subject: Subject, batch: EventBatch) -> None:
    entry = _object(item, "activity")
    day = calendar_date(entry, "date")
    start, end = _zoned_day(day, entry.get("timezone"))
    add_fields(batch, subject, entry, ACTIVITY_FIELDS, name="activity", start=start, end=end,
               record=f"activity:{day}")


def sleep_summary(item: Any, subject: Subject, batch: EventBatch) -> None:
    entry = _object(item, "sleep")
    start = epoch(entry.get("startdate"), "startdate")
    end = epoch(entry.get("enddate"), "enddate")
    record = optional(any_id, entry, "id")
    add_fields(batch, subject, entry, SLEEP_FIELDS, name="sleep", start=start, end=end,
               record=record)
    data = entry.get("data")
    ratio = data.get("sleep_efficiency") if isinstance(data, dict) else None
    if ratio is not None:
        value = ratio * 100 if isinstance(ratio, int | float) and not isinstance(
            ratio, bool) else ratio
        batch.measure(subject, "sleep.data.sleep_efficiency", "sleep_efficiency", value, "%",
                      field="data.sleep_efficiency", start=start, end=end, record=record)


def _zoned_day(day: str, zone: Any) -> tuple[datetime, datetime]:
    """The calendar day in the IANA zone Withings names (UTC when it names none we know)."""
    try:
        tz = ZoneInfo(zone) if isinstance(zone, str) and 0 < len(zone) <= 64 else UTC
    except (ZoneInfoNotFoundError, ValueError, OSError):
        tz = UTC
    first = datetime.combine(date.fromisoformat(day), datetime.min.time(), tz)
    return first.astimezone(UTC), (first + timedelta(days=1)).astimezone(UTC)
