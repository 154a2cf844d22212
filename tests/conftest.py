"""Session fixtures shared by the test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import FullStack, start_stack


@pytest.fixture(scope="session")
def full_stack() -> Iterator[FullStack]:
    """Real Kafka, PostgreSQL and Redis (see ``tests/stack.py``); only tests marked slow use
    it, and the first of them pays the start-up (about 10 s once Kafka's jars are cached)."""
    yield from start_stack()
