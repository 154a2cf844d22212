"""The benches' pure parts: reading wrk's report and reconciling with the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from auren.sim.load import render_unique_native
from bench.bridge_throughput import EVENTS_PER_WEBHOOK, parse_wrk, raw_request, reconcile
from bench.fetcher_throughput import RunResult, _store_facts
from tests.helpers import NATIVE_SECRET

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


def _store(path: Path, deliveries: int) -> Path:
    database = path / "auren.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE biometric_events (event_id TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE deliveries (provider TEXT, delivery_key TEXT)")
        conn.executemany("INSERT INTO deliveries VALUES ('auren', ?)",
                         [(str(i),) for i in range(deliveries)])
        conn.executemany("INSERT INTO biometric_events VALUES (?)",
                         [(f"{i}-{k}",) for i in range(deliveries)
                          for k in range(EVENTS_PER_WEBHOOK)])
    return database


def test_reconciliation_accepts_requests_cut_off_at_the_end_but_not_losses(
        tmp_path: Path) -> None:
    wrk = parse_wrk(f"AUREN status 202 90\nAUREN accepted {90 * EVENTS_PER_WEBHOOK}\n")
    ok = reconcile(wrk, _store(tmp_path, 95), connections=10)
    assert ok.ok, ok.detail
    lost_dir = tmp_path / "lost"
    lost_dir.mkdir()
    lost = reconcile(wrk, _store(lost_dir, 80), connections=10)
    assert not lost.ok and "LOST" in lost.detail


def test_raw_requests_carry_the_signed_headers_and_exact_length() -> None:
    (delivery,) = render_unique_native(1, NATIVE_SECRET)
    raw = raw_request(delivery, "127.0.0.1:1")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == delivery.body
    assert head.startswith(b"POST /webhooks/auren HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert f"webhook-signature: {delivery.headers['webhook-signature']}".encode() in head


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
