"""``auren db backup`` / ``auren db restore`` against real processes: a backup taken while
signed webhooks flow into a real bridge, restored elsewhere, holds every event acknowledged
before the backup began, by identity. SQLite here; PostgreSQL (a real server) is marked slow."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_server
from tests.ops.helpers import auren_db
from tests.ops.webhook_flow import WebhookFlow
from tests.stack import TEST_ENCRYPTION_KEY, FullStack, pg_fetch, service_env


def sqlite_records(data_dir: Path, prefix: str) -> set[str]:
    with sqlite3.connect(f"file:{data_dir / 'auren.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT source_record_id FROM biometric_events WHERE user_id LIKE ?",
                            (prefix + "%",)).fetchall()
    return {str(r[0]) for r in rows}


def backup_under_flow(base_url: str, prefix: str, env: dict[str, str], file: Path
                      ) -> tuple[WebhookFlow, float, float]:
    """Webhooks flow before, during and after ``auren db backup FILE``; returns the flow and
    the monotonic times the backup command began and ended."""
    with WebhookFlow(base_url, prefix) as flow:
        flow.wait_acknowledged(100)
        began = time.monotonic()
        done = auren_db("backup", str(file), env=env)
        ended = time.monotonic()
        flow.wait_acknowledged(50, after=ended)
    assert done.returncode == 0, done.stdout + done.stderr
    assert flow.answered_between(began, ended) > 0, "nothing flowed during the backup"
    return flow, began, ended


def check_restored(flow: WebhookFlow, began: float, ended: float, restored: set[str]) -> None:
    before = flow.acknowledged_before(began)
    missing = before - restored
    assert not missing, f"{len(missing)} events acknowledged before the backup are not in " \
                        f"the restore, e.g. {sorted(missing)[:5]}"
    assert restored <= flow.all_sent(), "the restore holds events nobody sent"
    # A snapshot: nothing first sent after the backup finished can be in it.
    assert not restored & flow.sent_after(ended)


def test_sqlite_backup_while_webhooks_flow_holds_every_acknowledged_event(tmp_path: Path
                                                                          ) -> None:
    prefix = f"bk-{uuid.uuid4().hex[:6]}"
    file = tmp_path / "backups" / "auren.sqlite3.bak"
    with run_server("bridge", tmp_path) as bridge:
        env = service_env({}, bridge.data_dir)
        flow, began, ended = backup_under_flow(bridge.base_url, prefix, env, file)
    manifest = json.loads((file.parent / (file.name + ".json")).read_text())
    assert manifest["store"] == "sqlite" and manifest["events"] > 0
    fresh = tmp_path / "restored"
    done = auren_db("restore", str(file), env=service_env({}, fresh))
    assert done.returncode == 0, done.stdout + done.stderr
    restored = sqlite_records(fresh, prefix)
    check_restored(flow, began, ended, restored)
    assert len(restored) == manifest["events"]
    assert f"restored: {manifest['events']} events" in done.stdout


def test_sqlite_restore_refuses_a_store_in_use_a_full_one_and_a_damaged_file(tmp_path: Path
                                                                            ) -> None:
    prefix = f"rf-{uuid.uuid4().hex[:6]}"
    file = tmp_path / "b.sqlite3"
    with run_server("bridge", tmp_path) as bridge:
        env = service_env({}, bridge.data_dir)
        with WebhookFlow(bridge.base_url, prefix, workers=1) as flow:
            flow.wait_acknowledged(5)
        assert auren_db("backup", str(file), env=env).returncode == 0
        in_use = auren_db("restore", str(file), "--force", env=env)
        assert in_use.returncode == 2 and "in use" in in_use.stderr
    # Stopped: the store is not in use any more, but it holds events.
    full = auren_db("restore", str(file), env=env)
    assert full.returncode == 2 and "--force" in full.stderr
    forced = auren_db("restore", str(file), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert sqlite_records(bridge.data_dir, prefix) == flow.acknowledged()
    # One byte changed: the manifest's SHA-256 no longer matches.
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    damaged = auren_db("restore", str(file), env=service_env({}, tmp_path / "x"))
    assert damaged.returncode == 2 and "manifest" in damaged.stderr
    stranger = tmp_path / "not-a-backup"
    stranger.write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000)
    refused = auren_db("restore", str(stranger), env=service_env({}, tmp_path / "y"))
    assert refused.returncode == 2 and "not an AUREN SQLite store" in refused.stderr
    nothing = auren_db("backup", str(tmp_path / "c"), env=service_env({}, tmp_path / "empty"))
    assert nothing.returncode == 2 and "no SQLite store" in nothing.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_postgres_backup_while_webhooks_flow_holds_every_acknowledged_event(
        full_stack: FullStack, tmp_path: Path) -> None:
    """The bridge on PostgreSQL alone (a webhook is answered once PostgreSQL committed it),
    pg_dump under the flow, pg_restore into another database."""
    prefix = f"pgbk-{uuid.uuid4().hex[:6]}"
    source = full_stack.new_database()
    file = tmp_path / "auren.pgdump"
    # With PostgreSQL the bridge needs the key the OAuth tokens are encrypted with.
    keyed = {"AUREN_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY}
    with run_server("bridge", tmp_path, {"POSTGRES_URL": source, **keyed}) as bridge:
        env = service_env({"POSTGRES_URL": source, **keyed}, bridge.data_dir)
        flow, began, ended = backup_under_flow(bridge.base_url, prefix, env, file)
    manifest = json.loads((tmp_path / "auren.pgdump.json").read_text())
    assert manifest["store"] == "postgresql" and manifest["kafka"] is None
    target = full_stack.new_database()
    done = auren_db("restore", str(file), env=service_env({"POSTGRES_URL": target, **keyed},
                                                           tmp_path / "r"))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pg_fetch(target, "SELECT source_record_id FROM biometric_events WHERE user_id "
                            "LIKE $1", prefix + "%")
    restored = {str(r[0]) for r in rows}
    assert len(rows) == len(restored) == manifest["events"]
    check_restored(flow, began, ended, restored)
    # The password never reached a command line: it is not in what the tools printed.
    assert source.split(":")[2].split("@")[0] not in done.stdout + done.stderr
    again = auren_db("restore", str(file), env=service_env({"POSTGRES_URL": target, **keyed},
                                                            tmp_path / "r"))
    assert again.returncode == 2 and "--force" in again.stderr
