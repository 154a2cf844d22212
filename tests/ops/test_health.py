"""The health sweep against a real embedded system, and against one with a stopped service."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from auren.cli import app
from auren.ops.target import Target
from tests.helpers import free_port
from tests.ops.helpers import url_options

runner = CliRunner()


def test_healthy_system_passes_with_na_for_absent_components(embedded: Target) -> None:
    result = runner.invoke(app, ["health", "--json", *url_options(embedded)])
    assert result.exit_code == 0, result.output
    rows = {r["component"]: r for r in json.loads(result.stdout)["rows"]}
    for name in ("NEUROS", "Original Bridge", "Enhanced Bridge", "Gateway",
                 "Gateway → NEUROS", "Gateway → Enhanced Bridge", "Database (SQLite)"):
        assert rows[name]["status"] == "pass", rows[name]
        assert rows[name]["ms"] is not None
    assert rows["NEUROS"]["uptime_s"] is not None
    for name in ("PostgreSQL", "Redis", "Kafka"):
        assert rows[name]["status"] == "n/a" and "embedded" in rows[name]["detail"]


def test_stopped_service_fails_its_row_and_exits_1(embedded: Target) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    options = url_options(embedded)
    options[options.index("--legacy") + 1] = dead
    result = runner.invoke(app, ["health", "--json", "--timeout", "2", *options])
    assert result.exit_code == 1, result.output
    rows = {r["component"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["Original Bridge"]["status"] == "fail"
    assert "unreachable" in rows["Original Bridge"]["detail"]
    assert rows["Enhanced Bridge"]["status"] == "pass"


def test_watch_repeats_and_table_is_human(embedded: Target) -> None:
    result = runner.invoke(app, ["health", "--watch", "--count", "2", "--interval", "0.5",
                                 *url_options(embedded)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "N/A" in result.output


def test_bad_url_is_usage_error() -> None:
    result = runner.invoke(app, ["health", "--bridge", "ftp://x"])
    assert result.exit_code == 2


def test_the_public_proxy_routes_of_a_vercel_deployment_are_probed(embedded: Target) -> None:
    """deploy/vercel.json applied by an edge in front of the embedded gateway: both public
    routes pass through it; without a public URL they are n/a; a dead one fails."""
    from urllib.parse import urlsplit

    from tests.deploy.tools import DEPLOY
    from tests.deploy.vercel_edge import vercel_edge

    config = DEPLOY / "vercel.json"
    destination_host = urlsplit(json.loads(config.read_text())["rewrites"][0]["destination"])
    with vercel_edge(config, {destination_host.netloc: embedded.urls["gateway"]}) as edge:
        result = runner.invoke(app, ["health", "--json", "--public", edge,
                                     *url_options(embedded)])
    assert result.exit_code == 0, result.output
    rows = {r["component"]: r for r in json.loads(result.stdout)["rows"]}
    for name, route in (("Public → NEUROS", "/api/neuros/health"),
                        ("Public → Enhanced Bridge", "/api/bridge/health")):
        assert rows[name]["status"] == "pass", rows[name]
        assert rows[name]["target"] == edge + route
    without = runner.invoke(app, ["health", "--json", *url_options(embedded)])
    rows = {r["component"]: r for r in json.loads(without.stdout)["rows"]}
    assert rows["Public → NEUROS"]["status"] == "n/a"
    dead = runner.invoke(app, ["health", "--json", "--timeout", "2", "--public",
                               f"http://127.0.0.1:{free_port()}", *url_options(embedded)])
    assert dead.exit_code == 1
    rows = {r["component"]: r for r in json.loads(dead.stdout)["rows"]}
    assert rows["Public → Enhanced Bridge"]["status"] == "fail"


def test_public_url_must_be_http() -> None:
    assert runner.invoke(app, ["health", "--public", "ftp://x"]).exit_code == 2
