"""docs/services/*.yaml and docs/openapi/*.json: generated from the code (the regeneration check
is ``tests/docsgen/test_dashboards.py``'s), shaped like the plan's template, true to what each
service answers when it runs, and independent of the environment that generates them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from auren.docsgen import services
from auren.docsgen.services import OPENAPI_DIR, SERVICE_DIR, endpoints
from auren.ops.procs import DEFAULT_PORTS
from auren.providers import PROVIDER_CLASSES
from auren.settings import Settings
from tests.deploy.tools import ROOT
from tests.helpers import ServerProcess, run_server

NAMES = [spec.name for spec in services.SERVICES]


def _document(name: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / SERVICE_DIR / f"{name}.yaml").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("svcdocs")
    with run_server("bridge", tmp) as bridge, run_server("legacy", tmp) as legacy, \
            run_server("neuros", tmp) as neuros, \
            run_server("gateway", tmp, {"AUREN_BRIDGE_URL": bridge.base_url,
                                        "AUREN_NEUROS_URL": neuros.base_url,
                                        "AUREN_LEGACY_URL": legacy.base_url}) as gateway:
        yield {"bridge": bridge, "legacy": legacy, "neuros": neuros, "gateway": gateway}


@pytest.mark.parametrize("name", NAMES)
def test_the_document_has_every_part_of_the_template(name: str) -> None:
    document = _document(name)
    assert set(document) == {"service", "api", "dependencies", "environment", "monitoring",
                             "team"}
    assert document["service"]["port"] == DEFAULT_PORTS[name]
    assert document["service"]["version"]
    assert document["api"]["base_url"].endswith(f":{DEFAULT_PORTS[name]}")
    for endpoint in document["api"]["endpoints"]:
        assert set(endpoint) == {"path", "method", "description", "authentication"}
        assert all(endpoint.values()), endpoint
    assert document["dependencies"] and all(d["name"] and d["when"]
                                            for d in document["dependencies"])
    assert document["monitoring"]["health_check"] == "/health"
    assert document["monitoring"]["metrics"] == "/metrics"
    assert set(document["team"]) == {"owner", "contact"}


@pytest.mark.parametrize("name", NAMES)
def test_environment_is_the_settings_model(name: str) -> None:
    environment = _document(name)["environment"]
    fields = Settings.model_fields
    assert environment["required"] == [n for n in environment["required"]
                                       if n.lower() in fields]
    names = [entry["name"] for entry in environment["optional"]]
    assert names == sorted(names, key=str.lower) and len(names) == len(set(names))
    for entry in environment["optional"]:
        default = fields[entry["name"].lower()].default
        rendered = (",".join(map(str, default)) if isinstance(default, tuple)
                    else str(default) if isinstance(default, Path) else default)
        assert entry["default"] == rendered, entry
    # What each service reads, at least: its own knobs and the server's.
    wanted = {"bridge": {"MAX_CONCURRENT_WEBHOOKS", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL",
                         "POSTGRES_URL", "STANDARD_WEBHOOK_SECRET", "SHUTDOWN_TIMEOUT_S"},
              "legacy": {"POSTGRES_URL", "STANDARD_WEBHOOK_SECRET", "AUREN_DATA_DIR"},
              "neuros": {"NEUROS_LLM", "NEUROS_RATE_PER_MINUTE", "REDIS_URL", "POSTGRES_URL"},
              "gateway": {"AUREN_BRIDGE_URL", "GATEWAY_TIMEOUT_S", "TRUSTED_PROXIES"}}[name]
    common = {"LOG_LEVEL", "ACCESS_LOG", "HTTP_HEADER_TIMEOUT_S", "AUREN_SSL_CERTFILE"}
    assert wanted | common <= set(names), (wanted | common) - set(names)
    # ... and not another service's.
    foreign = {"bridge": {"NEUROS_LLM", "GATEWAY_TIMEOUT_S"},
               "legacy": {"KAFKA_BOOTSTRAP_SERVERS", "NEUROS_LLM"},
               "neuros": {"KAFKA_BOOTSTRAP_SERVERS", "MAX_CONCURRENT_WEBHOOKS"},
               "gateway": {"POSTGRES_URL", "NEUROS_LLM"}}[name]
    assert not foreign & set(names), foreign & set(names)


def test_dependencies_come_from_the_composition_root() -> None:
    by_service = {name: {d["name"] for d in _document(name)["dependencies"]} for name in NAMES}
    assert by_service["bridge"] == {"SQLite", "PostgreSQL", "Kafka", "Redis"}
    assert by_service["legacy"] == {"SQLite", "PostgreSQL"}
    assert by_service["neuros"] == {"SQLite", "PostgreSQL", "Redis", "LLM API"}
    assert by_service["gateway"] == {"NEUROS", "Enhanced Bridge v2", "Original Bridge v1"}


@pytest.mark.parametrize("name", NAMES)
def test_each_running_service_serves_the_checked_in_openapi_and_endpoints(
        name: str, running: dict[str, ServerProcess]) -> None:
    served = httpx.get(running[name].base_url + "/openapi.json", timeout=10).json()
    checked_in = json.loads((ROOT / OPENAPI_DIR / f"{name}.json").read_text())
    # The document is a deployment's that takes every provider's webhooks; a service serves
    # the webhook paths of the providers it is configured for (here the native one only).
    webhooks = [p for p in checked_in["paths"] if "/webhooks/" in p]
    assert not webhooks or len(webhooks) == 2 * len(PROVIDER_CLASSES), webhooks
    checked_in["paths"] = {p: v for p, v in checked_in["paths"].items()
                           if "/webhooks/" not in p or p in served["paths"]}
    assert served == checked_in
    listed = {(e["method"], e["path"]) for e in _document(name)["api"]["endpoints"]
              if "/webhooks/" not in e["path"] or e["path"] in served["paths"]}
    assert listed == {(method.upper(), path) for path, operations in served["paths"].items()
                      for method in operations}


def test_owner_and_contact_are_settings_of_the_generator() -> None:
    files = services.render(Settings(_env_file=None, auren_team_owner="Data platform",
                                     auren_team_contact="dp@example.org"))
    team = yaml.safe_load(files[str(SERVICE_DIR / "gateway.yaml")])["team"]
    assert team == {"owner": "Data platform", "contact": "dp@example.org"}


def test_the_output_does_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    baseline = services.render(Settings(_env_file=None))
    for name, value in {"TRUSTED_PROXIES": "10.0.0.0/8", "POSTGRES_URL": "postgresql://x@y/z",
                        "NEUROS_LLM": "anthropic", "AUREN_BRIDGE_URL": "http://elsewhere:1",
                        "MAX_WEBHOOK_BYTES": "2048"}.items():
        monkeypatch.setenv(name, value)
    # The team is the generator's own setting; everything else is read from the code.
    assert services.render(Settings(_env_file=None, auren_team_owner="AUREN platform team",
                                    auren_team_contact="ops@auren.example")) == baseline


def test_a_route_without_an_authentication_rule_stops_the_generator() -> None:
    schema = {"paths": {"/x": {"get": {"tags": ["no-rule-yet"], "operationId": "x"}}}}
    with pytest.raises(ValueError, match="no-rule-yet"):
        endpoints(schema)
    schema["paths"]["/x"]["get"]["security"] = [{"bearer": []}]  # type: ignore[index]
    assert endpoints(schema)[0]["authentication"] == "bearer"
