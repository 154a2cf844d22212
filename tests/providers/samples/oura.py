"""Oura: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

import json

SECRET = "oura-secret"
BODY = json.dumps({
    "event_type": "update", "data_type": "daily_readiness",
    "object_id": "b1e0c8d2-5a55-4e0f-9c44-0d6f1a2b3c4d",
    "event_time": "2026-01-01T07:42:10+00:00", "user_id": "ou_8c31f0",
}).encode()
