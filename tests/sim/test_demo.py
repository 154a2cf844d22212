"""``auren demo`` run as a user would: a subprocess of the real CLI, which itself starts a real
bridge (with its fetcher), the provider API simulator and NEUROS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_connects_every_provider_and_neuros_answers_from_fetched_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_KEYS", "_URL"))}
    env["AUREN_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "250"
    done = subprocess.run([sys.executable, "-m", "auren", "demo", "--users", "2", "--days", "4"],
                          capture_output=True, text=True, env=env, timeout=280, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "every account connected, every job done, every provider delivered" in out
    for provider in ("fitbit", "garmin", "oura", "polar", "terra", "whoop", "withings"):
        assert provider in out
    assert "backfill" in out and " fetch" in out and "push" in out
    assert out.count("NEUROS: You slept") == 2 and out.count("NEUROS: Your HRV") == 2
    assert "dead" not in out
    assert list((tmp_path / "data" / "demo").glob("*/auren.sqlite3"))
