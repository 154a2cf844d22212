"""deploy/grafana/ (and every generated file): the checked-in dashboards are exactly what the
code generates, every panel's query is valid PromQL, and the provisioning files point at the
dashboards and the data source.
(That every queried metric is exported is checked against live services in
``tests/deploy/test_monitoring_live.py``.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from auren.docsgen import dashboards
from auren.docsgen.generate import DASHBOARD_DIR, generated
from auren.docsgen.services import OPENAPI_DIR, SERVICE_DIR
from tests.deploy.tools import DEPLOY, ROOT, system_tool


def test_checked_in_generated_files_are_exactly_what_the_code_generates():
    """Dashboards, service documents and OpenAPI documents (docs/services/, docs/openapi/)."""
    expected = generated(ROOT)
    for path, content in expected.items():
        assert path.exists(), f"{path} is missing: run `auren docs generate`"
        assert path.read_text() == content, f"{path} is stale: run `auren docs generate`"
    for directory, pattern in ((DASHBOARD_DIR, "*.json"), (SERVICE_DIR, "*.yaml"),
                               (OPENAPI_DIR, "*.json")):
        on_disk = set((ROOT / directory).glob(pattern))
        assert on_disk == {p for p in expected if p.parent == ROOT / directory}, directory


def test_the_command_writes_into_an_empty_tree_and_check_fails_on_a_change(tmp_path: Path):
    def docs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "auren", "docs", "generate",
                               "--root", str(tmp_path), *args], capture_output=True, text=True,
                              timeout=60, check=False)

    assert docs("--check").returncode == 1  # nothing there yet
    assert docs().returncode == 0
    assert docs("--check").returncode == 0
    victims = (tmp_path / DASHBOARD_DIR / "auren-neuros.json",
               tmp_path / SERVICE_DIR / "neuros.yaml", tmp_path / OPENAPI_DIR / "bridge.json")
    for victim in victims:
        victim.write_text(victim.read_text().replace("NEUROS", "NEUR0S")
                          .replace("/health", "/healthz"))
    stale = docs("--check")
    assert stale.returncode == 1
    assert sorted(line.split("/")[-1] for line in stale.stdout.splitlines()
                  if line.startswith("differs")) == sorted(v.name for v in victims)


def test_every_panel_has_a_unique_id_and_a_valid_query(tmp_path: Path):
    rules = []
    for uid in dashboards.DASHBOARDS:
        document = json.loads(dashboards.render(uid))
        assert document["uid"] == uid and "auren" in document["tags"]
        ids = [panel["id"] for panel in document["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in document["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == dashboards.DATASOURCE.uid
                assert panel["targets"], (uid, panel["title"])
        for index, (title, expr) in enumerate(dashboards.panel_queries(document)):
            # Template variables become plain values, so that promtool parses the PromQL.
            concrete = re.sub(r"\$\w+", "x", expr)
            rules.append({"record": f"check:{uid.replace('-', '_')}:{index}", "expr": concrete,
                          "labels": {"panel": title}})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run([system_tool("promtool"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_provisioning_reads_the_generated_dashboards_from_the_prometheus_data_source():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "auren.yml").read_text())[
        "datasources"]
    assert source["uid"] == dashboards.DATASOURCE.uid and source["type"] == "prometheus"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "auren.yml").read_text())[
        "providers"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["grafana"]["volumes"]}
    source_dir = (DEPLOY / mounts[provider["options"]["path"]]).resolve()
    assert source_dir == (ROOT / DASHBOARD_DIR).resolve()
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == provisioning.resolve()
