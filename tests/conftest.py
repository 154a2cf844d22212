"""Session fixtures shared by the test packages."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.stack import FullStack, start_stack

# A suite started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
# ignored, and so would every process it starts: the tests that stop `auren serve all` or
# `auren validate` with Ctrl-C (SIGINT) would find it ignored. A handler here makes each child
# start with SIGINT at its default (exec resets handled signals), as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def full_stack() -> Iterator[FullStack]:
    """Real Kafka, PostgreSQL and Redis (see ``tests/stack.py``); only tests marked slow use
    it, and the first of them pays the start-up (about 10 s once Kafka's jars are cached)."""
    yield from start_stack()
