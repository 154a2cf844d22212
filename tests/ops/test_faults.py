"""auren faults: the malformed burst against the real bridge and against one that accepts
garbage; breaker states read from health documents; dependency faults n/a when embedded; the
gateway's upstream drill through the fault proxy, passing and failing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.ops.faults import DRILLS, breaker_states, parse_drills
from auren.ops.procs import embedded_system
from auren.ops.target import Target, settings_from_env
from tests.ops.helpers import env_of, fake_service, url_options

runner = CliRunner()


def test_malformed_burst_gets_only_4xx_and_dependency_faults_are_na(embedded: Target) -> None:
    result = runner.invoke(app, ["faults", "--json", *url_options(embedded)],
                           env=env_of(embedded))
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["checks"]
    burst, dependency = checks[0], checks[1]
    assert burst["status"] == "pass", burst
    for expected in ("bad signature → 401", "declared body over the cap → 413",
                     "signed broken JSON → 400", "compressed body → 415",
                     "unknown provider → 404", "wrong method → 405"):
        assert expected in burst["detail"]
    assert dependency["status"] == "n/a" and "embedded" in dependency["detail"]


def test_a_bridge_that_accepts_garbage_fails_the_burst(embedded: Target) -> None:
    with fake_service("--drop") as fake:
        options = url_options(embedded)
        options[options.index("--bridge") + 1] = fake
        result = runner.invoke(app, ["faults", "--json", *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    burst = json.loads(result.stdout)["checks"][0]
    assert burst["status"] == "fail" and "202" in burst["detail"]


def test_breaker_states_are_read_from_any_check_with_a_state() -> None:
    health = {"status": "warn", "checks": {
        "kafka:breaker": [{"componentId": "kafka", "state": "open"}],
        "breaker:postgres": [{"state": "half_open", "observedValue": "half_open"}],
        "store:responseTime": [{"status": "pass", "observedValue": 1}],
        "uptime": [{"observedValue": 3}]}}
    assert breaker_states(health) == {"kafka": "open", "postgres": "half_open"}
    assert breaker_states({"checks": {"store:responseTime": [{"status": "pass"}]}}) == {}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """An embedded system whose gateway reaches the services through the fault proxy, with a
    2 s gateway timeout (what a quick drill may exercise)."""
    data_dir = tmp_path_factory.mktemp("proxied")
    with embedded_system(data_dir, extra_env={"GATEWAY_TIMEOUT_S": "2"},
                         fault_proxy=True) as services:
        assert services.fault_proxy_url is not None
        yield Target(services.urls, settings_from_env(services.env), data_dir, services.pids,
                     services.log_paths, started_here=True,
                     fault_proxy_url=services.fault_proxy_url)


def _upstream(target: Target, toolkit_timeout: str) -> tuple[int, dict[str, Any]]:
    env = {**env_of(target), "AUREN_FAULT_PROXY_URL": str(target.fault_proxy_url),
           "GATEWAY_TIMEOUT_S": toolkit_timeout}
    result = runner.invoke(app, ["faults", "--json", "--mode", "upstream", "--fault-s", "3",
                                 *url_options(target)], env=env)
    return result.exit_code, json.loads(result.stdout)


def test_gateway_upstream_drill_sees_504_in_time_and_recovery(proxied: Target) -> None:
    code, data = _upstream(proxied, "2")
    checks = {c["name"].split(":")[0]: c for c in data["checks"]}
    drill = checks["gateway upstream slow"]
    assert code == 0 and drill["status"] == "pass", drill
    assert "probe 504 in 2." in drill["detail"] and "recovered" in drill["detail"]
    assert "NEUROS 200" in drill["detail"]
    statuses = data["steps"][0]["statuses"]
    assert statuses.get("504", 0) > 0 and set(statuses) <= {"202", "504"}
    loss = checks["no loss during the drills (by identity)"]
    assert loss["status"] == "pass", loss
    # The proxy is clean again: nothing of the drill left behind.
    routes = httpx.get(str(proxied.fault_proxy_url) + "/proxies", timeout=5).json()
    assert all(not r["toxics"] for r in routes.values())


def test_gateway_drill_fails_when_the_gateway_waits_longer_than_it_should(
        proxied: Target) -> None:
    # The toolkit believes the gateway gives up after 0.5 s; it waits 2 s, so the drill's
    # 1.5 s delay is answered 202 late instead of 504 in time: the check must say so.
    code, data = _upstream(proxied, "0.5")
    drill = next(c for c in data["checks"] if c["name"].startswith("gateway upstream slow"))
    assert code == 1 and drill["status"] == "fail", drill
    assert "not 504" in drill["detail"] and "no webhook" in drill["detail"]


def test_drills_parse_and_reject_unknown_names() -> None:
    assert parse_drills("both") == ["kill", "pause"]
    assert parse_drills("upstream,slow") == ["slow", "upstream"]
    assert parse_drills("all") == list(DRILLS)
    result = runner.invoke(app, ["faults", "--mode", "gremlins", "--bridge",
                                 "http://127.0.0.1:9"])
    assert result.exit_code == 2
