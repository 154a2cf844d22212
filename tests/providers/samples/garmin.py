"""Garmin: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

CLIENT_ID = "3c1f0a9e-consumer-key"
USER = "4aa0e1d7-8b2c-4d3e-9f10-a1b2c3d4e5f6"
START = 1_767_222_000  # 2025-12-31T23:00:00Z
DAILY = {"userId": USER, "userAccessToken": "8be1", "summaryId": "x153a9f3-5f0a2e80-6",
         "calendarDate": "2026-01-01", "startTimeInSeconds": START,
         "startTimeOffsetInSeconds": 3600, "durationInSeconds": 86400, "steps": 8412,
         "distanceInMeters": 6230.5, "activeKilocalories": 512,
         "restingHeartRateInBeatsPerMinute": 51, "averageHeartRateInBeatsPerMinute": 67,
         "timeOffsetHeartRateSamples": {"0": 58, "15": 59, "30": 61}}
