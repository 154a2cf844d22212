"""The throughput benches' own parts: reading wrk's report, and reconciling by identity."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson

from auren.adapters.sqlite import SQLiteStore
from auren.events import Delivery, make_event
from auren.ops.reconcile import FAIL, PASS
from auren.settings import Settings
from bench.bridge_throughput import attribute, parse_wrk, reconcile, render_requests
from bench.fetcher_throughput import RunResult, _store_facts
from tests.helpers import NATIVE_SECRET, T0

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:40000/webhooks/auren
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    65.00ms   10.00ms 152.00ms   80.00%
    Req/Sec   750.00    100.00     1.00k    70.00%
  Latency Distribution
     50%   62.79ms
     75%  850.00us
     90%    1.20s
     99%  119.27ms
  7679 requests in 5.08s, 1.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec:   1512.00
Transfer/sec:    250.00KB
AUREN status 202 7676
AUREN status 503 3
AUREN loaded 40000
AUREN wrapped 0
AUREN accepted 38380
AUREN latency_us p50 62791
AUREN latency_us p99.9 126450
"""


def test_wrk_report_is_parsed_with_units_errors_and_lua_counts() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 7679 and result.duration_s == 5.08 and result.rps == 1512.0
    # The text report wins; done() only adds the percentile the text lacks.
    assert result.latency_ms == {"p50": 62.79, "p75": 0.85, "p90": 1200.0, "p99": 119.27,
                                 "p99.9": 126.45}
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 5}
    assert result.non_2xx_3xx == 3 and result.errors == 10
    assert result.statuses == {202: 7676, 503: 3} and result.answered_2xx == 7676
    assert (result.accepted_events, result.loaded, result.wrapped) == (38380, 40000, 0)


def _bodies(prefix: Path, threads: int) -> dict[int, dict]:
    """The JSON body of every request in wrk's pool files, by sequence number."""
    out = {}
    for thread in range(threads):
        data = Path(f"{prefix}.{thread}").read_bytes()
        position = 0
        while data:
            length, _, rest = data.partition(b"\n")
            raw, data = rest[:int(length)], rest[int(length):]
            out[thread + position * threads] = orjson.loads(raw.partition(b"\r\n\r\n")[2])
            position += 1
    return out


def _store(directory: Path, bodies: list[dict]) -> None:
    """What a bridge would have stored for these requests, in a real SQLite store."""
    deliveries = [Delivery(provider="auren", delivery_key=str(n), events=[
        make_event(provider="auren", user_id=body["user_id"], provider_user_id=body["user_id"],
                   metric="heart_rate", value=60, unit="/min", start=T0,
                   source_record_id=event["id"], received_at=T0) for event in body["events"]])
        for n, body in enumerate(bodies)]

    async def write() -> None:
        store = SQLiteStore(directory / "auren.sqlite3")
        await store.open()
        try:
            await store.write_batch(deliveries)
        finally:
            await store.close()

    asyncio.run(write())


def test_a_loss_hidden_by_totals_is_found_by_identity(tmp_path: Path) -> None:
    """Six requests over two wrk threads: five answered 202, one (request 4) in flight when wrk
    stopped. The store holds request 4's events (the bridge committed it) but not request 5's,
    which was acknowledged: the totals balance (five acknowledged, five stored), the ids do
    not."""
    threads, prefix, answers = 2, tmp_path / "requests", tmp_path / "answers"
    step = render_requests(prefix, "http://127.0.0.1:1", NATIVE_SECRET, 6, 2, threads)
    # Thread t's pool position p is request t + (p - 1) * threads.
    Path(f"{answers}.0").write_text("1 202\n2 202\n")  # requests 0 and 2; 4 had no answer
    Path(f"{answers}.1").write_text("1 202\n2 202\n3 202\n")  # requests 1, 3 and 5
    attribute(step, answers, threads, "AUREN handed 0 3 0\nAUREN handed 1 3 0\n")
    assert step.ledger.counts()["acknowledged"] == 5
    assert step.ledger.counts()["unanswered"] == 1
    bodies = _bodies(prefix, threads)
    lossy, whole = tmp_path / "lossy", tmp_path / "whole"
    lossy.mkdir()
    whole.mkdir()
    _store(lossy, [bodies[n] for n in range(5)])
    _store(whole, [bodies[n] for n in range(6)])

    found = reconcile(step, Settings.model_construct(auren_data_dir=lossy), lossy, wait_s=0.1)
    assert found.status == FAIL
    assert (found.lost, found.lost_requests) == (2, 1), found.detail
    assert found.unanswered == 1 and found.unanswered_stored_ids == 2
    assert "LOST 2 ids" in found.detail

    clean = reconcile(step, Settings.model_construct(auren_data_dir=whole), whole, wait_s=0.1)
    assert clean.status == PASS and clean.lost == 0 and clean.duplicated == 0, clean.detail


def test_a_store_that_cannot_be_read_is_not_reconciled_never_zero_lost(tmp_path: Path) -> None:
    step = render_requests(tmp_path / "requests", "http://127.0.0.1:1", NATIVE_SECRET, 2, 1, 1)
    Path(f"{tmp_path / 'answers'}.0").write_text("1 202\n2 202\n")
    attribute(step, tmp_path / "answers", 1, "AUREN handed 0 2 0\n")
    empty = tmp_path / "no-store"
    found = reconcile(step, Settings.model_construct(auren_data_dir=empty), empty, wait_s=0.1)
    assert found.status == "not reconciled" and found.lost is None
def test_fetcher_bench_counts_identities_stored_twice_and_days_with_events(
        tmp_path: Path) -> None:
    database = tmp_path / "auren.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute('CREATE TABLE biometric_events (event_id TEXT PRIMARY KEY, user_id TEXT, '
                     'provider TEXT, metric TEXT, start TEXT, "end" TEXT, '
                     'source_record_id TEXT)')
        row = ("u1", "oura", "hrv_rmssd", "2025-03-02T06:00:00Z", "2025-03-02T06:00:00Z", "s1")
        conn.executemany("INSERT INTO biometric_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [("a", *row), ("b", *row),  # one identity under two event ids
                          ("c", "u1", "whoop", "hrv_rmssd", "2025-03-03T06:00:00Z",
                           "2025-03-03T06:00:00Z", "s2")])
    total, twice, days = _store_facts(database)
    assert (total, twice) == (3, 1)
    assert days == {("u1", "oura", "2025-03-02"), ("u1", "whoop", "2025-03-03")}
    assert RunResult(jobs_done=5, seconds=2.0, events=10).passed
    assert RunResult(jobs_done=5, seconds=2.0).jobs_per_s == 2.0
    assert not RunResult(jobs_done=5, duplicated=1).passed
    assert not RunResult(jobs_done=0).passed


def test_a_bench_setting_must_name_an_auren_setting() -> None:
    import argparse

    import pytest

    from bench.bridge_throughput import _setting

    assert _setting("access_log=false") == ("ACCESS_LOG", "false")
    assert _setting("LOG_LEVEL=WARNING=x") == ("LOG_LEVEL", "WARNING=x")
    for bad in ("ACCESS_LOG", "NOT_A_SETTING=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            _setting(bad)


def test_webhook_cpu_bench_measures_the_app_and_checks_every_answer_and_event(
        tmp_path: Path) -> None:
    """The in-process bench on this tree and on a "tree" that is not AUREN: figures for the
    first (every answer 202, every event stored), a failed run and exit 1 for the second."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "cpu.json"
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "webhook_cpu.py"), "--runs", "1", "--webhooks",
         "400", "--events-per-webhook", "2", "--json", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every answer 202 and every event stored: yes" in done.stdout
    (summary,) = json.loads(out.read_text()).values()
    (run,) = summary["runs"]
    assert run["statuses"] == {"202": 400}
    assert run["stored_events"] == run["expected_events"] == (2_000 + 400) * 2
    assert run["cpu_us_per_webhook"] > 0 and run["webhook_in_units"] > 0
    assert summary["all_202_and_stored"] is True

    empty = tmp_path / "not-auren"
    empty.mkdir()
    failed = subprocess.run(
        [sys.executable, str(root / "bench" / "webhook_cpu.py"), "--runs", "1", "--webhooks",
         "100", "--tree", str(empty)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode == 1
    assert f"{empty}: no run succeeded" in failed.stdout
