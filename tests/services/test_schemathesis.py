"""Schemathesis against every service's ``/openapi.json``: requests generated from the document
itself (valid and invalid values for every parameter, header and body, undocumented methods,
missing headers), sent to the real server processes, and every answer checked by every
Schemathesis check: never a 5xx, and always what the document says (status, media type,
required headers, schema, ``Allow`` on 405).

Set up so that the fuzzing reaches past the front door:
- the read API and NEUROS get a service key (``Authorization: Bearer``), so the authenticated
  routes answer with data rather than 401;
- every provider is configured on the bridge, and ``schemathesis_hooks`` signs each generated
  webhook that carries the provider's signature headers, so arbitrary bodies, headers and
  queries reach each provider's parser (a request without them must get its 401);
- the legacy bridge keeps every provider but the native one unconfigured: their URLs must
  answer 404 for the methods they take and 405 (with ``Allow``) for the others;
- the gateway is fuzzed on its own document and with the bridge's and NEUROS's documents
  through its prefixes, which checks that it passes every answer on as the upstream gave it;
- the sink's metrics app (slow: it needs Kafka and PostgreSQL) on its own document.

One check is left out: ``positive_data_acceptance`` expects every schema-valid request to be
accepted, and no schema can express a signature over the bytes, a metric the store knows or an
opaque cursor. Examples per operation are bounded (a fixed seed, no shrinking), so the whole
module runs in about two minutes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auren.sim.credentials import fresh_secrets
from tests.helpers import NATIVE_SECRET, ServerProcess, free_port, run_server
from tests.stack import service_env, start_sink

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
API_KEY = "st-service-key-0123456789abcdef"
AUTH = {"AUREN_API_KEYS": API_KEY,
        "AUREN_JWT_SECRET": "st-jwt-secret-0123456789abcdef0123456789"}
EXCLUDED_CHECKS = ("positive_data_acceptance",)


def fuzz(document: str, tmp: Path, examples: int, env: dict[str, str],
         base_url: str | None = None) -> dict[str, Any]:
    """One ``schemathesis run`` of ``document`` (against ``base_url`` when the document's own
    server is another); returns its JSON report, with the console output under ``"output"``."""
    assert SCHEMATHESIS is not None, "schemathesis is a dev dependency (uv.lock)"
    reports = tmp / f"report-{uuid.uuid4().hex[:8]}"
    argv = [SCHEMATHESIS, "run", document, "--checks", "all",
            "--exclude-checks", ",".join(EXCLUDED_CHECKS), "--continue-on-failure",
            "--max-examples", str(examples), "--seed", "1", "--no-shrink",
            "--generation-database", "none", "--workers", "1", "--request-timeout", "10",
            "-H", f"Authorization: Bearer {API_KEY}", "--report", "json",
            "--report-dir", str(reports), "--no-color"]
    if base_url is not None:
        argv += ["--url", base_url]
    child_env = {**env, "SCHEMATHESIS_HOOKS": "tests.services.schemathesis_hooks",
                 "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    done = subprocess.run(argv, env=child_env, cwd=tmp, capture_output=True, text=True,
                          timeout=240, check=False)
    found = sorted(reports.glob("*.json"))
    assert found, f"no report:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(found[0].read_text())
    report["output"] = done.stdout + done.stderr
    return report


def assert_clean(report: dict[str, Any]) -> None:
    output = report["output"]
    tail = output[output.find("FAILURES"):] if "FAILURES" in output else output[-3000:]
    assert report["failures"] == [], tail[:12000]
    assert report["errors"] == [], tail[:12000]
    assert report["operations"]["tested"] == report["operations"]["total"] > 0, tail[-3000:]
    assert report["operations"]["errored"] == 0, tail[-3000:]
    assert report["test_cases"]["generated"] > 0
    assert report["exit_code"] == 0, tail[-3000:]


@pytest.fixture(scope="module")
def secrets_env() -> dict[str, str]:
    secrets = fresh_secrets({})
    # The legacy bridge keeps run_server's native secret only; both bridges share it.
    secrets["STANDARD_WEBHOOK_SECRET"] = NATIVE_SECRET
    return {**secrets, **AUTH}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory,
             secrets_env: dict[str, str]) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with contextlib.ExitStack() as stack:
        found = {
            "bridge": stack.enter_context(run_server("bridge", tmp, secrets_env)),
            "legacy": stack.enter_context(run_server("legacy", tmp, AUTH)),
            # A rate limit past anything the run sends: chats are answered, not only 429.
            "neuros": stack.enter_context(run_server(
                "neuros", tmp, {**AUTH, "NEUROS_RATE_PER_MINUTE": "1000000"})),
        }
        found["gateway"] = stack.enter_context(run_server("gateway", tmp, {
            f"AUREN_{name.upper()}_URL": server.base_url for name, server in found.items()}))
        yield found


def _env(secrets_env: dict[str, str], tmp: Path) -> dict[str, str]:
    return service_env(secrets_env, tmp / "schemathesis-data")


# (service, examples per operation): bounded so the module stays near two minutes.
DIRECT = [("bridge", 12), ("legacy", 4), ("neuros", 40), ("gateway", 15)]


@pytest.mark.parametrize(("name", "examples"), DIRECT)
def test_service_answers_its_document(services: dict[str, ServerProcess],
                                      secrets_env: dict[str, str], tmp_path: Path, name: str,
                                      examples: int) -> None:
    server = services[name]
    report = fuzz(server.base_url + "/openapi.json", tmp_path, examples,
                  _env(secrets_env, tmp_path))
    assert_clean(report)


@pytest.mark.parametrize(("upstream", "examples"), [("bridge", 3), ("neuros", 10)])
def test_gateway_passes_each_upstream_document_through(
        services: dict[str, ServerProcess], secrets_env: dict[str, str], tmp_path: Path,
        upstream: str, examples: int) -> None:
    """The upstream's own document, sent through the gateway's prefix: every answer must still
    be the documented one (nothing of it lost or changed on the way, and no 5xx of the
    gateway's own)."""
    gateway = services["gateway"]
    report = fuzz(services[upstream].base_url + "/openapi.json", tmp_path, examples,
                  _env(secrets_env, tmp_path), base_url=f"{gateway.base_url}/api/{upstream}")
    assert_clean(report)


def test_unconfigured_provider_refuses_other_methods_first(
        services: dict[str, ServerProcess]) -> None:
    """What the fuzzing relies on, stated plainly: an unconfigured provider's URL is 404 for
    its own methods and 405 naming them for the others; a handshake is documented."""
    legacy, bridge = services["legacy"].base_url, services["bridge"].base_url
    assert httpx.post(legacy + "/webhooks/whoop", content=b"{}", timeout=10).status_code == 404
    refused = httpx.put(legacy + "/webhooks/whoop", content=b"{}", timeout=10)
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    refused = httpx.delete(legacy + "/webhooks/oura", timeout=10)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"
    assert httpx.head(legacy + "/webhooks/oura", timeout=10).status_code == 404
    document = httpx.get(bridge + "/openapi.json", timeout=10).json()
    assert set(document["paths"]["/webhooks/oura"]) == {"get", "head", "post"}
    assert set(document["paths"]["/api/v1/webhooks/withings"]) == {"head", "post"}
    assert set(document["paths"]["/webhooks/whoop"]) == {"post"}


@pytest.mark.slow
def test_sink_metrics_app_answers_its_document(full_stack, secrets_env: dict[str, str],
                                               tmp_path: Path) -> None:
    port = free_port()
    env = service_env({**full_stack.isolated(), "SINK_METRICS_PORT": str(port)},
                      tmp_path / "sink-data")
    sink = start_sink(env, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            assert sink.process.poll() is None, sink.log()
            assert time.monotonic() < deadline, sink.log()
            time.sleep(0.1)
        report = fuzz(url + "/openapi.json", tmp_path, 20, _env(secrets_env, tmp_path))
    finally:
        assert sink.stop() == 0, sink.log()
    assert_clean(report)
