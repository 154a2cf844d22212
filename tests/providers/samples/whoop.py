"""WHOOP: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

import json

from tests.providers._helpers import NOW

SECRET = "whoop-secret"
BODY = json.dumps({
    "user_id": 48210, "id": "3f6b2a90-1c4e-4d7a-9b1e-5a0c2d9e7f11", "type": "recovery.updated",
    "trace_id": "8d2c1e77-0b9a-4f3e-a6d5-91c0e4b7a222",
}).encode()
NOW_MS = NOW * 1000
