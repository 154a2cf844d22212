"""auren e2e against the real embedded system, a wrong secret, and a bridge that drops events."""

from __future__ import annotations

import base64
import json

from typer.testing import CliRunner

from auren.cli import app
from auren.ops.target import Target
from tests.ops.helpers import env_of, fake_service, url_options

runner = CliRunner()


def _steps(output: str) -> dict[str, dict[str, str]]:
    return {s["name"].split(":")[0]: s for s in json.loads(output)["steps"]}


def test_healthy_chain_passes_for_every_provider(embedded: Target) -> None:
    result = runner.invoke(app, ["e2e", "--json", *url_options(embedded)], env=env_of(embedded))
    assert result.exit_code == 0, result.output
    steps = _steps(result.stdout)
    for provider in ("auren", "terra", "garmin", "apple", "oura", "whoop", "fitbit", "polar",
                     "withings"):
        assert steps[provider]["status"] == "pass", steps[provider]
    assert "tampered → 401" in steps["auren"]["detail"]
    store = next(s for k, s in steps.items() if k.startswith("store"))
    assert store["status"] == "pass" and "LOST" not in store["detail"]
    assert steps["Kafka topic exists and its offsets grew"]["status"] == "n/a"
    assert steps["NEUROS's next answer reflects the ingested data"]["status"] == "pass"


def test_wrong_secret_fails_the_provider_row(embedded: Target) -> None:
    env = env_of(embedded)
    env["STANDARD_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(b"w" * 32).decode()
    result = runner.invoke(app, ["e2e", "--json", *url_options(embedded)], env=env)
    assert result.exit_code == 1, result.output
    steps = _steps(result.stdout)
    assert steps["auren"]["status"] == "fail" and "401" in steps["auren"]["detail"]
    assert steps["terra"]["status"] == "pass"


def test_bridge_that_drops_events_is_caught_by_the_store_count(embedded: Target) -> None:
    with fake_service("--drop") as fake:
        options = url_options(embedded)
        options[options.index("--bridge") + 1] = fake
        result = runner.invoke(app, ["e2e", "--json", *options], env=env_of(embedded))
    assert result.exit_code == 1, result.output
    store = next(s for k, s in _steps(result.stdout).items() if k.startswith("store"))
    assert store["status"] == "fail" and "LOST" in store["detail"]
