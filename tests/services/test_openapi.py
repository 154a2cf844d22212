"""Each service's OpenAPI document says what the service answers: real processes, real requests,
every answer checked against the operation the document gives for it (status, media type,
required headers), as a client generated from the document would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, run_server

# (method, path, body): requests whose answers must be documented, good and bad alike.
PROBES: dict[str, list[tuple[str, str, bytes | None]]] = {
    "bridge": [
        ("GET", "/health", None), ("GET", "/metrics", None),
        ("GET", "/api/v1/users/u1/events", None),
        ("GET", "/api/v1/users/u1/events?limit=0", None),  # FastAPI validation: 400
        ("GET", "/api/v1/users/u1/events?limit=x", None),
        ("GET", "/api/v1/users/u1/events?metric=nope", None),  # well-formed, wrong: 422
        ("POST", "/webhooks/auren", b"{}"),
        ("POST", "/api/v1/webhooks/nope", b"{}"),
        ("PUT", "/webhooks/auren", b"{}"),
        ("PUT", "/webhooks/whoop", b"{}"),  # unconfigured, and PUT is no method of its URL
        ("OPTIONS", "/api/v1/users/u1/events", None),
    ],
    "legacy": [
        ("GET", "/health", None), ("GET", "/metrics", None),
        ("POST", "/webhooks/auren", b"{}"), ("DELETE", "/webhooks/auren", None),
    ],
    "neuros": [
        ("GET", "/health", None), ("GET", "/metrics", None),
        ("POST", "/chat", b"not json"), ("POST", "/chat", b'{"message": 1}'),
        ("POST", "/chat", b'{"message": "hi", "user_id": "u1"}'),
        ("GET", "/api/v1/users/u1/conversations?limit=0", None),
        ("GET", "/api/v1/users/u1/conversations/bad%20id", None),
        ("DELETE", "/api/v1/users/u1/conversations", None),
        ("PUT", "/api/v1/users/u1/conversations", None),  # GET and DELETE are its methods
        ("PATCH", "/chat", b"{}"),
    ],
}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("openapi")
    with run_server("bridge", tmp) as bridge, run_server("legacy", tmp) as legacy, \
            run_server("neuros", tmp) as neuros:
        found = {"bridge": bridge, "legacy": legacy, "neuros": neuros}
        with run_server("gateway", tmp, {f"AUREN_{name.upper()}_URL": server.base_url
                                         for name, server in found.items()}) as gateway:
            yield {**found, "gateway": gateway}


def _operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path.split("?")[0]):
            return operations.get(method.lower())
    return None


def _methods(schema: dict[str, Any], path: str) -> set[str]:
    """Every method the document gives the path."""
    found: set[str] = set()
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path.split("?")[0]):
            found |= {m.upper() for m in operations}
    return found


@pytest.mark.parametrize("name", sorted(PROBES))
def test_every_answer_is_the_documented_one(services: dict[str, ServerProcess],
                                            name: str) -> None:
    server = services[name]
    schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    text = str(schema)
    assert "HTTPValidationError" not in text  # FastAPI's 422 is never what these answer
    for method, path, body in PROBES[name]:
        response = httpx.request(method, server.base_url + path, content=body, timeout=10,
                                 headers={"content-type": "application/json"} if body else {})
        status = response.status_code
        assert status < 500, (method, path, response.text)
        if status == 405:
            # Undocumented methods are refused, naming every method the document gives the
            # path (an unconfigured provider's URL is not in the document: its own methods).
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            documented = _methods(schema, path) or allowed
            assert allowed - {"HEAD"} == documented - {"HEAD"} != set(), (
                method, path, allowed, documented)
            continue
        operation = _operation(schema, method, path)
        if operation is None and status == 404:
            continue  # no such resource (an unknown provider): nothing to document
        assert operation is not None, (method, path)
        documented = operation["responses"].get(str(status)) or operation["responses"].get(
            "default")
        assert documented is not None, (method, path, status, sorted(operation["responses"]))
        media = response.headers.get("content-type", "").split(";")[0].strip()
        if documented.get("content"):
            assert media in documented["content"], (method, path, status, media)
        for header, spec in documented.get("headers", {}).items():
            if spec.get("required"):
                assert header.lower() in response.headers, (method, path, header)


def test_health_is_documented_as_health_json(services: dict[str, ServerProcess]) -> None:
    for server in services.values():
        schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
        responses = schema["paths"]["/health"]["get"]["responses"]
        assert set(responses["200"]["content"]) == {"application/health+json"}
        assert set(responses["503"]["content"]) == {"application/health+json"}


def test_every_documented_405_names_its_allow_header(services: dict[str, ServerProcess]) -> None:
    for server in services.values():
        schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
        for operations in schema["paths"].values():
            for operation in operations.values():
                found = operation["responses"].get("405")
                if found is not None:
                    assert found["headers"]["Allow"]["required"] is True


def test_every_fixed_path_refuses_an_undocumented_method_naming_the_documented_ones(
        services: dict[str, ServerProcess]) -> None:
    # The console's routes are a router FastAPI includes: a 405 on one of them once named only
    # the method of the first route matching the path.
    for name, server in services.items():
        schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
        for path, operations in schema["paths"].items():
            if "{" in path:
                continue
            documented = {m.upper() for m in operations} - {"HEAD"}
            method = next(m for m in ("PATCH", "PUT", "DELETE", "OPTIONS")
                          if m not in documented)
            response = httpx.request(method, server.base_url + path, timeout=10)
            assert response.status_code == 405, (name, method, path, response.status_code)
            allowed = {m.strip() for m in response.headers["allow"].split(",")} - {"HEAD"}
            assert allowed == documented, (name, path, allowed, documented)
