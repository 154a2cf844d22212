"""The Original Bridge v1 as a real process: same verification, per-request direct writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.helpers import hrv_event, native_body, native_headers, run_server


def test_legacy_bridge_accepts_verifies_and_stores_each_request(tmp_path: Path) -> None:
    with run_server("legacy", tmp_path) as server:
        health = httpx.get(server.base_url + "/health", timeout=10)
        assert health.json()["serviceId"] == "auren-legacy-bridge"
        assert health.json()["status"] == "pass"
        body = native_body("legacy-user", [hrv_event(1), hrv_event(2)])
        headers = native_headers(body)
        url = server.base_url + "/webhooks/auren"
        assert httpx.post(url, content=body + b" ", headers=headers, timeout=10).status_code == 401
        first = httpx.post(url, content=body, headers=headers, timeout=10)
        assert first.status_code == 202 and first.json()["accepted"] == 2
        again = httpx.post(url, content=body, headers=headers, timeout=10)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert httpx.post(server.base_url + "/webhooks/oura", content=b"{}",
                          timeout=10).status_code == 404
    with sqlite3.connect(server.data_dir / "auren.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM biometric_events").fetchone()[0] == 2
