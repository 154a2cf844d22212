"""X-Forwarded-For is believed only from TRUSTED_PROXIES: the Withings allow-list and the read
API's loopback-only mode, on real bridge and gateway processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess, run_server

WITHINGS = {"WITHINGS_ENABLED": "true", "WITHINGS_ALLOWED_IPS": "203.0.113.0/24"}


def notify(server: ServerProcess, forwarded_for: str | None = None, prefix: str = "") -> int:
    now = int(time.time())
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    body = f"userid=3318842&appli=44&startdate={now - 3600}&enddate={now}"
    return httpx.post(f"{server.base_url}{prefix}/webhooks/withings", content=body,
                      headers=headers, timeout=10).status_code


def read(server: ServerProcess, forwarded_for: str | None = None, prefix: str = "") -> int:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for is not None else {}
    return httpx.get(f"{server.base_url}{prefix}/api/v1/users/someone/events",
                     headers=headers, timeout=10).status_code


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server("bridge", tmp_path_factory.mktemp("untrusting"), WITHINGS) as server:
        yield server


@pytest.fixture(scope="module")
def behind_gateway(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("behind")
    with run_server("bridge", tmp, {**WITHINGS, "TRUSTED_PROXIES": "127.0.0.1"}) as bridge, \
            run_server("gateway", tmp, {"AUREN_BRIDGE_URL": bridge.base_url},
                       ready_path="/metrics") as gateway:
        yield bridge, gateway


def test_without_trusted_proxies_no_forwarded_address_is_believed(
        untrusting: ServerProcess) -> None:
    assert notify(untrusting) == 401  # 127.0.0.1 is not an allowed Withings address
    # A loopback peer naming an allowed address was enough before: not any more.
    assert notify(untrusting, "203.0.113.5") == 401
    # Loopback-only reads: the local user directly, never whoever a local relay serves.
    assert read(untrusting) == 200
    assert read(untrusting, "203.0.113.5") == 403
    assert read(untrusting, "127.0.0.1") == 403


def test_a_trusted_proxy_names_the_client_from_the_right(
        behind_gateway: tuple[ServerProcess, ServerProcess]) -> None:
    bridge, _ = behind_gateway
    assert notify(bridge, "203.0.113.5") == 200
    # Only what the trusted proxy appended is a fact: the client is the rightmost untrusted.
    assert notify(bridge, "203.0.113.5, 198.51.100.7") == 401
    assert notify(bridge, "garbage") == 401


def test_a_claim_made_to_the_gateway_does_not_reach_the_bridge(
        behind_gateway: tuple[ServerProcess, ServerProcess]) -> None:
    _, gateway = behind_gateway
    # The gateway trusts nobody: its loopback client's claim leaves the client unknown, and
    # the bridge is told exactly that.
    assert notify(gateway, "203.0.113.5", prefix="/api/bridge") == 401
    assert read(gateway, "203.0.113.5", prefix="/api/bridge") == 403
    # The local user itself, through the gateway, is still the local user.
    assert read(gateway, prefix="/api/bridge") == 200


def test_a_bad_trusted_proxies_entry_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="trusted_proxies"), \
            run_server("bridge", tmp_path, {"TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"}):
        pass
