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


# One phrase per alternative of the emergency and medical rules: any rewrite of the patterns
# (they are shaped for speed) must keep every one of them firing.
EMERGENCIES = [
    "i feel faint", "i keep passing out", "feeling suicidal", "was that a stroke?",
    "i had a seizure", "i think i overdosed", "i collapsed on my run", "i was unconscious",
    "should i call 911", "call 112", "dial 999", "chest tightness", "trouble breathing",
    "hard to breathe", "cannot breathe", "shortness of breath", "short of breath",
    "i passed out", "i want to kill me", "end my life", "self-harm", "self harm",
    "hurting myself", "heart attack", "numbness in my face", "numb on left",
]
MEDICAL = [
    "can you diagnose me", "heart disease?", "a sleep disorder", "arrhythmia", "afib",
    "sleep apnea", "sleep apnoea", "covid", "an infection", "flu", "fever", "i feel sick",
    "illness", "am i ill", "symptoms", "medication", "medicine", "medical advice", "meds",
    "drugs", "a drug", "pills", "dose", "dosage", "prescription", "pregnant", "cancer",
    "diabetes", "hypertension", "tachycardia", "bradycardia", "insomnia", "depression",
    "anxiety", "tumour", "tumor", "is this normal", "is that dangerous", "is it serious",
    "is my resting heart rate bad", "should i see a doctor", "do i have something",
    "what's wrong with me", "whats wrong with me", "treatment", "treat it", "a cure",
    "heart problem", "heart condition", "blood pressure", "cholesterol", "atrial fibrillation",
]


@pytest.mark.parametrize("message", EMERGENCIES)
def test_every_emergency_rule_fires(message: str) -> None:
    assert screen(message) is Concern.EMERGENCY


@pytest.mark.parametrize("message", MEDICAL)
def test_every_medical_rule_fires(message: str) -> None:
    assert screen(message) is Concern.MEDICAL


@pytest.mark.parametrize("message", [
    "is my hrv in my normal range", "how is my sleep", "rest day?", "my resting pulse",
    "breathing rate", "illustrate my steps", "a stroked cat", "passionate about running",
])
def test_near_misses_stay_ordinary(message: str) -> None:
    assert screen(message) is None
