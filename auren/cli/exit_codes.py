"""The exit codes of every ``auren`` command, defined once."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    CHECK_FAILED = 1  # a check, SLA or delivery failed
    USAGE = 2  # bad usage or configuration
    ENVIRONMENT = 3  # the environment broke (a server would not start, a tool is missing)
