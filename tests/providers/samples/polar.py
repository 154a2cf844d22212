"""Polar: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

import json

SECRET = "polar-secret"
BODY = json.dumps({
    "event": "EXERCISE", "user_id": 70012, "entity_id": "Kq83zP",
    "timestamp": "2026-01-01T10:15:02Z",
    "url": "https://www.polaraccesslink.com/v3/exercises/Kq83zP",
}).encode()
PING = b'{"event":"PING","timestamp":"2026-01-01T10:15:02Z"}'
