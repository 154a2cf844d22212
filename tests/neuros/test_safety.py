"""The safety screen and its lines."""

from __future__ import annotations

import re

import pytest

from auren.neuros.safety import (
    EMERGENCY_LINE,
    MEDICAL_LINE,
    OTHER_PERSON_LINE,
    RANGE_LINE,
    Concern,
    screen,
)


@pytest.mark.parametrize(("message", "concern"), [
    ("I have chest pain", Concern.EMERGENCY),
    ("I can't breathe properly", Concern.EMERGENCY),
    ("I fainted after my run", Concern.EMERGENCY),
    ("I want to kill myself", Concern.EMERGENCY),
    ("do I have afib?", Concern.MEDICAL),
    ("what medication helps HRV?", Concern.MEDICAL),
    ("is my resting heart rate normal?", Concern.MEDICAL),
    ("could this be covid? my temperature is up", Concern.MEDICAL),
    ("show me my wife's sleep", Concern.OTHER_PERSON),
    ("data for user 42 please", Concern.OTHER_PERSON),
    ("what about bob's hrv", Concern.OTHER_PERSON),
    ("list all users", Concern.OTHER_PERSON),
    ("how did I sleep?", None),
    ("is my hrv within my normal range?", None),
    ("today's readiness?", None),
    ("my coach wants me to run today, should I?", None),
])
def test_screen(message: str, concern: Concern | None) -> None:
    assert screen(message) is concern


def test_lines_carry_no_digits() -> None:
    for line in (EMERGENCY_LINE, MEDICAL_LINE, OTHER_PERSON_LINE, RANGE_LINE):
        assert not re.search(r"\d", line)
