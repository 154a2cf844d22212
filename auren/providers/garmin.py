"""Garmin Health API webhooks: push summaries inline, or ping items that name a pull URL.

Garmin signs nothing. A request carries ``garmin-client-id`` (the consumer key), compared here
in constant time against every configured id. The key is not a strong secret, so the route
should also be HTTPS-only and, where possible, behind an IP filter.

Body: top-level keys are summary types, each an array of items::

    {"dailies": [{"userId": "4aa0e1d7-…", "summaryId": "x153a9f3-5f0a2e80-6",
                  "startTimeInSeconds": 1767222000, "durationInSeconds": 86400,
                  "steps": 8412, "restingHeartRateInBeatsPerMinute": 51, …}]}

An item with ``callbackURL`` is a ping (the data must be pulled): it becomes a fetch job. A push
item becomes canonical events spanning ``startTimeInSeconds`` (UTC) to that plus
``durationInSeconds``.

Sleep: ``durationInSeconds`` is the whole monitored period, awake time included (in Garmin's
own example it equals deep + light + REM + awake), so it is stored as ``time_in_bed``; total
sleep (``sleep_duration``) is deep + light + REM.

Intraday series sent beside the summaries are kept, one event per sample at its own instant
(start + offset, no end): heart rate (dailies ``timeOffsetHeartRateSamples``), SpO2 (``pulseox``
and sleeps ``timeOffsetSleepSpo2``), respiration (``allDayRespiration`` and sleeps
``timeOffsetSleepRespiration``) and 5-minute HRV (hrv ``hrvValues``). Their event ids hash the
instant and the summary id, so re-sent summaries map to the same events. ``epochs``
(15-minute buckets) are not stored: they repeat the daily totals' steps and energy at a finer
grain, and both would be summed together; they are counted as ignored, as are
``stressDetails`` and the other summaries AUREN has no metric for. Lifecycle items
(``deregistrations``, ``userPermissionsChange``) store nothing.

A summary is a full push of many measurements: a value that cannot be stored (a resting heart
rate of 0 from a watch not worn) is skipped and reported in the answer, the rest is stored. A
summary without a plausible time frame is skipped whole and reported; one whose user cannot be
read is refused with a 422, as is a ping whose URL is not Garmin's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import (
    INVALID_ITEM,
    INVALID_TIME,
    INVALID_VALUE,
    Delivery,
    FetchJob,
    MeasurementError,
    check_instant,
    fetch_job_id,
    item_error,
)
from auren.providers._common import (
    MAX_DURATION_S,
    EventBatch,
    Subject,
    any_id,
    duration,
    encode,
    epoch,
    https_url,
    ident,
    is_ident,
    namespaced,
    optional,
)
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    any_matches,
    body_digest,
    load_json,
    require_dict,
)

# (field of a push item, metric, unit)
PUSH_FIELDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "dailies": (
        ("steps", "steps", "{steps}"),
        ("distanceInMeters", "distance", "m"),
        ("activeKilocalories", "active_energy", "kcal"),
        ("restingHeartRateInBeatsPerMinute", "resting_heart_rate", "/min"),
        ("averageHeartRateInBeatsPerMinute", "heart_rate", "/min"),
    ),
    "sleeps": (
        # Not sleep_duration: the monitored period, awake time included.
        ("durationInSeconds", "time_in_bed", "s"),
        ("deepSleepDurationInSeconds", "sleep_deep", "s"),
        ("lightSleepDurationInSeconds", "sleep_light", "s"),
        ("remSleepInSeconds", "sleep_rem", "s"),
        ("awakeDurationInSeconds", "sleep_awake", "s"),
        ("overallSleepScore", "sleep_score", "{score}"),
    ),
    # Garmin's nightly HRV average is RMSSD.
    "hrv": (("lastNightAvg", "hrv_rmssd", "ms"),),
    "bodyComps": (
        ("weightInGrams", "weight", "g"),
        ("bodyFatInPercent", "body_fat", "%"),
    ),
    "skinTemp": (("avgDeviationCelsius", "temperature_deviation", "Cel"),),
}

# Total sleep is the sum of the stages, never durationInSeconds.
SLEEP_STAGES = ("deepSleepDurationInSeconds", "lightSleepDurationInSeconds", "remSleepInSeconds")

# Sample maps {offset in seconds from the start: value}: (accepted field names, metric, unit).
# Implementations disagree on the respiration map's name, so both spellings are read.
SampleField = tuple[tuple[str, ...], str, str]
SAMPLE_FIELDS: dict[str, tuple[SampleField, ...]] = {
    "dailies": ((("timeOffsetHeartRateSamples",), "heart_rate", "/min"),),
    "sleeps": ((("timeOffsetSleepSpo2",), "spo2", "%"),
               (("timeOffsetSleepRespiration",), "respiratory_rate", "/min")),
    # Garmin's HRV values are RMSSD over 5-minute windows, like its nightly average.
    "hrv": ((("hrvValues",), "hrv_rmssd", "ms"),),
    "pulseox": ((("timeOffsetSpo2Values",), "spo2", "%"),),
    "allDayRespiration": ((("timeOffsetEpochToBreaths", "timeOffsetRespirationValues"),
                           "respiratory_rate", "/min"),),
}

DEREGISTRATION = "deregistrations"
LIFECYCLE = frozenset({DEREGISTRATION, "userPermissionsChange"})
# The pull API's path segment of a summary type, where it differs from the ping's key.
PULL_KINDS = {"pulseox": "pulseOx"}


@dataclass(slots=True)
class _Parsed:
    batch: EventBatch
    jobs: list[FetchJob] = field(default_factory=list)
    ignored: int = 0


class GarminProvider(WebhookProvider):
    name = "garmin"
    secrets_field = "garmin_client_id"
    signature_headers = ("garmin-client-id",)
    option_fields: ClassVar[dict[str, str]] = {
        "max_events": "max_events_per_delivery",
        "max_samples": "max_samples_per_delivery",
    }

    def __init__(self, client_ids: tuple[str, ...], *, max_events: int = 5000,
                 max_samples: int = 20_000) -> None:
        self._ids = tuple(encode(c) for c in client_ids)
        self._max_events = max_events
        self._max_samples = max_samples

    def verify(self, request: WebhookRequest, now: float) -> None:
        presented = request.header("garmin-client-id")
        if not presented:
            raise SignatureInvalid("missing garmin-client-id header")
        if not any_matches(self._ids, [encode(presented.strip())]):
            raise SignatureInvalid("garmin-client-id is not a configured consumer key")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        parsed = _Parsed(EventBatch(self._max_events, self._max_samples))
        total = 0
        for kind, items in body.items():
            if not isinstance(items, list):
                raise InvalidPayload(f"{kind[:64]} must be an array")
            total += len(items)
            if total > self._max_events:
                raise InvalidPayload(f"at most {self._max_events} summaries per delivery")
            for index, item in enumerate(items):
                try:
                    self._item(kind, item, parsed, received_at)
                except ValueError as exc:
                    raise item_error(index, str(exc), path=kind[:64]) from None
        return Delivery(provider=self.name, delivery_key=body_digest(request.body),
                        events=parsed.batch.all_events, fetch_jobs=parsed.jobs,
                        ignored=parsed.ignored, skipped=parsed.batch.skipped)

    def _item(self, kind: str, item: Any, parsed: _Parsed, received_at: datetime) -> None:
        if not isinstance(item, dict):
            raise ValueError("must be an object")
        if kind in LIFECYCLE:
            if kind == DEREGISTRATION:
                # The user withdrew AUREN's access at Garmin: the fetcher marks the connection.
                user = ident(item, "userId")
                parsed.jobs.append(FetchJob(
                    job_id=fetch_job_id(self.name, user, kind, received_at.date()),
                    provider=self.name, user_id=namespaced(self.name, user),
                    provider_user_id=user, kind=kind, object_id=None, params={},
                    received_at=received_at))
            return
        user = ident(item, "userId")
        if "callbackURL" in item:
            if not is_ident(kind):
                raise ValueError("a ping's summary type must be an identifier")
            url = https_url(item.get("callbackURL"), "callbackURL", domain="garmin.com")
            parsed.jobs.append(FetchJob(
                job_id=fetch_job_id(self.name, user, kind, url),
                provider=self.name,
                user_id=namespaced(self.name, user),
                provider_user_id=user,
                kind=kind,
                object_id=None,
                params={"callback_url": url},
                received_at=received_at,
            ))
            return
        subject = Subject(self.name, namespaced(self.name, user), user, received_at)
        if not summary_events(kind, item, subject, parsed.batch):
            parsed.ignored += 1


def summary_events(kind: str, item: dict[str, Any], subject: Subject,
                   batch: EventBatch) -> bool:
    """Add the events of one summary of ``kind`` (pushed, or pulled from a ping's URL);
    returns False when it carried nothing AUREN keeps (nothing stored, nothing skipped).

    A summary without a plausible time frame is skipped whole and reported.
    """
    fields = PUSH_FIELDS.get(kind, ())
    samples = SAMPLE_FIELDS.get(kind, ())
    if not fields and not samples:
        return False
    before = (len(batch), batch.skipped_count)
    try:
        record = optional(any_id, item, "summaryId")
        start_key = ("measurementTimeInSeconds"
                     if item.get("measurementTimeInSeconds") is not None
                     else "startTimeInSeconds")
        start = check_instant(epoch(item.get(start_key), start_key), subject.received_at,
                              start_key)
        length = item.get("durationInSeconds")
        end = None if length is None else start + timedelta(
            seconds=duration(length, "durationInSeconds"))
    except MeasurementError as exc:
        # Without its time frame no measurement of the summary can be placed.
        batch.skip(kind, exc.reason, str(exc))
        return True
    for name, metric, unit in fields:
        value = _number(item.get(name))
        if value is not None:
            batch.measure(subject, f"{kind}.{name}", metric, value, unit, field=name,
                          start=start, end=end, record=record)
    if kind == "sleeps":
        _total_sleep(item, subject, start, end, record, batch)
    for names, metric, unit in samples:
        _samples(kind, item, names, metric, unit, subject, start, record, batch)
    return (len(batch), batch.skipped_count) != before


def _total_sleep(item: dict[str, Any], subject: Subject, start: datetime,
             end: datetime | None, record: str | None, batch: EventBatch) -> None:
    stages = [item.get(name) for name in SLEEP_STAGES if item.get(name) is not None]
    if not stages:
        return
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in stages):
        batch.skip("sleeps.sleep_duration", INVALID_VALUE,
                   "total sleep needs numeric deep, light and REM durations")
        return
    batch.measure(subject, "sleeps.sleep_duration", "sleep_duration", sum(stages), "s",
                  field="deep + light + REM", start=start, end=end, record=record)


def _samples(kind: str, item: dict[str, Any], names: tuple[str, ...], metric: str,
         unit: str, subject: Subject, start: datetime, record: str | None,
         batch: EventBatch) -> None:
    name = next((n for n in names if item.get(n) is not None), None)
    if name is None:
        return
    values = item[name]
    where = f"{kind}.{name}"
    if not isinstance(values, dict):
        batch.skip(where, INVALID_ITEM, f"{name} must be an object of offset: value")
        return
    for offset_text, value in values.items():
        if not (offset_text.isascii() and offset_text.isdigit() and len(offset_text) <= 7
                and int(offset_text) <= MAX_DURATION_S):
            batch.skip(where, INVALID_TIME, f"{name} offsets must be seconds from the start")
            continue
        if value is not None:
            at = start + timedelta(seconds=int(offset_text))
            batch.measure(subject, where, metric, value, unit,
                          field=f"{name}.{offset_text}", start=at, record=record,
                          sample=True)


def _number(value: Any) -> Any:
    # Some summaries wrap a number as {"value": 82, "qualifierKey": "GOOD"}.
    if isinstance(value, dict):
        return value.get("value")
    return value


def signed_headers(client_id: str, body: bytes) -> dict[str, str]:
    """Headers Garmin adds to a notification (used by the simulator); nothing depends on body."""
    return {"garmin-client-id": client_id, "content-type": "application/json"}
