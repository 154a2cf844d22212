"""Request ids through real processes: the gateway sets one (or takes a trusted proxy's), the
bridge and NEUROS behind it log under the same id, every answer carries it in X-Request-ID,
and every log line is JSON with no user id and no query string in it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import ServerProcess, hrv_event, native_body, native_headers, run_server

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """bridge and NEUROS that trust the gateway (loopback), and a gateway that trusts nobody
    (``gateway``) beside one that trusts the loopback as its own proxy (``proxied``)."""
    tmp = tmp_path_factory.mktemp("rid")
    trust = {"TRUSTED_PROXIES": "127.0.0.1"}
    with run_server("bridge", tmp, trust) as bridge, \
            run_server("neuros", tmp, {"AUREN_DATA_DIR": str(bridge.data_dir), **trust}) as neuros:
        upstreams = {"AUREN_BRIDGE_URL": bridge.base_url, "AUREN_NEUROS_URL": neuros.base_url}
        with run_server("gateway", tmp, upstreams) as gateway, \
                run_server("gateway", tmp, {**upstreams, **trust}) as proxied:
            yield {"bridge": bridge, "neuros": neuros, "gateway": gateway, "proxied": proxied}


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the process wrote, each parsed as JSON (a line that is not fails the test)."""
    return [orjson.loads(line) for line in server.log().splitlines() if line.strip()]


def access_lines(server: ServerProcess, request_id: str, timeout_s: float = 5.0
                 ) -> list[dict[str, Any]]:
    """The access log lines of ``request_id`` (written once the answer was sent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [line for line in log_lines(server)
                 if line.get("request_id") == request_id and line.get("logger") == "auren.access"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def send_webhook(gateway: ServerProcess, user: str, headers: dict[str, str] | None = None
                 ) -> httpx.Response:
    body = native_body(user, [hrv_event(3, record=f"{user}-r")])
    return httpx.post(gateway.base_url + "/api/bridge/webhooks/auren", content=body,
                      headers={**native_headers(body), **(headers or {})}, timeout=10)


def test_one_id_through_the_gateway_and_the_bridge(chain: dict[str, ServerProcess]) -> None:
    response = send_webhook(chain["gateway"], f"rid-{uuid.uuid4().hex[:8]}")
    assert response.status_code == 202, response.text
    request_id = response.headers["x-request-id"]
    assert HEX32.fullmatch(request_id)
    assert len(response.headers.get_list("x-request-id")) == 1
    (at_gateway,) = access_lines(chain["gateway"], request_id)
    (at_bridge,) = access_lines(chain["bridge"], request_id)
    assert at_gateway["path"] == "/api/bridge/webhooks/auren" and at_gateway["status"] == 202
    assert at_bridge["path"] == "/webhooks/auren" and at_bridge["status"] == 202
    assert at_gateway["service"] == "gateway" and at_bridge["service"] == "bridge"
    assert at_bridge["method"] == "POST" and at_bridge["duration_ms"] >= 0
    # Each request got its own id.
    assert send_webhook(chain["gateway"], "rid-other").headers["x-request-id"] != request_id


def test_an_id_offered_by_an_untrusted_client_is_replaced(chain: dict[str, ServerProcess]
                                                          ) -> None:
    forged = "forged-" + uuid.uuid4().hex
    response = send_webhook(chain["gateway"], "rid-forged", {"X-Request-ID": forged})
    assert response.status_code == 202
    request_id = response.headers["x-request-id"]
    assert request_id != forged and HEX32.fullmatch(request_id)
    # The bridge saw and logged the gateway's id, never the client's.
    assert access_lines(chain["bridge"], request_id)
    assert not any(forged in line.get("request_id", "") for line in log_lines(chain["bridge"]))


def test_a_trusted_proxys_id_is_carried_to_the_upstream(chain: dict[str, ServerProcess]
                                                        ) -> None:
    offered = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex}"  # an AWS-style trace id
    response = httpx.get(chain["proxied"].base_url + "/api/neuros/health",
                         headers={"X-Request-ID": offered}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == offered
    assert access_lines(chain["proxied"], offered)
    (at_neuros,) = access_lines(chain["neuros"], offered)
    assert at_neuros["path"] == "/health" and at_neuros["service"] == "neuros"


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "-leading-dash", "a,b", "é"])
def test_a_malformed_id_is_replaced_even_from_a_trusted_proxy(
        chain: dict[str, ServerProcess], offered: str) -> None:
    response = httpx.get(chain["proxied"].base_url + "/health",
                         headers={"X-Request-ID": offered.encode()}, timeout=10)
    assert HEX32.fullmatch(response.headers["x-request-id"])


def test_direct_requests_get_ids_and_errors_too(chain: dict[str, ServerProcess]) -> None:
    bridge = chain["bridge"]
    unsigned = httpx.post(bridge.base_url + "/webhooks/auren", content=b"{}", timeout=10)
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert HEX32.fullmatch(unsigned.headers["x-request-id"])
    assert len(unsigned.headers.get_list("x-request-id")) == 1
    (line,) = access_lines(bridge, unsigned.headers["x-request-id"])
    assert line["status"] == 401


def test_logs_hold_no_user_id_and_no_query(chain: dict[str, ServerProcess]) -> None:
    user = f"person-{uuid.uuid4().hex[:8]}"
    response = httpx.get(f"{chain['gateway'].base_url}/api/bridge/api/v1/users/{user}/events",
                         params={"since": "2026-01-01T00:00:00Z", "limit": 5}, timeout=10)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    (at_bridge,) = access_lines(chain["bridge"], request_id)
    assert at_bridge["path"] == "/api/v1/users/*/events"
    (at_gateway,) = access_lines(chain["gateway"], request_id)
    assert at_gateway["path"] == "/api/bridge/api/v1/users/*/events"
    for name in ("gateway", "bridge"):
        text = chain[name].log()
        assert user not in text and "since=" not in text, name


def test_every_webhooks_access_line_is_written_by_a_bridge_stopped_with_sigterm(
        tmp_path: Path) -> None:
    """Access lines are written a turn of the event loop at a time: a burst of concurrent
    webhooks, then SIGTERM (graceful shutdown, no exit handlers), and every line is there,
    each once, with its request's status."""
    ids: dict[str, int] = {}
    with run_server("bridge", tmp_path) as bridge:
        import concurrent.futures

        def post(n: int) -> httpx.Response:
            user = f"burst-{n}"
            body = native_body(user, [hrv_event(3, record=f"{user}-r")])
            headers = native_headers(body) if n % 5 else {}  # every fifth unsigned: a 401
            return httpx.post(bridge.base_url + "/webhooks/auren", content=body,
                              headers=headers, timeout=10)

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            for response in pool.map(post, range(60)):
                ids[response.headers["x-request-id"]] = response.status_code
        bridge.process.terminate()
        bridge.process.wait(15)
    lines = [line for line in log_lines(bridge)
             if line.get("logger") == "auren.access" and line["path"] == "/webhooks/auren"]
    assert sorted(line["request_id"] for line in lines) == sorted(ids)
    assert {line["request_id"]: line["status"] for line in lines} == ids
    assert sorted(ids.values()).count(401) == 12


def test_access_log_off(tmp_path: Path) -> None:
    with run_server("legacy", tmp_path, {"ACCESS_LOG": "false"}) as legacy:
        response = httpx.get(legacy.base_url + "/health", timeout=10)
        assert HEX32.fullmatch(response.headers["x-request-id"])
        time.sleep(0.2)
        assert not [line for line in log_lines(legacy) if line["logger"] == "auren.access"]


def _child_id(queue: Any) -> None:
    from auren.services.kernel.requests import new_request_id

    queue.put(new_request_id())


def test_request_ids_are_unique_in_a_process_and_across_a_fork() -> None:
    """Ids come from a generator seeded once per process: a forked worker must not repeat its
    parent's sequence (it is seeded again in the child)."""
    import multiprocessing

    from auren.services.kernel.requests import new_request_id

    ids = {new_request_id() for _ in range(20_000)}
    assert len(ids) == 20_000 and all(HEX32.fullmatch(i) for i in ids)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_id, args=(queue,))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(30)
    assert HEX32.fullmatch(from_child) and from_child != new_request_id()
