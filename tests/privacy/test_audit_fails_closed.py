"""Nothing is disclosed without its audit record: while the audit log cannot be written (the
SQLite file's write lock held by another process past ``STORE_TIMEOUT_S``), a read that would
succeed is answered 503 without the data; once the log can be written again the same read is
answered and recorded. Real bridge process, real SQLite file."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.helpers import hrv_event, native_body, native_headers, run_server
from tests.privacy.kit import SERVICE, SETTINGS

pytestmark = pytest.mark.timeout(120)


def test_a_read_whose_audit_record_cannot_be_written_is_refused(tmp_path):
    with run_server("bridge", tmp_path, env={**SETTINGS, "STORE_TIMEOUT_S": "1"}) as bridge:
        body = native_body("locked-out-person", [hrv_event(3, 61.5)])
        stored = httpx.post(bridge.base_url + "/webhooks/auren", content=body,
                            headers=native_headers(body), timeout=30)
        assert stored.status_code == 202, stored.text
        url = bridge.base_url + "/api/v1/users/locked-out-person/events"
        holder = sqlite3.connect(bridge.data_dir / "auren.sqlite3", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            refused = httpx.get(url, headers=SERVICE, timeout=30)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "61.5" not in refused.text and "audit" in refused.json()["detail"]
        answered = httpx.get(url, headers=SERVICE, timeout=30)
        assert answered.status_code == 200
        assert [e["value"] for e in answered.json()["events"]] == [61.5]
        conn = sqlite3.connect(bridge.data_dir / "auren.sqlite3")
        try:
            outcomes = [r[0] for r in conn.execute(
                "SELECT outcome FROM audit_log WHERE user_id = 'locked-out-person'")]
        finally:
            conn.close()
        assert outcomes == [200]  # the refused read was never disclosed, nor recorded
