"""The disaster-recovery drill of docs/DR.md, executed: the full stack takes webhooks while
PostgreSQL is backed up; later PostgreSQL's data is lost (the database dropped) while webhooks
keep being acknowledged through Kafka; the backup is restored, the sink group set back to the
offsets the backup saved, the sink started again; and every webhook acknowledged at any time,
before the backup, after it, and while PostgreSQL was gone, is in PostgreSQL exactly once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_server
from tests.ops.helpers import auren_db
from tests.ops.webhook_flow import WebhookFlow
from tests.stack import FullStack, pg_fetch, service_env, start_sink, wait_for_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def stored(url: str, prefix: str) -> set[str]:
    rows = pg_fetch(url, "SELECT source_record_id FROM biometric_events WHERE user_id LIKE $1",
                    prefix + "%")
    return {str(r[0]) for r in rows}


def test_lose_postgres_restore_the_backup_and_replay_kafka(full_stack: FullStack,
                                                           tmp_path: Path) -> None:
    full_stack.ensure_up()
    env = full_stack.isolated()
    url = env["POSTGRES_URL"]
    prefix = f"dr-{uuid.uuid4().hex[:6]}"
    file = tmp_path / "auren.pgdump"
    tools_env = service_env(env, tmp_path / "tools")
    with run_server("bridge", tmp_path, env) as bridge:
        sink = start_sink(service_env(env, tmp_path / "sink-data"), tmp_path)
        try:
            with WebhookFlow(bridge.base_url, prefix) as flow:
                flow.wait_acknowledged(100)
                deadline = time.monotonic() + 60
                while len(stored(url, prefix)) < 100:  # the sink has committed offsets
                    assert time.monotonic() < deadline, sink.log()[-2000:]
                    time.sleep(0.2)
                backup = auren_db("backup", str(file), env=tools_env)
                assert backup.returncode == 0, backup.stdout + backup.stderr
                assert "offsets of sink group" in backup.stdout
                flow.wait_acknowledged(100, after=time.monotonic())
                # Disaster: PostgreSQL's data is gone. The sinks are stopped (they would only
                # fail), the bridge keeps acknowledging webhooks into Kafka.
                assert sink.stop() == 0
                full_stack.lose_database(url)
                assert stored_or_none(url, prefix) is None
                flow.wait_acknowledged(100, after=time.monotonic())
            assert set(flow.statuses()) == {202}, flow.statuses()
            restore = auren_db("restore", str(file), env=tools_env)
            assert restore.returncode == 0, restore.stdout + restore.stderr
            assert "set back to the backup's offsets" in restore.stdout
            assert "GAP" not in restore.stdout
            from_backup = stored(url, prefix)
            acknowledged = flow.acknowledged()
            assert acknowledged - from_backup, "nothing was left for Kafka to replay"
            sink = start_sink(service_env(env, tmp_path / "sink-data-2"), tmp_path)
            counts = wait_for_records(url, prefix, acknowledged, timeout=120)
        finally:
            sink.stop()
    missing = acknowledged - set(counts)
    assert not missing, f"LOST: {len(missing)} acknowledged events, e.g. {sorted(missing)[:5]}"
    assert all(n == 1 for n in counts.values()), "an event is stored twice"
    assert set(counts) <= flow.all_sent()


def stored_or_none(url: str, prefix: str) -> set[str] | None:
    """The stored records, or None when the events table does not exist."""
    if not pg_fetch(url, "SELECT to_regclass('biometric_events') IS NOT NULL")[0][0]:
        return None
    return stored(url, prefix)
