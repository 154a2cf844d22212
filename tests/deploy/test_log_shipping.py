"""deploy/vector/vector.yaml against the log lines real services write: its sources read the
files `auren serve all` writes and the compose project's containers, its transform and sink
use only fields the lines have, one request's id is the same in the gateway's and the bridge's
lines, and the pipeline is connected. (Vector itself is not a Debian package, so the example
is checked for structure and against real lines, not run.)"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from auren.ops.procs import embedded_system
from tests.deploy.tools import DEPLOY

CONFIG = DEPLOY / "vector" / "vector.yaml"
# What Vector's sources add to an event beside the line (``message``): the docker_logs
# source's container fields and labels, the file source's path.
VECTOR_FIELDS = {"message", "timestamp", "file", "label", "container_name", "host",
                 "source_type"}
# The formatter's ``ts`` (auren.observability.JsonFormatter) and the transform's format.
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    document = yaml.safe_load(CONFIG.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[dict[str, Path], dict[str, list[dict[str, Any]]], str]]:
    """The embedded system's log files after a request through the gateway to the bridge and
    a rejected webhook; every line parsed as JSON; the request's id."""
    data_dir = tmp_path_factory.mktemp("shipping")
    with embedded_system(data_dir) as services:
        through = httpx.get(services.urls["gateway"] + "/api/bridge/health", timeout=10)
        assert through.status_code == 200
        assert httpx.post(services.urls["bridge"] + "/webhooks/auren", content=b"{}",
                          timeout=10).status_code == 401
        time.sleep(0.5)  # the access lines are written once the answers are sent
        paths = dict(services.log_paths)
        lines = {name: [orjson.loads(line) for line in path.read_text().splitlines()
                        if line.strip()] for name, path in paths.items()}
        yield paths, lines, through.headers["x-request-id"]


def test_the_sources_read_the_files_serve_all_writes_and_the_compose_containers(
        config: dict[str, Any], written: tuple[dict[str, Path], Any, str]) -> None:
    paths, _, _ = written
    files = config["sources"]["auren_files"]
    assert files["type"] == "file"
    (pattern,) = files["include"]
    assert pattern.endswith("/logs/*.log")
    for name, path in paths.items():
        # The example's directory stands for AUREN_DATA_DIR: the rest must match as written.
        assert fnmatch.fnmatch(str(path), str(path.parent.parent) + "/logs/*.log"), path
        # The transform's fallback names the service after the file.
        assert re.sub(r"^.*/|\.log$", "", str(path)) == name
    containers = config["sources"]["auren_containers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert containers["type"] == "docker_logs"
    assert containers["include_labels"] == [f"com.docker.compose.project={compose['name']}"]


def test_every_line_is_json_with_the_fields_the_pipeline_reads(
        config: dict[str, Any], written: tuple[Any, dict[str, list[dict[str, Any]]], str]
        ) -> None:
    _, lines, _ = written
    source = config["transforms"]["auren_json"]["source"]
    assert "%Y-%m-%dT%H:%M:%S%.3fZ" in source
    code = re.sub(r"r?'[^']*'|\"[^\"]*\"", '""', source)  # string and regex literals out
    used = set(re.findall(r"(?<!\w)\.(\w+)", code)) - VECTOR_FIELDS
    labels = {re.fullmatch(r"\{\{ (\w+) \}\}", v).group(1)  # type: ignore[union-attr]
              for v in config["sinks"]["loki"]["labels"].values()}
    seen: set[str] = set()
    for name, entries in lines.items():
        assert entries, name
        for entry in entries:
            assert TS.fullmatch(entry["ts"]), entry
            assert {"level", "logger", "msg"} <= set(entry), entry
            seen |= set(entry)
    # Every field the transform reads from a line exists in real lines (``service`` is also
    # derived when a line has none), and every label is set on every event.
    assert used <= seen | {"service"}, used - seen
    assert labels <= {"service", "level", "logger"}
    assert "request_id" not in labels  # one value per request: a label would explode Loki


def test_one_request_has_one_id_in_the_gateway_and_the_bridge_lines(
        written: tuple[Any, dict[str, list[dict[str, Any]]], str]) -> None:
    _, lines, request_id = written
    for name, path in (("gateway", "/api/bridge/health"), ("bridge", "/health")):
        (line,) = [e for e in lines[name] if e.get("request_id") == request_id]
        assert line["logger"] == "auren.access" and line["path"] == path, line
        assert line["service"] == name and line["status"] == 200
    rejected = [e for e in lines["bridge"] if e.get("status") == 401]
    assert rejected and all(re.fullmatch(r"[0-9a-f]{32}", e["request_id"]) for e in rejected)


def test_the_pipeline_is_connected_and_buffers_on_disk(config: dict[str, Any]) -> None:
    defined = set(config["sources"]) | set(config["transforms"])
    for kind in ("transforms", "sinks"):
        for name, component in config[kind].items():
            assert component["inputs"], name
            assert set(component["inputs"]) <= defined, (name, component["inputs"])
    consumed = {i for kind in ("transforms", "sinks") for c in config[kind].values()
                for i in c["inputs"]}
    assert consumed == defined, defined - consumed
    buffer = config["sinks"]["loki"]["buffer"]
    # A log store that is down must not make Vector drop lines or grow without bound.
    assert buffer["type"] == "disk" and buffer["when_full"] == "block"
    assert buffer["max_size"] >= 256 * 1_048_576
