"""WHOOP developer API webhooks (v1 and v2 models): thin notifications.

``X-WHOOP-Signature`` is the base64 HMAC-SHA256, keyed with the application's client secret, of
``X-WHOOP-Signature-Timestamp`` (Unix milliseconds, signed as the text sent) followed directly
by the raw body. WHOOP documents no replay window; the common ±300 s applies.

Body (the record is fetched later: ``/v2/activity/sleep/{id}``, ``/v2/activity/workout/{id}``
or the recovery of a cycle)::

    {"user_id": 48210, "id": "3f6b2a90-…", "type": "recovery.updated", "trace_id": "8d2c1e77-…"}

``id`` is an integer in the v1 model and a UUID in v2. ``trace_id`` identifies the delivery
across WHOOP's retries and is the deduplication key.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, ClassVar

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import (
    INVALID_ITEM,
    Delivery,
    FetchJob,
    MeasurementError,
    check_instant,
    fetch_job_id,
)
from auren.providers._common import (
    EventBatch,
    Field,
    Subject,
    add_fields,
    any_id,
    encode,
    ident,
    namespaced,
    optional,
    timestamp,
)
from auren.providers.base import (
    WebhookProvider,
    WebhookRequest,
    any_matches,
    b64decode_strict,
    body_digest,
    check_tolerance,
    hmac_sha256,
    load_json,
    parse_epoch,
    require_dict,
)


def sign(secret: str, timestamp_ms: str, body: bytes) -> str:
    return base64.b64encode(hmac_sha256(secret.encode(), timestamp_ms.encode() + body)).decode()


class WhoopProvider(WebhookProvider):
    name = "whoop"
    secrets_field = "whoop_client_secret"
    signature_headers = ("x-whoop-signature", "x-whoop-signature-timestamp")
    option_fields: ClassVar[dict[str, str]] = {"tolerance_s": "signature_tolerance_s"}

    def __init__(self, secrets: tuple[str, ...], *, tolerance_s: int = 300) -> None:
        self._keys = tuple(encode(s) for s in secrets)
        self._tolerance_s = tolerance_s

    def verify(self, request: WebhookRequest, now: float) -> None:
        signature = request.header("x-whoop-signature")
        stamp = request.header("x-whoop-signature-timestamp")
        if not signature or not stamp:
            raise SignatureInvalid(
                "missing X-WHOOP-Signature or X-WHOOP-Signature-Timestamp header")
        check_tolerance(parse_epoch(stamp, milliseconds=True), now, self._tolerance_s)
        presented = b64decode_strict(signature)
        # parse_epoch accepted only ASCII digits, so this is the text WHOOP signed.
        signed = stamp.strip().encode() + request.body
        expected = [hmac_sha256(key, signed) for key in self._keys]
        if presented is None or not any_matches(expected, [presented]):
            raise SignatureInvalid("X-WHOOP-Signature does not match")

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        body = require_dict(load_json(request.body), "body")
        try:
            user = ident(body, "user_id")
            object_id = ident(body, "id")
            kind = ident(body, "type")
            trace_id = optional(any_id, body, "trace_id")
            user_id = namespaced(self.name, user)
        except ValueError as exc:
            raise InvalidPayload(str(exc)) from None
        job = FetchJob(
            job_id=fetch_job_id(self.name, user, kind, object_id, trace_id or ""),
            provider=self.name,
            # A notification knows only the provider's user; the fetcher stores the
            # events under the person whose connection that user is.
            user_id=user_id,
            provider_user_id=user,
            kind=kind,
            object_id=object_id,
            params={"trace_id": trace_id},
            received_at=received_at,
        )
        return Delivery(provider=self.name, delivery_key=trace_id or body_digest(request.body),
                        fetch_jobs=[job])


def signed_headers(secret: str, body: bytes, *, timestamp_ms: int) -> dict[str, str]:
    """Headers WHOOP adds to a notification (used by the simulator)."""
    stamp = str(timestamp_ms)
    return {
        "x-whoop-signature-timestamp": stamp,
        "x-whoop-signature": sign(secret, stamp, body),
        "content-type": "application/json",
    }


# --- records fetched from the API (pure) ------------------------------------------------------
#
# v2 sleeps, recoveries and cycles. Durations are milliseconds (``*_milli``); HRV is RMSSD
# (``hrv_rmssd_milli``); skin temperature is absolute; a cycle's ``kilojoule`` is its whole
# energy expenditure, basal included, in kJ (stored as total energy in kcal: / 4.184). A
# record that is not ``SCORED`` has no score yet and carries nothing.

_STAGES = "score.stage_summary"
SLEEP_FIELDS: tuple[Field, ...] = (
    (f"{_STAGES}.total_in_bed_time_milli", "time_in_bed", "ms"),
    (f"{_STAGES}.total_awake_time_milli", "sleep_awake", "ms"),
    (f"{_STAGES}.total_light_sleep_time_milli", "sleep_light", "ms"),
    (f"{_STAGES}.total_slow_wave_sleep_time_milli", "sleep_deep", "ms"),
    (f"{_STAGES}.total_rem_sleep_time_milli", "sleep_rem", "ms"),
    ("score.respiratory_rate", "respiratory_rate", "/min"),
    ("score.sleep_efficiency_percentage", "sleep_efficiency", "%"),
)
RECOVERY_FIELDS: tuple[Field, ...] = (
    ("score.recovery_score", "recovery_score", "{score}"),
    ("score.resting_heart_rate", "resting_heart_rate", "/min"),
    ("score.hrv_rmssd_milli", "hrv_rmssd", "ms"),
    ("score.spo2_percentage", "spo2", "%"),
    ("score.skin_temp_celsius", "skin_temperature", "Cel"),
)
CYCLE_FIELDS: tuple[Field, ...] = (
    ("score.kilojoule", "total_energy", "kJ"),
    ("score.strain", "strain", "{score}"),
)
_ASLEEP = ("total_light_sleep_time_milli", "total_slow_wave_sleep_time_milli",
           "total_rem_sleep_time_milli")


def _scored(record: Any) -> dict[str, Any] | None:
    if not isinstance(record, dict):
        raise MeasurementError("must be an object", INVALID_ITEM)
    return record if record.get("score_state", "SCORED") == "SCORED" else None


def _frame(record: dict[str, Any], subject: Subject) -> tuple[datetime, datetime | None]:
    start = check_instant(timestamp(record, "start"), subject.received_at, "start")
    end = optional(timestamp, record, "end")
    return start, check_instant(end, subject.received_at, "end") if end else None


def sleep_window(record: Any, subject: Subject) -> tuple[datetime, datetime | None]:
    """A sleep's start and end (what its recovery is placed in)."""
    if not isinstance(record, dict):
        raise MeasurementError("must be an object", INVALID_ITEM)
    return _frame(record, subject)


def sleep(record: Any, subject: Subject, batch: EventBatch) -> None:
    """A sleep's stages, time in bed, respiration and efficiency; total sleep is light + deep
    + REM (never the time in bed, which includes the time awake)."""
    scored = _scored(record)
    if scored is None:
        return
    start, end = _frame(scored, subject)
    sleep_id = optional(any_id, scored, "id")
    add_fields(batch, subject, scored, SLEEP_FIELDS, name="sleep", start=start, end=end,
               record=sleep_id)
    stages = scored.get("score", {}).get("stage_summary") if isinstance(
        scored.get("score"), dict) else None
    if isinstance(stages, dict) and all(isinstance(stages.get(k), int | float)
                                        and not isinstance(stages.get(k), bool)
                                        for k in _ASLEEP):
        batch.measure(subject, "sleep.total", "sleep_duration", sum(stages[k] for k in _ASLEEP),
                      "ms", field="light + slow wave + REM", start=start, end=end,
                      record=sleep_id)


def recovery(record: Any, window: tuple[datetime, datetime | None], subject: Subject,
             batch: EventBatch) -> None:
    """A recovery, placed in the sleep it was measured in (``window``)."""
    scored = _scored(record)
    if scored is None:
        return
    cycle = optional(any_id, scored, "cycle_id")
    add_fields(batch, subject, scored, RECOVERY_FIELDS, name="recovery", start=window[0],
               end=window[1], record=f"cycle:{cycle}" if cycle else None)


def cycle(record: Any, subject: Subject, batch: EventBatch) -> None:
    """A finished cycle's energy and strain. The current cycle (no ``end``) is left out: its
    energy still grows, and the finished value is stored once it ends."""
    scored = _scored(record)
    if scored is None or scored.get("end") is None:
        return
    start, end = _frame(scored, subject)
    cycle_id = optional(any_id, scored, "id")
    add_fields(batch, subject, scored, CYCLE_FIELDS, name="cycle", start=start, end=end,
               record=f"cycle:{cycle_id}" if cycle_id else None)
