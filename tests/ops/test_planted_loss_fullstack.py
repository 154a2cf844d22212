"""The planted sparse loss in the full stack: a real bridge publishing to Kafka, a real sink
writing PostgreSQL, the lossy proxy in front of the bridge. Every engine and model must FAIL
with the exact count, reconciled by identity in PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.ops import workloads
from tests.helpers import NATIVE_SECRET
from tests.ops.helpers import dropped, lossy_proxy
from tests.stack import BridgeProcess, FullStack, service_env, start_sink

pytestmark = pytest.mark.slow
runner = CliRunner()
EVERY = 1000


@pytest.fixture(scope="module")
def plane(full_stack: FullStack, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[dict[str, str], str, Path]]:
    """An isolated bridge and sink on the stack, the lossy proxy in front of the bridge."""
    tmp = tmp_path_factory.mktemp("lossy-full")
    full_stack.ensure_up()
    env = full_stack.isolated()
    bridge = BridgeProcess(env, tmp / "bridge-data", tmp)
    bridge.start()
    sink = start_sink(service_env(env, tmp / "sink-data"), tmp)
    log = tmp / "dropped.jsonl"
    log.touch()
    try:
        with lossy_proxy(bridge.base_url, NATIVE_SECRET, log, EVERY) as url:
            yield env, url, log
    finally:
        sink.stop()
        bridge.stop()


@pytest.mark.parametrize("engine", [
    pytest.param(["--engine", "builtin", "--model", "closed", "-c", "16"], id="builtin-closed"),
    pytest.param(["--engine", "builtin", "--model", "open", "--rate", "800", "-c", "32"],
                 id="builtin-open"),
    pytest.param(["--engine", "wrk", "--model", "closed", "-c", "16"], id="wrk-closed"),
])
def test_one_in_a_thousand_dropped_fails_with_the_exact_count_in_postgres(
        plane: tuple[dict[str, str], str, Path], engine: list[str]) -> None:
    if "wrk" in engine and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/install-system)")
    env, url, log = plane
    offset = log.stat().st_size
    result = runner.invoke(app, ["loadtest", "--json", "-d", "6", *engine, "--bridge", url],
                           env={"POSTGRES_URL": env["POSTGRES_URL"],
                                "STANDARD_WEBHOOK_SECRET": NATIVE_SECRET})
    data: dict[str, Any] = json.loads(result.stdout)
    truth = dropped(log, offset)
    recon, step = data["reconciliation"], data["steps"][0]
    # Enough deliveries that the proxy's counter passed at least one multiple of 1000.
    assert step["requests"]["acknowledged"] >= EVERY, step
    assert len(truth) >= 1, truth
    assert result.exit_code == 1, data
    assert recon["status"] == "fail" and recon["store"].startswith("PostgreSQL"), recon
    assert recon["lost_requests"] == len(truth), (recon, truth)
    assert recon["lost"] == len(truth) * workloads.EVENTS_PER_WEBHOOK
    assert set(recon["lost_sample"]) <= {r for d in truth for r in d["records"]}
    assert recon["duplicated"] == 0 and recon["unexpected"] == 0
