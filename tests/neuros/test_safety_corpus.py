"""The emergency screen measured against its evaluation corpus.

Four files of messages written for it (see each file's header): ``safety_corpus.yaml`` (the
development set), ``safety_corpus_heldout.yaml`` (a fifth of the first writing, set aside at
random before the screen was built), and ``safety_corpus_blind.yaml``,
``safety_corpus_blind2.yaml`` and ``safety_corpus_blind3.yaml`` (written later, each before
its first run). Every emergency must
be found (recall) and no ordinary message may trigger (false alarms); the test prints both,
per file and overall, and holds the screen to recall >= 98 % and false alarms <= 2 %.
Crisis messages (suicide, self-harm) must also get an answer that names the crisis line.
"""

from __future__ import annotations

import pytest

from auren.neuros.safety import Category, contacts_for, detect, emergency_reply
from tests.neuros.corpus import (
    CRISIS_KINDS,
    EMERGENCY_KINDS,
    ENTRIES,
    FILES,
    ORDINARY_KINDS,
    Entry,
)


def test_the_corpus_is_what_it_says() -> None:
    emergencies = [e for e in ENTRIES if e.emergency]
    ordinary = [e for e in ENTRIES if not e.emergency]
    assert len(emergencies) >= 200 and len(ordinary) >= len(emergencies)
    assert {e.kind for e in emergencies} == EMERGENCY_KINDS
    assert {e.kind for e in ordinary} == ORDINARY_KINDS
    texts = [e.text for e in ENTRIES]
    assert len(texts) == len(set(texts)), "a message appears twice"
    for split in FILES:
        assert any(e.split == split and e.emergency for e in ENTRIES)
        assert any(e.split == split and not e.emergency for e in ENTRIES)


def _rates(entries: list[Entry]) -> tuple[float, int, int, float, int, int, list[Entry],
                                           list[Entry]]:
    emergencies = [e for e in entries if e.emergency]
    ordinary = [e for e in entries if not e.emergency]
    missed = [e for e in emergencies if detect(e.text) is None]
    alarms = [e for e in ordinary if detect(e.text) is not None]
    recall = 1 - len(missed) / len(emergencies)
    false_alarms = len(alarms) / len(ordinary)
    return (recall, len(emergencies) - len(missed), len(emergencies), false_alarms,
            len(alarms), len(ordinary), missed, alarms)


def test_recall_and_false_alarms(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [f"{'corpus':<12} {'recall':>8} {'found':>9} {'false alarms':>13} {'raised':>9}"]
    for split in (*FILES, "all"):
        part = ENTRIES if split == "all" else [e for e in ENTRIES if e.split == split]
        recall, found, total, alarms, raised, ordinary, _, _ = _rates(part)
        lines.append(f"{split:<12} {recall:>8.1%} {found:>4}/{total:<4} {alarms:>13.1%} "
                     f"{raised:>4}/{ordinary:<4}")
    with capsys.disabled():
        print("\nNEUROS emergency screen on its corpus\n" + "\n".join(lines))
    recall, _, _, false_alarms, _, _, missed, alarms = _rates(ENTRIES)
    assert recall >= 0.98, [e.text for e in missed]
    assert false_alarms <= 0.02, [(e.text, detect(e.text).explain())  # type: ignore[union-attr]
                                  for e in alarms]


def test_crisis_messages_get_the_crisis_line() -> None:
    contacts = contacts_for("US")
    wrong = []
    for entry in ENTRIES:
        found = detect(entry.text) if entry.kind in CRISIS_KINDS else None
        if found is None:
            continue
        reply = emergency_reply(found, contacts)
        if contacts.crisis_line not in reply:
            wrong.append((entry.text, found.explain()))
    assert wrong == []


@pytest.mark.parametrize("kind", ["stroke", "heart", "breathing", "other"])
def test_medical_emergencies_are_told_to_call_now(kind: str) -> None:
    contacts = contacts_for("GB")
    for entry in (e for e in ENTRIES if e.kind == kind):
        found = detect(entry.text)
        if found is None or found.category in (Category.SUICIDE, Category.SELF_HARM):
            continue
        assert "999" in emergency_reply(found, contacts), entry.text
