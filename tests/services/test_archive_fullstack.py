"""Retention, the raw payload archive and ``auren reprocess`` on the full stack, black box: a
real bridge, a real ``auren sink`` (which runs retention) and the real ``auren reprocess``
over real Kafka, PostgreSQL and Redis.

Oracle: the measurements sent, by source record id. Retention in the sink removes exactly the
events older than RETENTION_DAYS; the sealed payloads travel through Kafka with their delivery
and land in PostgreSQL; reprocessing through Kafka corrects the values an older rule stored
wrong (simulated by writing its result into PostgreSQL), adds what it missed, brings back
nothing expired, and a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import httpx
import orjson
import pytest

from auren.adapters.postgres import PostgresStore, partition_name
from auren.events import Delivery, make_event
from tests.helpers import free_port, native_body, native_headers, run_server
from tests.services.archive_kit import TODAY, erase_archive, metric, weight
from tests.stack import pg_fetch, service_env, start_sink

pytestmark = pytest.mark.slow

SENT = {
    "fsarc-a": [[weight(2, 70.5, "a-new-1"), weight(3, 70.7, "a-new-2"),
                 weight(45, 71.0, "a-old-1"), weight(400, 71.2, "a-old-2")],
                [weight(1, 70.1, "a-new-3")]],
    "fsarc-b": [[weight(1, 80.0, "b-new-1"), weight(2, 80.2, "b-new-2")]],
}
NEW = {"a-new-1", "a-new-2", "a-new-3", "b-new-1", "b-new-2"}


def _events(url: str) -> dict[str, tuple[float, str]]:
    rows = pg_fetch(url, "SELECT source_record_id, value, provenance FROM biometric_events "
                         "WHERE user_id LIKE 'fsarc-%'")
    assert len(rows) == len({r[0] for r in rows}), "an event stored twice"
    return {str(r[0]): (float(r[1]), str(r[2])) for r in rows}


def _wait(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _stored_event(day: date, record: str) -> Delivery:
    start = datetime.combine(day, dtime(6), UTC)
    event = make_event(provider="auren", user_id="fsarc-pre", provider_user_id="fsarc-pre",
                       metric="weight", value=69.0, unit="kg", start=start,
                       source_record_id=record, received_at=start)
    return Delivery(provider="auren", delivery_key=record, events=[event])


async def _store_before_retention(url: str, deliveries: list[Delivery]) -> None:
    store = PostgresStore(url)  # no retention: a year of monthly partitions back
    await store.open()
    try:
        await store.write_batch(deliveries)
    finally:
        await store.close()


def _tables(url: str) -> set[str]:
    rows = pg_fetch(url, "SELECT relname FROM pg_class WHERE relname LIKE 'biometric_events_y%'")
    return {str(r[0]) for r in rows}


def test_retention_archive_reprocess_and_erasure_on_the_full_stack(full_stack, tmp_path):
    env = full_stack.isolated(archive_raw_payloads="true", retention_days="30",
                              retention_interval_s="1")
    url = env["POSTGRES_URL"]
    # Stored before retention was turned on: the monthly partitions of the last year exist, and
    # two of them, wholly older than the cutoff, hold an event each. The sink drops them.
    early = [_stored_event(TODAY - timedelta(days=days), f"pre-{days}") for days in (45, 100)]
    old_months = {partition_name(datetime.combine(TODAY - timedelta(days=days), dtime(),
                                                  UTC)) for days in (45, 100)}
    asyncio.run(_store_before_retention(url, early))
    assert old_months <= _tables(url)
    sink_port = free_port()
    sink = start_sink(service_env({**env, "SINK_METRICS_PORT": str(sink_port)},
                                  tmp_path / "sink-data"), tmp_path)
    sink_metrics = f"http://127.0.0.1:{sink_port}/metrics"

    def sink_text() -> str:
        try:
            return httpx.get(sink_metrics, timeout=5).text
        except httpx.HTTPError:
            return ""

    try:
        with run_server("bridge", tmp_path, env) as bridge:
            with httpx.Client(base_url=bridge.base_url, timeout=10) as client:
                for user, deliveries in SENT.items():
                    for events in deliveries:
                        body = native_body(user, events)
                        answer = client.post("/webhooks/auren", content=body,
                                             headers=native_headers(body))
                        assert answer.status_code == 202, answer.text
            # The bridge does not run retention in the full stack: the sink does.
            assert "auren_retention_runs_total" not in httpx.get(
                bridge.base_url + "/metrics", timeout=10).text
            _wait(lambda: metric(sink_text(), 'auren_retention_deleted_total{kind="events"}')
                  == 2.0 + 2 and set(_events(url)) == NEW, "retention in the sink")
            assert not old_months & _tables(url)  # dropped whole
            data_dir = bridge.data_dir
        stored = _events(url)
        assert all(provenance == "push" for _, provenance in stored.values())
        archived = pg_fetch(url, "SELECT user_ids, sealed FROM raw_payloads ORDER BY id")
        assert sorted(tuple(users) for users, _ in archived) == [
            ("fsarc-a",), ("fsarc-a",), ("fsarc-b",)]
        assert not any("a-new-1" in sealed or "weight" in sealed for _, sealed in archived)
        # An older rule misread arc-a's weights and missed one of arc-b's measurements.
        pg_fetch(url, "UPDATE biometric_events SET value = value * 1000 "
                      "WHERE user_id = 'fsarc-a' RETURNING 1")
        pg_fetch(url, "DELETE FROM biometric_events WHERE source_record_id = 'b-new-2' "
                      "RETURNING 1")

        def reprocess() -> dict[str, Any]:
            child = service_env({**env, "LOG_LEVEL": "WARNING"}, data_dir)
            done = subprocess.run([sys.executable, "-m", "auren", "reprocess", "--since",
                                   str(TODAY - timedelta(days=7)), "--json"], env=child,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            report: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
            assert report["failed"] == [] and report["spooled"] == 0, report
            return report

        records_before = metric(sink_text(), "auren_sink_records_total") or 0.0
        report = reprocess()
        assert (report["payloads"], report["deliveries"], report["expired"]) == (3, 3, 2)
        assert report["stored"] == 5  # published: the sink applies them
        expected = {"a-new-1": (70.5, "reprocess"), "a-new-2": (70.7, "reprocess"),
                    "a-new-3": (70.1, "reprocess"), "b-new-1": (80.0, "push"),
                    "b-new-2": (80.2, "reprocess")}
        _wait(lambda: _events(url) == expected, "the corrections in PostgreSQL")
        deliveries = pg_fetch(url, "SELECT count(*) FROM deliveries")

        again = reprocess()
        assert (again["deliveries"], again["stored"]) == (3, 5)
        _wait(lambda: (metric(sink_text(), "auren_sink_records_total") or 0.0)
              >= records_before + 6, "the sink to consume both runs")
        assert _events(url) == expected
        assert pg_fetch(url, "SELECT count(*) FROM deliveries") == deliveries
    finally:
        assert sink.stop() == 0, sink.log()

    assert erase_archive(PostgresStore(url), "fsarc-a") == 2
    assert pg_fetch(url, "SELECT user_ids FROM raw_payloads") == [(["fsarc-b"],)]
