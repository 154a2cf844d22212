"""deploy/docker-compose.yml cannot run here (no Docker engine): check its structure instead.

The same stack as ``auren infra`` (Kafka KRaft at the pom's version, PostgreSQL, Redis) plus
the four services, the sink, the fetcher and their monitoring; every reference resolves;
every AUREN setting it passes exists; every command it runs is a real ``auren`` command; what
must survive a container has a volume; and the Docker standard of docs/SOP.md holds:
python:3.11-slim, ``auren-network``, ``restart: unless-stopped`` and a health check every 30 s
on every service.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from auren.infra.servers import kafka_version
from auren.ops.procs import DEFAULT_PORTS, SERVICES
from auren.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
AUREN_SERVICES = ("migrate", "bridge", "sink", "fetcher", "neuros", "legacy", "gateway")
# The services that read or write the data plane (the gateway only proxies).
DATA_PLANE_SERVICES = ("migrate", "bridge", "sink", "fetcher", "neuros", "legacy")
MONITORING = ("prometheus", "alertmanager", "grafana", "node-exporter")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_the_stack_has_every_server_and_service(compose):
    assert set(compose["services"]) == {"kafka", "postgres", "redis", *AUREN_SERVICES,
                                        *MONITORING}


def test_images_are_pinned_and_kafka_matches_the_loopback_stack(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_kafka_is_a_single_kraft_node_without_auto_created_topics(compose):
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]) == "false"
    assert not any("ZOOKEEPER" in key for key in env)


def test_every_dependency_exists_and_servers_are_health_checked(compose):
    services = compose["services"]
    for name in ("kafka", "postgres", "redis"):
        assert "test" in services[name]["healthcheck"], name
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if dependency == "migrate":
                assert rule["condition"] == "service_completed_successfully"
            else:
                assert rule["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    for name in ("bridge", "sink", "fetcher", "neuros", "legacy"):
        assert set(services[name]["depends_on"]) == {"migrate", "kafka", "postgres", "redis"}
    assert set(services["gateway"]["depends_on"]) == {"neuros", "bridge", "legacy"}


def test_services_point_at_the_servers_by_name(compose):
    for name in DATA_PLANE_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert re.fullmatch(r"postgresql://auren:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/"
                            r"auren_production", env["POSTGRES_URL"]), env["POSTGRES_URL"]
    postgres = compose["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("auren", "auren_production")
    assert "timescaledb" in compose["services"]["postgres"]["image"]
    gateway = compose["services"]["gateway"]["environment"]
    for upstream in ("neuros", "bridge", "legacy"):
        url = gateway[f"AUREN_{upstream.upper()}_URL"]
        assert url == f"http://{upstream}:{DEFAULT_PORTS[upstream]}", url


def test_every_variable_passed_to_auren_is_a_setting(compose):
    fields = set(Settings.model_fields)
    for name in AUREN_SERVICES:
        for key in compose["services"][name]["environment"]:
            assert key.lower() in fields, (name, key)  # a typo would be silently ignored


def test_the_spool_and_conversations_survive_the_container(compose):
    services = compose["services"]
    for name in ("bridge", "fetcher", "neuros", "legacy"):
        data_dir = services[name]["environment"]["AUREN_DATA_DIR"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert mounts.get(data_dir) in compose["volumes"], (name, mounts)
    assert "pg-data" in compose["volumes"] and "kafka-data" in compose["volumes"]
    assert services["bridge"]["stop_grace_period"] == "30s"


def test_secrets_come_from_the_environment_never_the_file(compose):
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert not re.search(r"whsec_[A-Za-z0-9+/]", text)
    example = (DEPLOY / "env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M)


@pytest.mark.parametrize("service", AUREN_SERVICES)
def test_each_command_is_a_real_auren_command(compose, service):
    command = compose["services"][service]["command"]
    words = [w for w in command if not w.startswith("--")][:2]
    done = subprocess.run([sys.executable, "-m", "auren", *words, "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, (command, done.stderr)
    for option in (w for w in command if w.startswith("--")):
        assert option in done.stdout, (service, option)


def test_the_image_runs_the_auren_entry_point():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["auren"]' in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "never runs as root"
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)


def _health_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/\S*?(?=['\"\s]|$)", test)
    assert match, test
    return match.group(0)


def test_the_docker_standard_holds_for_every_service(compose):
    for name, service in compose["services"].items():
        assert service["networks"] == ["auren-network"], name
        if name == "migrate":  # a one-shot job: runs to completion, never restarted
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        check = service["healthcheck"]
        assert check["test"] and check["interval"] == "30s", name
        assert check["timeout"] and check["retries"] >= 1, name
    assert compose["networks"]["auren-network"]["name"] == "auren-network"


def test_each_service_serves_on_its_allocated_port_and_is_checked_there(compose):
    services = compose["services"]
    for name in SERVICES:
        port = DEFAULT_PORTS[name]
        command = services[name]["command"]
        assert command[:2] == ["serve", name], command
        assert command[command.index("--port") + 1] == str(port)
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert services[name]["ports"] == [f"{port}:{port}"]
        assert _health_url(services[name]) == f"http://127.0.0.1:{port}/health"
    ports = set()
    for worker in ("sink", "fetcher"):
        env = services[worker]["environment"]
        port = int(env[f"{worker.upper()}_METRICS_PORT"])
        assert 9000 < port <= 9999 and port not in DEFAULT_PORTS.values()
        assert env[f"{worker.upper()}_METRICS_HOST"] == "0.0.0.0"
        assert _health_url(services[worker]) == f"http://127.0.0.1:{port}/health"
        ports.add(port)
    assert len(ports) == 2


def test_every_service_that_holds_tokens_or_follows_the_erasure_ledger_needs_the_key(compose):
    # Tokens are encrypted with it; the erasure ledger's pseudonyms are made with it.
    for name in ("bridge", "fetcher", "sink", "neuros", "legacy"):
        key = compose["services"][name]["environment"]["AUREN_ENCRYPTION_KEY"]
        assert key.startswith("${AUREN_ENCRYPTION_KEY:?"), key  # compose refuses to start
    example = (DEPLOY / "env.example").read_text()
    assert re.search(r"^AUREN_ENCRYPTION_KEY=$", example, re.M)


def test_monitoring_mounts_the_files_of_this_directory(compose):
    services = compose["services"]
    for name in MONITORING:
        image = services[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), image
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), (name, source)
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # never public
