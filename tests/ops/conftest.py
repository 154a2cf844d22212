"""One embedded system (all four services) shared by the toolkit's tests: starting it costs
seconds, and the tests only add data to it (each with its own users), never remove any."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from auren.ops.procs import embedded_system
from auren.ops.target import Target, settings_from_env


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("embedded")
    with embedded_system(data_dir) as services:
        yield Target(services.urls, settings_from_env(services.env), data_dir, services.pids,
                     services.log_paths, started_here=True)
