"""Retention, the raw payload archive and ``auren reprocess`` embedded, black box: a real
``auren serve bridge`` on SQLite, then the real ``auren reprocess`` command on its data dir.

Oracle: the measurements sent, by their source record ids. Retention removes exactly those
older than RETENTION_DAYS; reprocessing puts back exactly the values the payloads carry (after
an older rule had stored them wrong, simulated by writing its result into the store), adds what
that rule had missed, brings back nothing retention removed, and a second run stores nothing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from auren.adapters.sqlite import SQLiteStore
from tests.helpers import NATIVE_SECRET, native_body, native_headers, run_server
from tests.services.archive_kit import TODAY, erase_archive, metric, weight

pytestmark = pytest.mark.slow

ENV = {"ARCHIVE_RAW_PAYLOADS": "true", "RETENTION_DAYS": "30", "RETENTION_INTERVAL_S": "1"}


SENT = {
    "arc-a": [[weight(2, 70.5, "a-new-1"), weight(3, 70.7, "a-new-2"),
               weight(45, 71.0, "a-old-1"), weight(60, 71.2, "a-old-2")],
              [weight(1, 70.1, "a-new-3")]],
    "arc-b": [[weight(1, 80.0, "b-new-1"), weight(2, 80.2, "b-new-2")]],
}
VALUES = {e["id"]: e["value"] for deliveries in SENT.values() for d in deliveries for e in d}
OLD = {"a-old-1", "a-old-2"}


def _events(path: Path) -> dict[str, tuple[float, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT source_record_id, value, provenance FROM biometric_events "
                            "WHERE user_id LIKE 'arc-%'").fetchall()
    assert len(rows) == len({r[0] for r in rows}), "an event stored twice"
    return {r[0]: (r[1], r[2]) for r in rows}


def _reprocess(data_dir: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_SECRET", "_URL", "_KEYS", "_SERVERS", "_DAYS"))}
    env.update({"AUREN_DATA_DIR": str(data_dir), "STANDARD_WEBHOOK_SECRET": NATIVE_SECRET,
                "RETENTION_DAYS": "30", "LOG_LEVEL": "WARNING"})
    done = subprocess.run([sys.executable, "-m", "auren", "reprocess", "--since",
                           str(TODAY - timedelta(days=7)), "--json", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_retention_archive_reprocess_and_erasure_embedded(tmp_path):
    with run_server("bridge", tmp_path, ENV) as bridge:
        with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
            for user, deliveries in SENT.items():
                for events in deliveries:
                    body = native_body(user, events)
                    answer = client.post("/webhooks/auren", content=body,
                                         headers=native_headers(body))
                    assert answer.status_code == 202, answer.text
            # Retention runs every second: exactly the two events older than 30 days go.
            deadline = time.monotonic() + 30
            while True:
                text = client.get("/metrics").text
                if metric(text, 'auren_retention_deleted_total{kind="events"}') == 2.0:
                    break
                assert time.monotonic() < deadline, text
                time.sleep(0.2)
            assert metric(text, 'auren_retention_runs_total{outcome="ok"}')
            assert metric(text, 'auren_retention_runs_total{outcome="failed"}') == 0.0
            assert metric(text, "auren_raw_archive_too_large_total") == 0.0
        store_path = bridge.data_dir / "auren.sqlite3"
        stored = _events(store_path)
        assert set(stored) == set(VALUES) - OLD
        assert all(provenance == "push" for _, provenance in stored.values())
    # One sealed payload per delivery, naming its user; the body is not readable in it.
    with sqlite3.connect(store_path) as conn:
        archived = conn.execute("SELECT delivery_key, users, sealed FROM raw_payloads "
                                "ORDER BY rowid").fetchall()
        assert [orjson.loads(users) for _, users, _ in archived] == [["arc-a"], ["arc-a"],
                                                                     ["arc-b"]]
        for _, _, sealed in archived:
            assert "a-new-1" not in sealed and "weight" not in sealed
        # An older rule misread the weights of arc-a (grams taken for kilograms) and missed
        # one measurement of arc-b: that is what the store holds before reprocessing.
        conn.execute("UPDATE biometric_events SET value = value * 1000 "
                     "WHERE user_id = 'arc-a'")
        conn.execute("DELETE FROM biometric_events WHERE source_record_id = 'b-new-2'")
        (deliveries_before,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()

    report = _reprocess(bridge.data_dir)
    assert report["failed"] == [] and report["unconfigured"] == {}
    assert (report["payloads"], report["deliveries"], report["repeated"]) == (3, 3, 0)
    assert report["expired"] == 2  # retention removed them: not brought back
    assert report["events"] == 3 + 2  # arc-a's recent three, arc-b's two
    assert report["stored"] == 3 + 1  # three corrected, one added
    after = _events(store_path)
    assert after == {
        "a-new-1": (70.5, "reprocess"), "a-new-2": (70.7, "reprocess"),
        "a-new-3": (70.1, "reprocess"), "b-new-1": (80.0, "push"),
        "b-new-2": (80.2, "reprocess")}

    again = _reprocess(bridge.data_dir)
    assert (again["deliveries"], again["repeated"], again["stored"]) == (3, 3, 0)
    assert _events(store_path) == after
    with sqlite3.connect(store_path) as conn:
        (deliveries_after,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
    assert deliveries_after == deliveries_before + 3  # the first run's three, no more

    # Only one person's payloads: --user.
    only_b = _reprocess(bridge.data_dir, "--user", "arc-b")
    assert (only_b["payloads"], only_b["stored"]) == (1, 0)

    # Erasure removes the person's archived payloads, and nobody else's.
    assert erase_archive(SQLiteStore(store_path), "arc-a") == 2
    with sqlite3.connect(store_path) as conn:
        left = conn.execute("SELECT users FROM raw_payloads").fetchall()
    assert left == [('["arc-b"]',)]
