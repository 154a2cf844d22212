"""The README's main job, run as a user would: a subprocess of the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_reconciles(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_KEYS", "_URL"))}
    env["AUREN_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-m", "auren", "demo", "--users", "2", "--days", "3"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every accepted item is stored exactly once" in done.stdout
    for provider in ("apple", "auren", "fitbit", "garmin", "oura", "polar", "terra", "whoop",
                     "withings"):
        assert provider in done.stdout
    assert "hrv_rmssd" in done.stdout and "hrv_sdnn" in done.stdout
    assert list((tmp_path / "data" / "demo").glob("*/auren.sqlite3"))
