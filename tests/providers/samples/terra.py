"""Terra: sample webhook payloads and the credentials the tests configure."""

from __future__ import annotations

SECRET = "terra-secret"
USER = {"user_id": "9f1e6a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "provider": "OURA",
        "reference_id": "acct_1234", "scopes": None,
        "last_webhook_update": "2026-01-01T08:59:01Z"}
SLEEP = {
    "type": "sleep", "version": "2022-03-16", "user": USER,
    "data": [{
        "metadata": {"start_time": "2025-12-31T23:10:00+01:00",
                     "end_time": "2026-01-01T07:05:00+01:00", "summary_id": "s-771",
                     "is_nap": False, "upload_type": 1},
        "heart_rate_data": {"summary": {"avg_hr_bpm": 54.0, "resting_hr_bpm": 49.0,
                                        "avg_hrv_rmssd": 61.5, "avg_hrv_sdnn": 70.2}},
        "sleep_durations_data": {
            "asleep": {"duration_asleep_state_seconds": 25320,
                       "duration_deep_sleep_state_seconds": 5000,
                       "duration_light_sleep_state_seconds": 14920,
                       "duration_REM_sleep_state_seconds": 5400},
            "awake": {"duration_awake_state_seconds": 1200},
            "sleep_efficiency": 91.0},
        "respiration_data": {"breaths_data": {"avg_breaths_per_min": 14.2},
                             "oxygen_saturation_data": {"avg_saturation_percentage": 96.8}},
        "temperature_data": {"delta": -0.3},
    }],
}
DAILY = {
    "type": "daily", "user": {**USER, "reference_id": None},
    "data": [{
        "metadata": {"start_time": "2026-01-01T00:00:00+01:00",
                     "end_time": "2026-01-02T00:00:00+01:00"},
        "distance_data": {"steps": 8412, "distance_meters": 6230},
        "calories_data": {"total_burned_calories": 2380, "net_activity_calories": 540},
        "heart_rate_data": {"summary": {"resting_hr_bpm": 51}},
    }],
}
BODY_DATA = {
    "type": "body", "user": USER,
    "data": [{
        "metadata": {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"},
        "measurements_data": {"measurements": [
            {"measurement_time": "2026-01-01T07:30:00Z", "weight_kg": 72.4,
             "bodyfat_percentage": 18.5, "BMI": 22.1}]},
        "temperature_data": {"body_temperature_samples": [
            {"timestamp": "2026-01-01T07:31:00Z", "temperature_celsius": 36.7}]},
        "blood_pressure_data": {"blood_pressure_samples": [
            {"timestamp": "2026-01-01T07:32:00Z", "systolic_bp": 118, "diastolic_bp": 76}]},
    }],
}
ACTIVITY = {
    "type": "activity", "user": USER,
    "data": [{
        "metadata": {"start_time": "2026-01-01T10:00:00Z", "end_time": "2026-01-01T10:45:00Z",
                     "summary_id": "act-9"},
        "distance_data": {"summary": {"steps": 5100, "distance_meters": 7400}},
        "heart_rate_data": {"summary": {"avg_hr_bpm": 148}},
    }],
}
