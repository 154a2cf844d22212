"""Many unique, correctly signed native webhooks, fast: the load generators' workload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
import uuid
from datetime import UTC, datetime

import orjson

from auren.events import iso
from auren.providers.native import EVENT_TYPE, decode_whsec
from auren.sim.render import WebhookDelivery

# (metric, unit, low, high, decimals): plausible values in canonical units.
_LOAD_METRICS: tuple[tuple[str, str, float, float, int], ...] = (
    ("hrv_rmssd", "ms", 25.0, 110.0, 1),
    ("resting_heart_rate", "/min", 45.0, 70.0, 0),
    ("spo2", "%", 94.0, 99.0, 1),
    ("respiratory_rate", "/min", 12.0, 18.0, 1),
    ("steps", "{steps}", 2000.0, 18000.0, 0),
    ("heart_rate", "/min", 50.0, 140.0, 0),
    ("temperature_deviation", "Cel", -0.5, 0.5, 2),
    ("active_energy", "kcal", 60.0, 900.0, 0),
)
_POOL = 64


def render_unique_native(
    n: int,
    secret: str,
    *,
    events_per_webhook: int = 5,
    users: int = 1000,
    now: float | None = None,
    prefix: str | None = None,
    path: str = "/webhooks/auren",
) -> list[WebhookDelivery]:
    """``n`` distinct, correctly signed native webhooks of ``events_per_webhook`` events each.

    Every webhook-id and every event's source record id is unique (``prefix`` defaults to a
    random tag, so two calls never collide), so a receiver stores each event exactly once and
    none of the load is absorbed by deduplication. The HMAC key is set up once and copied per
    message, and values come from small precomputed pools: about 100k webhooks a second.
    """
    if n < 0 or events_per_webhook < 1 or users < 1:
        raise ValueError("n must be >= 0, events_per_webhook and users >= 1")
    base = hmac.new(decode_whsec(secret), digestmod=hashlib.sha256)
    stamp = int(time.time() if now is None else now)
    stamp_text = str(stamp)
    tag = prefix or uuid.uuid4().hex[:12]
    rng = random.Random(f"auren-load|{tag}")
    table = [(metric, unit, [round(rng.uniform(low, high), dp) for _ in range(_POOL)])
             for metric, unit, low, high, dp in _LOAD_METRICS]
    # Measurements of the last day at minute resolution; the ids, not the times, make them new.
    first = (stamp // 60) * 60 - 86_400
    starts = [iso(datetime.fromtimestamp(first + 60 * m, UTC)) for m in range(1440)]
    out: list[WebhookDelivery] = []
    for i in range(n):
        user = f"load-{tag}-u{i % users:05d}"
        events = []
        for k in range(events_per_webhook):
            metric, unit, pool = table[(i + k) % len(table)]
            events.append({"metric": metric, "value": pool[(i + 13 * k) % _POOL], "unit": unit,
                           "start": starts[(7 * i + k) % 1440], "end": None,
                           "id": f"{tag}-{i}-{k}"})
        body = orjson.dumps({"type": EVENT_TYPE, "user_id": user, "events": events})
        msg_id = f"msg_{tag}_{i}"
        mac = base.copy()
        mac.update(f"{msg_id}.{stamp_text}.".encode())
        mac.update(body)
        headers = {"webhook-id": msg_id, "webhook-timestamp": stamp_text,
                   "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
                   "content-type": "application/json"}
        out.append(WebhookDelivery("auren", path, headers, body, msg_id, user,
                                   events_per_webhook))
    return out

