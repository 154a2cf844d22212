"""Planted faults against the real embedded bridge: sparse losses must FAIL with the exact count
for every engine and model, and a store that is empty or foreign must never PASS.

The lossy proxy (``tests/ops/lossy_proxy.py``, a real process) sits in front of the real bridge
and answers every 1000th correctly signed webhook with a 202 itself, never forwarding it. Its
log is the truth: the deliveries (and record ids) acknowledged but not stored.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.ops import workloads
from auren.ops.target import Target
from tests.ops.helpers import dropped, env_of, lossy_proxy, url_options

runner = CliRunner()
EVERY = 1000
ENGINES = [
    pytest.param(["--engine", "builtin", "--model", "closed", "-c", "16"], id="builtin-closed"),
    pytest.param(["--engine", "builtin", "--model", "open", "--rate", "900", "-c", "32"],
                 id="builtin-open"),
    pytest.param(["--engine", "wrk", "--model", "closed", "-c", "16"], id="wrk-closed"),
]


@pytest.fixture(scope="module")
def lossy(embedded: Target, tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("lossy") / "dropped.jsonl"
    log.touch()
    secret = env_of(embedded)["STANDARD_WEBHOOK_SECRET"].split(",")[0]
    with lossy_proxy(embedded.urls["bridge"], secret, log, EVERY) as url:
        yield url, log


def _loadtest(target: Target, bridge: str, *extra: str) -> tuple[int, dict[str, Any]]:
    options = url_options(target)
    options[options.index("--bridge") + 1] = bridge
    result = runner.invoke(app, ["loadtest", "--json", "-d", "4", *extra, *options],
                           env=env_of(target))
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("engine", ENGINES)
def test_one_in_a_thousand_dropped_fails_with_the_exact_count(
        embedded: Target, lossy: tuple[str, Path], engine: list[str]) -> None:
    if "wrk" in engine and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/install-system)")
    url, log = lossy
    offset = log.stat().st_size
    code, data = _loadtest(embedded, url, *engine)
    truth = dropped(log, offset)
    recon = data["reconciliation"]
    step = data["steps"][0]
    sent = step["requests"]["acknowledged"] + step["requests"]["rejected"]
    # Enough deliveries that the proxy's counter passed at least two multiples of 1000.
    assert sent >= 2 * EVERY, step
    assert len(truth) >= 2, truth
    assert code == 1, data
    assert recon["status"] == "fail", recon
    # The exact loss: every dropped delivery, each of its events, and nothing else.
    assert recon["lost_requests"] == len(truth), (recon, truth)
    assert recon["lost"] == len(truth) * workloads.EVENTS_PER_WEBHOOK
    records = {r for d in truth for r in d["records"]}
    assert set(recon["lost_sample"]) <= records
    assert recon["duplicated"] == 0 and recon["unexpected"] == 0
    assert f"LOST {recon['lost']} ids of {len(truth)} acknowledged requests" in recon["detail"]


def test_a_clean_run_through_the_same_proxy_passes(embedded: Target,
                                                   lossy: tuple[str, Path]) -> None:
    # Fewer than 1000 signed deliveries pass the proxy's counter: nothing is dropped, and the
    # same reconciliation that failed above passes, so it fails only on a real loss.
    url, log = lossy
    offset = log.stat().st_size
    code, data = _loadtest(embedded, url, "--engine", "builtin", "--model", "open", "--rate",
                           "100", "-d", "2")
    recon = data["reconciliation"]
    if dropped(log, offset):  # the counter crossed a multiple of 1000 during this run
        assert recon["status"] == "fail"
        return
    assert code == 0 and recon["status"] == "pass" and recon["lost"] == 0, recon


def test_empty_data_dir_is_not_reconciled_and_does_not_pass(embedded: Target,
                                                            tmp_path: Path) -> None:
    options = url_options(embedded)
    options[options.index("--data-dir") + 1] = str(tmp_path)
    result = runner.invoke(app, ["loadtest", "--json", "-c", "4", "-d", "1", "--engine",
                                 "builtin", *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    recon = json.loads(result.stdout)["reconciliation"]
    assert recon["status"] == "not reconciled" and recon["lost"] is None, recon
    assert "does not exist" in recon["detail"] and "no loss was measured" in recon["detail"]
    human = runner.invoke(app, ["loadtest", "-c", "4", "-d", "1", "--engine", "builtin",
                                *options], env=env_of(embedded))
    assert human.exit_code == 1
    assert "NOT RECONCILED" in human.stdout and "lost 0" not in human.stdout.lower()


def test_foreign_data_dir_fails_with_every_acknowledged_id_lost(embedded: Target,
                                                               tmp_path: Path) -> None:
    # A copy of the deployment's store taken before the run: the right schema, someone
    # else's rows, none of this run's.
    assert embedded.data_dir is not None
    with sqlite3.connect(embedded.data_dir / "auren.sqlite3") as live, \
            sqlite3.connect(tmp_path / "auren.sqlite3") as copy:
        live.backup(copy)
    options = url_options(embedded)
    options[options.index("--data-dir") + 1] = str(tmp_path)
    result = runner.invoke(app, ["loadtest", "--json", "-c", "4", "-d", "1", "--engine",
                                 "builtin", *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    recon = json.loads(result.stdout)["reconciliation"]
    assert recon["status"] == "fail" and recon["lost"] == recon["acknowledged_ids"] > 0
    assert "is it the store of the deployment under test" in recon["detail"]


def test_no_reconcile_is_said_and_not_a_pass_of_the_loss_check(embedded: Target,
                                                              tmp_path: Path) -> None:
    options = url_options(embedded)
    options[options.index("--data-dir") + 1] = str(tmp_path)
    result = runner.invoke(app, ["loadtest", "--json", "-c", "4", "-d", "1", "--engine",
                                 "builtin", "--no-reconcile", *options], env=env_of(embedded))
    assert result.exit_code == 0, result.output
    recon = json.loads(result.stdout)["reconciliation"]
    assert recon["status"] == "not reconciled" and recon["opted_out"]
    assert "--no-reconcile" in recon["detail"] and recon["lost"] is None


def test_validate_through_the_lossy_proxy_fails_with_the_exact_count(
        embedded: Target, lossy: tuple[str, Path], tmp_path: Path) -> None:
    # The run the toolkit once called PASS with "Events lost: 0".
    url, log = lossy
    offset = log.stat().st_size
    sla = tmp_path / "sla.yaml"
    sla.write_text("sla:\n  - {name: webhooks, service: bridge, method: POST, path: "
                   "/webhooks/auren,\n     latency_ms: 500, percentile: 95, error_rate: 0.01, "
                   "rate: 200, duration_s: 4}\n")
    options = url_options(embedded)
    options[options.index("--bridge") + 1] = url
    result = runner.invoke(app, ["validate", "--quick", "--json", "--sla", str(sla), "--ramp",
                                 "10", "--no-faults", "--reports", str(tmp_path / "reports"),
                                 *options], env=env_of(embedded))
    summary = json.loads(result.stdout)
    truth = dropped(log, offset)
    assert len(truth) >= 1, summary
    assert result.exit_code == 1 and summary["verdict"] == "FAIL", summary
    lost = len(truth) * workloads.EVENTS_PER_WEBHOOK
    assert summary["performance"]["events_lost"] == lost, (summary["performance"], truth)
    run = json.loads(Path(summary["report"]["json"]).read_text())
    assert run["reconciliation"]["lost_requests"] == len(truth)
    assert f"**{lost}**" in Path(summary["report"]["md"]).read_text()
