"""auren faults: the malformed burst against the real bridge and against one that accepts
garbage; breaker states read from health documents; dependency faults n/a when embedded."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from auren.cli import app
from auren.ops.faults import breaker_states
from auren.ops.target import Target
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
