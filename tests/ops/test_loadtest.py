"""The load engines and the load test against real servers: coordinated omission, SLA
breaches, dropped events, the ramp's breaking point and the generator self-check."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.ops import loadgen, workloads
from auren.ops.target import Target
from tests.ops.helpers import env_of, fake_service, url_options

runner = CliRunner()
STALL_S = 1.0


def test_open_model_reports_a_stall_that_the_closed_model_hides() -> None:
    # The fake answers at once, except that ~1 s after its first request it stops answering
    # anything for STALL_S. Both models see the same stall.
    with fake_service("--stall-at", "1.0", "--stall-s", str(STALL_S)) as url:
        opened = asyncio.run(loadgen.run_open(url, workloads.health(url, "/x"), rate=200,
                                              duration_s=3.0, connections=8))
    with fake_service("--stall-at", "1.0", "--stall-s", str(STALL_S)) as url:
        closed = asyncio.run(loadgen.run_closed(url, workloads.health(url, "/x"),
                                                connections=8, duration_s=3.0))
    assert not opened.invalid, opened.invalid_reason
    # Open model: ~200 requests were due during the stall, each waiting up to STALL_S for it
    # to end. At ~600 requests, a third of them: p90 and beyond reflect the stall.
    assert opened.latency_ms["p99"] >= 0.8 * STALL_S * 1000
    assert opened.latency_ms["p90"] >= 0.4 * STALL_S * 1000
    # The same requests timed from when they were actually sent mostly look fast: the
    # uncorrected view hides the queueing the stall caused.
    assert opened.uncorrected_ms["p90"] < opened.latency_ms["p90"] / 2
    # Closed model: only the 8 requests on the wire saw the stall, among thousands.
    assert closed.latency_ms["p99"] < 0.2 * STALL_S * 1000
    assert closed.latency_ms["max"] >= 0.8 * STALL_S * 1000
    # Back-filled with the expected interval, the closed model's tail reflects it again.
    assert closed.corrected_ms["p99"] > 2 * closed.latency_ms["p99"]


def test_generator_that_cannot_keep_up_is_invalid() -> None:
    async def busy(url: str) -> loadgen.StepResult:
        async def hog() -> None:
            # Blocks the event loop ~100 ms at a time: the generator, not the server, is slow.
            end = time.perf_counter() + 1.5
            while time.perf_counter() < end:
                stop = time.perf_counter() + 0.1
                while time.perf_counter() < stop:
                    pass
                await asyncio.sleep(0)

        hogging = asyncio.create_task(hog())
        result = await loadgen.run_open(url, workloads.health(url), rate=200, duration_s=1.5,
                                        connections=4, timeout_s=2)
        await hogging
        return result

    with fake_service() as url:
        result = asyncio.run(busy(url))
    assert result.invalid and "behind" in result.invalid_reason


def test_closed_webhook_load_reconciles_every_accepted_event(embedded: Target) -> None:
    result = runner.invoke(app, ["loadtest", "--json", "-c", "20", "-d", "2", "--engine",
                                 "builtin", *url_options(embedded)], env=env_of(embedded))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    step = data["steps"][0]
    assert step["model"] == "closed" and step["statuses"] == {"202": step["completed"]}
    assert set(step["latency_ms"]) >= {"p50", "p90", "p95", "p99", "p99.9", "max"}
    assert step["server"]["bridge"]["cpu_peak_pct"] > 0
    assert step["server"]["bridge"]["rss_peak_mb"] > 10
    assert step["error_lines"]["bridge"] == 0
    recon = data["reconciliation"]
    assert recon["status"] == "pass" and recon["lost"] == 0 and recon["duplicated"] == 0
    assert recon["acknowledged"] == step["completed"] == step["requests"]["acknowledged"]
    assert recon["acknowledged_ids"] == step["completed"] * workloads.EVENTS_PER_WEBHOOK


def test_dropped_events_fail_the_reconciliation(embedded: Target) -> None:
    with fake_service("--drop") as fake:
        options = url_options(embedded)
        options[options.index("--bridge") + 1] = fake
        result = runner.invoke(app, ["loadtest", "--json", "--model", "open", "--rate", "50",
                                     "-d", "1", *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    recon = json.loads(result.stdout)["reconciliation"]
    # The fake stores nothing: every acknowledged id is missing.
    assert recon["status"] == "fail" and recon["lost"] == recon["acknowledged_ids"] > 0
    assert "LOST" in recon["detail"]


def test_sla_breach_fails_with_exit_1(embedded: Target, tmp_path) -> None:
    sla = tmp_path / "sla.yaml"
    sla.write_text("sla:\n  - {name: health, service: bridge, method: GET, path: /health,\n"
                   "     latency_ms: 100, percentile: 95, error_rate: 0.0001}\n")
    with fake_service("--delay-ms", "150") as slow:
        options = url_options(embedded)
        options[options.index("--bridge") + 1] = slow
        result = runner.invoke(app, ["loadtest", "--json", "--endpoint", "health", "--model",
                                     "open", "--rate", "40", "-d", "1", "--sla", str(sla),
                                     *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)["verdicts"][0]
    assert verdict["status"] == "fail" and not verdict["latency_ok"]
    assert verdict["observed_ms"] >= 150


@pytest.mark.parametrize("bad", [["--ramp", "100,50"], ["--model", "sideways"],
                                 ["--sla", "/nonexistent.yaml"]])
def test_bad_usage_is_exit_2(bad: list[str]) -> None:
    result = runner.invoke(app, ["loadtest", "--bridge", "http://127.0.0.1:9", *bad])
    assert result.exit_code == 2, result.output


def test_ramp_finds_a_breaking_point_by_bisection(embedded: Target, tmp_path) -> None:
    # A 40 ms server behind a p95 < 100 ms row: with 4 connections it holds up to ~100 req/s
    # (4 / 0.04 s), beyond that requests queue for a connection and the tail grows.
    sla = tmp_path / "sla.yaml"
    sla.write_text("sla:\n  - {name: health, service: bridge, method: GET, path: /health,\n"
                   "     latency_ms: 100, percentile: 95, error_rate: 0.01}\n")
    with fake_service("--delay-ms", "40") as slow:
        options = url_options(embedded)
        options[options.index("--bridge") + 1] = slow
        result = runner.invoke(app, ["loadtest", "--json", "--endpoint", "health", "--model",
                                     "open", "-c", "4", "--ramp", "20,60,200", "-d", "1",
                                     "--sla", str(sla), *options], env=env_of(embedded))
    assert result.exit_code == 0, result.output
    ramp = json.loads(result.stdout)["ramp"]
    assert ramp["breaking_level"] is not None and ramp["max_ok_level"] is not None
    assert 60 <= ramp["max_ok_level"] < ramp["breaking_level"] <= 200
    assert len(ramp["steps"]) >= 4  # three levels then at least one bisection step
