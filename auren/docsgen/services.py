"""One document per service (``docs/services/<service>.yaml``) and its OpenAPI document
(``docs/openapi/<service>.json``), generated from the code.

Everything in them is read from the running code, not written by hand:

- **service**: the title and version the app declares, the port ``auren serve`` uses;
- **api**: the base URL (the ``AUREN_*_URL`` setting's default), the prefix the gateway
  serves it under, and every operation of the app's OpenAPI document with its method, the
  first paragraph of its description and its authentication. An operation's authentication
  is its OpenAPI ``security`` when it declares one, else the rule of its tag
  (:data:`AUTHENTICATION`); an operation whose tag has no rule stops the generator, so a new
  kind of route cannot be documented without saying how it is authenticated;
- **dependencies**: what the composition root (``auren.services.dataplane``) builds for the
  service embedded and with the full stack (and, for the gateway, its upstreams);
- **environment**: the settings the service reads, recorded while its app is built (embedded
  and full stack, every optional client configured) and from its module's own
  ``settings.<name>`` reads, plus the server's; with their defaults from the settings model.
  ``required`` lists those without a default: none, as the SOP asks of every setting;
- **monitoring**: the health, metrics and OpenAPI routes;
- **team**: the owner and contact given to the generator (``AUREN_TEAM_OWNER``,
  ``AUREN_TEAM_CONTACT``).

Output is deterministic: keys sorted, lists in a fixed order, no timestamps.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from auren.ops.procs import DEFAULT_PORTS
from auren.providers import PROVIDER_CLASSES
from auren.services import bridge, dataplane, gateway, legacy_bridge, neuros, runtime
from auren.settings import Settings

SERVICE_DIR = Path("docs") / "services"
OPENAPI_DIR = Path("docs") / "openapi"

# How each kind of route (its OpenAPI tag) is authenticated, when the operation declares no
# ``security`` of its own.
AUTHENTICATION: dict[str, str] = {
    "webhooks": "the provider's own signature over the raw body, verified before parsing "
                "(docs/providers.md); a provider without a configured secret answers 404",
    "read": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for the "
            "user in the path; with neither configured, loopback clients only",
    "memory": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for the "
              "user in the path; with neither configured, loopback clients only",
    "chat": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for the "
            "body's user_id; with neither configured, loopback clients only",
    "connections": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for "
                   "the user in the path or query (creating a person without naming one: an "
                   "API key); with neither configured, loopback clients only. The OAuth "
                   "callback takes none: its signed, single-use state authenticates it",
    "jobs": "Bearer: an API key (AUREN_API_KEYS); with none configured, loopback clients only",
    "privacy": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for the "
               "user in the path; with neither configured, loopback clients only. The consent "
               "text takes none",
    "audit": "Bearer: an API key (AUREN_API_KEYS) only, never a user token; with none "
             "configured, loopback clients only",
    "erasure": "Bearer: an API key (AUREN_API_KEYS) or an HS256 JWT (AUREN_JWT_SECRET) for the "
               "person erased (the user in the path; for a receipt, the erasure's user); with "
               "neither configured, loopback clients only",
    "console": "the console's session cookie (sign-in with a GATEWAY_CONSOLE_USERS login or an "
               "API key); acting also needs the operator role, the session's CSRF token and "
               "the console's own origin. Sign-in itself takes the credentials in its body",
    "operations": "none (the TLS proxy of deploy/nginx/ keeps /metrics off the public host)",
    "proxy": "none at the gateway: the upstream's own, with its headers passed on",
}


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # the `auren serve` name and the file name
    title: str
    module: Any  # the service's module: create_app(settings) and its own settings reads
    url_setting: str  # where it answers
    gateway_prefix: str | None  # its prefix at the gateway, if proxied


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("neuros", "NEUROS", neuros, "auren_neuros_url", "/api/neuros"),
    ServiceSpec("legacy", "Original Bridge", legacy_bridge, "auren_legacy_url", "/api/legacy"),
    ServiceSpec("bridge", "Enhanced Biometric Bridge", bridge, "auren_bridge_url", "/api/bridge"),
    ServiceSpec("gateway", "Gateway", gateway, "auren_gateway_url", None),
)
_FIELDS = frozenset(Settings.model_fields)
# Read for every service by `auren serve` (logging, the server's options) whatever the app.
_SERVER_READS = ("log_level",)


# --- which settings a service reads ------------------------------------------------------------


class _Reads:
    """The settings fields read through :func:`_recording` settings while it is active."""

    active: set[str] | None = None


class _RecordingSettings(Settings):
    def __getattribute__(self, name: str) -> Any:
        if name in _FIELDS and _Reads.active is not None:
            _Reads.active.add(name)
        return super().__getattribute__(name)


@contextmanager
def _recording() -> Iterator[set[str]]:
    reads: set[str] = set()
    _Reads.active = reads
    try:
        yield reads
    finally:
        _Reads.active = None


def _settings_variants(tmp: Path) -> list[Settings]:
    """Embedded, and the full stack with every optional client configured (nothing connects
    while an app is built)."""
    cert = tmp / "tls.pem"
    cert.write_text("")
    tls: dict[str, Any] = {"auren_ssl_certfile": cert, "auren_ssl_keyfile": cert}
    full: dict[str, Any] = {"postgres_url": SecretStr("postgresql://auren@127.0.0.1:1/auren"),
            "redis_url": SecretStr("rediss://127.0.0.1:1/0"), "redis_ssl_ca_file": cert,
            "kafka_bootstrap_servers": "127.0.0.1:1", "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_ca_file": cert, "kafka_sasl_username": "auren",
            "kafka_sasl_password": SecretStr("auren"), "neuros_llm": "openai",
            "neuros_llm_base_url": "http://127.0.0.1:1/v1",
            # A fixed throw-away key (32 zero bytes): the full stack requires one.
            "auren_encryption_key": (SecretStr("A" * 43 + "="),)}
    # Built without reading the environment: the documents must not depend on who runs this.
    return [_RecordingSettings.model_construct(None, auren_data_dir=tmp, **tls),
            _RecordingSettings.model_construct(None, auren_data_dir=tmp, **tls, **full)]


def _module_reads(module: Any) -> set[str]:
    """``settings.<field>`` (and ``s.<field>``) reads in the module's own source: the ones made
    while requests are served or at shutdown, after the app was built."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _FIELDS:
            owner = node.value
            name = (owner.id if isinstance(owner, ast.Name)
                    else owner.attr if isinstance(owner, ast.Attribute) else "")
            if name in ("settings", "s", "_settings"):
                found.add(node.attr)
    return found


def _close(app: Any) -> None:
    """Release what building an app made (the gateway's and NEUROS's HTTP clients)."""
    proxy = getattr(app, "proxy", None)
    if proxy is not None:
        asyncio.run(proxy.aclose())


def settings_read(spec: ServiceSpec, tmp: Path) -> list[str]:
    reads = set(_SERVER_READS) | _module_reads(spec.module)
    for settings in _settings_variants(tmp):
        with _recording() as recorded:
            _close(spec.module.create_app(settings))
            runtime.server_options(settings, host="127.0.0.1", port=1)
        reads |= recorded
    return sorted(reads)


# --- what it depends on --------------------------------------------------------------------------


def _env(field: str) -> str:
    return field.upper()


def _plane_dependencies(service: dataplane.Service, tmp: Path) -> list[dict[str, str]]:
    """What the composition root builds for ``service``, embedded and with the full stack."""
    embedded, full = (dataplane.build_dataplane(s, service=service)
                      for s in _settings_variants(tmp))
    found: list[dict[str, str]] = [
        {"name": "SQLite", "role": "event store" + (", conversations" if service == "neuros"
                                                    else ""),
         "when": f"embedded (default): a file in {_env('auren_data_dir')}"},
        {"name": "PostgreSQL", "role": "event store" + (
            ", conversations" if full.conversations is not None else ""),
         "when": f"{_env('postgres_url')} is set"}]
    if full.bus_log is not None:
        found.append({"name": "Kafka", "role": "durable log of webhooks (" + type(
            full.bus_log.bus).__name__ + ", fsynced spool when it cannot take them)",
                      "when": f"{_env('kafka_bootstrap_servers')} is set (with "
                              f"{_env('postgres_url')})"})
    if full.redis is not None:
        role = ("dedup cache, rate limits" if full.cache is full.redis
                else "shared daily series")
        found.append({"name": "Redis", "role": role, "when": f"{_env('redis_url')} is set"})
    if full.llm is not None:
        found.append({"name": "LLM API", "role": "phrasing of replies (" + type(
            full.llm).__name__ + "); the numbers always come from the engine",
                      "when": f"{_env('neuros_llm')} is openai or anthropic"})
    for plane in (embedded, full):
        if plane.http is not None:
            asyncio.run(plane.http.aclose())
    return found


def dependencies(spec: ServiceSpec, tmp: Path) -> list[dict[str, str]]:
    if spec.name == "gateway":
        targets = gateway.upstreams(Settings.model_construct())
        return [{"name": target.title, "role": f"upstream of /api/{name}/*",
                 "when": f"always ({_env(f'auren_{name}_url')})"}
                for name, target in sorted(targets.items())]
    service: dataplane.Service = spec.name  # type: ignore[assignment]
    return _plane_dependencies(service, tmp)


# --- the documents ------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """The first paragraph, reST literals as Markdown ones, on one line."""
    first = text.strip().split("\n\n", 1)[0]
    return re.sub(r"\s+", " ", first.replace("``", "`")).strip()


def _authentication(operation: dict[str, Any], schema: dict[str, Any]) -> str:
    security = operation.get("security", schema.get("security"))
    if security:
        return "; or ".join(" + ".join(sorted(requirement)) for requirement in security)
    tag = (operation.get("tags") or ["untagged"])[0]
    if tag not in AUTHENTICATION:
        raise ValueError(f"{operation.get('operationId')}: the tag {tag!r} has no rule in "
                         "auren.docsgen.services.AUTHENTICATION: say how it is authenticated")
    return AUTHENTICATION[tag]


def endpoints(schema: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for path, operations in sorted(schema["paths"].items()):
        for method, operation in sorted(operations.items()):
            found.append({"path": path, "method": method.upper(),
                          "description": _plain(operation.get("description") or "")
                          or operation.get("summary", ""),
                          "authentication": _authentication(operation, schema)})
    return found


def _default(field: str) -> Any:
    value = Settings.model_fields[field].default
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def _every_provider() -> dict[str, Any]:
    """Settings under which every provider's webhook is configured (a placeholder secret each):
    a service documents the webhook paths of the providers it is configured for, and the
    checked-in document is the one of a deployment that takes them all."""
    found: dict[str, Any] = {"withings_enabled": True}
    for cls in PROVIDER_CLASSES.values():
        field = getattr(cls, "secrets_field", None)
        if field is not None:
            found[field] = (SecretStr("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="),)
    return found


def _app_schema(spec: ServiceSpec, tmp: Path) -> dict[str, Any]:
    app = spec.module.create_app(Settings.model_construct(auren_data_dir=tmp,
                                                          **_every_provider()))
    try:
        schema: dict[str, Any] = app.api.openapi()
        return schema
    finally:
        _close(app)


def document(spec: ServiceSpec, schema: dict[str, Any], settings: Settings, tmp: Path
             ) -> dict[str, Any]:
    reads = settings_read(spec, tmp)
    paths = schema["paths"]
    base_url = str(Settings.model_fields[spec.url_setting].default)
    api: dict[str, Any] = {"base_url": base_url, "base_url_setting": _env(spec.url_setting),
                           "openapi": f"docs/openapi/{spec.name}.json",
                           "endpoints": endpoints(schema)}
    if spec.gateway_prefix is not None:
        api["gateway_prefix"] = spec.gateway_prefix
    return {
        "service": {"name": spec.title, "id": spec.name, "title": schema["info"]["title"],
                    "version": schema["info"]["version"], "port": DEFAULT_PORTS[spec.name],
                    "command": f"auren serve {spec.name}"},
        "api": api,
        "dependencies": dependencies(spec, tmp),
        "environment": {
            "required": [_env(f) for f in reads
                         if Settings.model_fields[f].default is PydanticUndefined],
            "optional": [{"name": _env(f), "default": _default(f)} for f in reads
                         if Settings.model_fields[f].default is not PydanticUndefined]},
        "monitoring": {"health_check": "/health" if "/health" in paths else None,
                       "metrics": "/metrics" if "/metrics" in paths else None,
                       "openapi": "/openapi.json", "docs": "/docs",
                       "logs": "JSON lines on stderr with request_id (X-Request-ID)"},
        "team": {"owner": settings.auren_team_owner, "contact": settings.auren_team_contact},
    }


_HEADER = ("# Generated by `auren docs generate` from the code (auren/docsgen/services.py); do "
           "not edit.\n# Every setting has a default that works embedded (docs/SOP.md); "
           "`required` lists those without one.\n")


def render(settings: Settings) -> dict[str, str]:
    """``{relative path: content}`` of every service document and OpenAPI document."""
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="auren-docs-") as tmp:
        for spec in SERVICES:
            schema = _app_schema(spec, Path(tmp))
            files[str(OPENAPI_DIR / f"{spec.name}.json")] = json.dumps(
                schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
            files[str(SERVICE_DIR / f"{spec.name}.yaml")] = _HEADER + yaml.safe_dump(
                document(spec, schema, settings, Path(tmp)), sort_keys=True,
                allow_unicode=True, width=100, default_flow_style=False)
    return files


Renderer = Callable[[Settings], dict[str, str]]
__all__ = ["AUTHENTICATION", "SERVICES", "Renderer", "endpoints", "render"]
