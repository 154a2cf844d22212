"""One simulator process and one receiver for the whole package; every test uses its own
wearers, and faults and provider settings are reset after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.api.kit import OPEN_CLIENTS, Receiver, Sim, receiver, run_sim


@pytest.fixture(scope="package")
def sink() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


@pytest.fixture(scope="package")
def sim(sink: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    path: Path = tmp_path_factory.mktemp("sim")
    with run_sim(path, bridge=sink.url) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()
    if "sim" not in request.fixturenames:
        return
    server: Sim = request.getfixturevalue("sim")
    if server.admin("GET", "/_sim/faults"):
        server.admin("DELETE", "/_sim/faults")
    current = server.admin("GET", "/_sim/config")["providers"]
    for provider, values in DEFAULTS.items():
        now = current[provider]
        for limit in values["limits"]:
            limit.setdefault("per_user", 0)
        if any(now[key] != value for key, value in values.items()):
            server.patch(provider, **values)
    sink: Receiver = request.getfixturevalue("sink")
    sink.take()


# Each provider's settings at start (restored after every test that changes them).
DEFAULTS = {
    "oura": {"access_ttl_s": 86_400, "page_size": 25,
             "limits": [{"scope": "token", "limit": 5000, "window_s": 300}]},
    "whoop": {"access_ttl_s": 3600, "page_size": 10, "variant": {"recovery_id": "sleep"},
              "limits": [{"scope": "app", "limit": 100, "window_s": 60},
                         {"scope": "app", "limit": 10_000, "window_s": 86_400}]},
    "fitbit": {"access_ttl_s": 28_800, "page_size": 100, "subscriptions_required": True,
               "limits": [{"scope": "user", "limit": 150, "window_s": 3600}]},
    "polar": {"access_ttl_s": 10 * 365 * 86_400, "page_size": 100,
              "limits": [{"scope": "app", "limit": 500, "window_s": 900, "per_user": 20},
                         {"scope": "app", "limit": 5000, "window_s": 86_400, "per_user": 100}]},
    "withings": {"access_ttl_s": 10_800, "page_size": 25, "subscriptions_required": True,
                 "limits": [{"scope": "app", "limit": 120, "window_s": 60}]},
    "garmin": {"access_ttl_s": 86_400, "page_size": 100,
               "limits": [{"scope": "app", "limit": 100, "window_s": 60}]},
}
