"""deploy/alertmanager.yml: amtool accepts it, every shipped alert routes to the receiver its
severity names, and the inhibit rules name alerts that exist. (The live test in
``test_monitoring_live`` sends a real alert through a real Alertmanager.)"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.tools import DEPLOY, system_tool
from tests.deploy.tools import rules as _rules

CONFIG = DEPLOY / "alertmanager.yml"
RECEIVER_OF = {"page": "auren-pager", "ticket": "auren-tickets"}


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([system_tool("amtool"), *args], capture_output=True, text=True,
                          timeout=30, check=False)


def test_amtool_accepts_the_configuration():
    done = _amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("alert", sorted(n for n, r in _rules().items() if "alert" in r))
def test_every_alert_reaches_the_receiver_of_its_severity(alert):
    rule = _rules()[alert]
    severity = rule["labels"]["severity"]
    done = _amtool("config", "routes", "test", f"--config.file={CONFIG}",
                   f"alertname={alert}", f"severity={severity}", "job=auren-bridge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [RECEIVER_OF[severity]]


def test_an_alert_without_a_severity_still_reaches_someone():
    done = _amtool("config", "routes", "test", f"--config.file={CONFIG}", "alertname=Other")
    assert done.stdout.split() == ["auren-tickets"]


def test_inhibit_rules_name_shipped_alerts():
    alerts = {n for n, r in _rules().items() if "alert" in r}
    config = yaml.safe_load(CONFIG.read_text())
    for rule in config["inhibit_rules"]:
        for matcher in (*rule["source_matchers"], *rule["target_matchers"]):
            match = re.fullmatch(r'alertname(=~?)"(.+)"', matcher)
            assert match, matcher
            names = match.group(2).split("|")
            assert set(names) <= alerts, names
    assert {r["name"] for r in config["receivers"]} == set(RECEIVER_OF.values())
