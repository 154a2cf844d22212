"""``auren loadtest --compare legacy,bridge`` against real bridges: both driven with the same
signed workload, figures and ratios from what was measured, every webhook reconciled by
identity; on the embedded default and (slow) on the full stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.ops.compare import Comparison, Plan, parse_pair
from auren.ops.procs import ServiceSet, free_port
from auren.ops.sla import webhook_row
from auren.ops.target import Target
from tests.ops.helpers import ROOT, env_of, url_options
from tests.stack import FullStack, service_env

runner = CliRunner()
QUICK = ["--compare", "legacy,bridge", "-c", "8", "-d", "2", "--ramp", "4,8",
         "--engine", "builtin", "--json"]


def _check(summary: dict[str, Any], mode: str) -> None:
    medians, ratios = summary["medians"], summary["ratios"]
    for service in ("legacy", "bridge"):
        assert medians[service]["throughput"] > 0, service
        assert medians[service]["cpu_mean_pct"] is not None, service
        assert medians[service]["rss_peak_mb"] > 0, service
    assert ratios["throughput"] == round(medians["bridge"]["throughput"]
                                         / medians["legacy"]["throughput"], 2)
    assert summary["mode"] == mode and summary["runs"] == 2
    assert f"the ratio is {ratios['throughput']:g}x, not 100x" in summary["verdict"]
    assert medians["bridge"]["batch_mean"] >= 1 and medians["legacy"]["batch_mean"] is None
    # Both bridges got the same kind of steps, alternating which went first.
    labels = [s["label"] for s in summary["steps"] if "conn" in s["label"]
              and s["label"].startswith("compare") and s["connections"] == 8
              and s["duration_s"] >= 1.5 and "closed" not in s["label"]]
    assert [label.split()[1] for label in labels] == ["legacy", "bridge", "bridge", "legacy"]
    recon = summary["reconciliation"]
    assert recon["status"] == "pass" and recon["lost"] == 0 and recon["duplicated"] == 0
    assert recon["acknowledged"] == sum(
        s["requests"]["acknowledged"] for s in summary["steps"])


def test_compare_on_the_embedded_default(embedded: Target) -> None:
    result = runner.invoke(app, ["loadtest", *QUICK, "--runs", "2", *url_options(embedded)],
                           env=env_of(embedded))
    assert result.exit_code == 0, result.stdout
    _check(json.loads(result.stdout), "embedded")


def test_compare_usage_errors() -> None:
    for bad in ("bridge", "legacy,neuros", "bridge,bridge"):
        with pytest.raises(ValueError, match="legacy,bridge"):
            parse_pair(bad)
    assert parse_pair("bridge,legacy") == ("bridge", "legacy")
    result = runner.invoke(app, ["loadtest", "--compare", "legacy,neuros", "--bridge",
                                 "http://127.0.0.1:1"])
    assert result.exit_code == 2


def test_a_ratio_is_not_claimed_without_its_denominator() -> None:
    empty = Comparison("legacy", "bridge", Plan(), webhook_row([]))
    assert empty.verdict().startswith("n/a")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compare_on_the_full_stack(full_stack: FullStack, tmp_path: Path) -> None:
    env = service_env(full_stack.isolated(), tmp_path / "data")
    ports = {name: free_port() for name in ("neuros", "legacy", "bridge", "gateway")}
    with ServiceSet(tmp_path / "data", env, ports) as services:
        urls = [part for name in ports for part in (f"--{name}", services.urls[name])]
        child_env = {**{k: v for k, v in os.environ.items()
                        if not k.endswith(("_URL", "_SERVERS", "_SECRET"))},
                     **{k: v for k, v in env.items() if k.isupper()}}
        done = subprocess.run(
            [sys.executable, "-m", "auren", "loadtest", *QUICK, "--runs", "2", *urls],
            cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _check(json.loads(done.stdout), "full stack")
