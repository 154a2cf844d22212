"""deploy/prometheus/: promtool checks the configuration and the rules and runs the rules' unit
tests; the SLA alerts use the SLA table's thresholds; every alert links a runbook section that
exists; every AUREN service (and the sink) is scraped on the port it serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from auren.ops import sla
from auren.ops.procs import DEFAULT_PORTS, SERVICES
from tests.deploy.tools import (
    DEPLOY,
    DOCS,
    PROMETHEUS,
    ROOT,
    RULE_FILES,
    heading_anchors,
    system_tool,
)
from tests.deploy.tools import (
    rules as _rules,
)

TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([system_tool("promtool"), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=PROMETHEUS)


def test_the_configuration_and_its_rule_files_pass_promtool_check():
    assert RULE_FILES and TEST_FILES
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The configuration's rule_files glob finds every rule file, and each one is valid.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in checked.stdout
    rules = _promtool("check", "rules", *RULE_FILES)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_rules_unit_tests_pass():
    done = _promtool("test", "rules", *TEST_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing():
    tested = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
    alerts = {name for name, rule in _rules().items() if "alert" in rule}
    assert alerts - tested == set()


def _threshold(expr: str) -> float:
    match = re.search(r">\s*([0-9.]+)\s*$", expr.strip())
    assert match, expr
    return float(match.group(1))


def _quantile(record: dict[str, Any]) -> float:
    match = re.search(r"histogram_quantile\(\s*([0-9.]+)", record["expr"])
    assert match, record
    return float(match.group(1))


@pytest.mark.parametrize(("workload", "errors", "latency", "quantile_record"), [
    ("webhooks", "AurenWebhookErrorRateHigh", "AurenWebhookLatencyHigh",
     "job:auren_webhook_latency_seconds:p95_5m"),
    ("chat", "AurenChatErrorRateHigh", "AurenChatLatencyHigh",
     "job:auren_chat_latency_seconds:p95_5m"),
])
def test_sla_alerts_use_the_sla_tables_thresholds(workload, errors, latency, quantile_record):
    (row,) = [r for r in sla.load(None) if r.workload == workload]
    rules = _rules()
    assert _threshold(rules[errors]["expr"]) == pytest.approx(row.error_rate)
    assert _threshold(rules[latency]["expr"]) == pytest.approx(row.latency_ms / 1000)
    assert _quantile(rules[quantile_record]) == pytest.approx(row.percentile / 100)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_that_exists():
    documents: dict[str, set[str]] = {}
    for name, rule in _rules().items():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        document, _, anchor = annotations["runbook_url"].partition("#")
        path = ROOT / document
        assert path.parent == DOCS and path.exists(), (name, document)
        if document not in documents:
            documents[document] = heading_anchors(path.read_text())
        assert anchor in documents[document], (name, anchor)


def test_every_service_and_the_sink_is_scraped_where_it_serves():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    for service in SERVICES:
        assert targets[f"auren-{service}"] == [f"{service}:{DEFAULT_PORTS[service]}"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for worker in ("sink", "fetcher"):
        port = compose[worker]["environment"][f"{worker.upper()}_METRICS_PORT"]
        assert targets[f"auren-{worker}"] == [f"{worker}:{port}"]
    # Every target is a service of the compose file, on the network Prometheus is on.
    for job, hosts in targets.items():
        for host in hosts:
            assert host.split(":")[0] in compose, (job, host)
    assert config["rule_files"] == ["rules/*.yml"]


def test_rule_files_are_mounted_where_the_configuration_expects_them():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["prometheus"]["volumes"]}
    assert Path(DEPLOY / mounts["/etc/prometheus"]).resolve() == PROMETHEUS.resolve()
