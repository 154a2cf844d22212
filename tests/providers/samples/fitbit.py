"""Fitbit: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

import json

SECRET = "fitbit-secret"
BODY = json.dumps([
    {"collectionType": "sleep", "date": "2026-01-01", "ownerId": "7QX3KD", "ownerType": "user",
     "subscriptionId": "u-1234-sleep"},
    {"collectionType": "activities", "date": "2026-01-01", "ownerId": "7QX3KD",
     "ownerType": "user", "subscriptionId": "u-1234-activities"},
]).encode()
