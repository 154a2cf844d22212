"""The safety screen's evaluation corpus: the message files and how to read them (shared by
the corpus measurement and the screen's unit tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).parent
FILES = {"development": "safety_corpus.yaml", "held-out": "safety_corpus_heldout.yaml",
         "blind": "safety_corpus_blind.yaml", "blind 2": "safety_corpus_blind2.yaml",
         "blind 3": "safety_corpus_blind3.yaml"}
EMERGENCY_KINDS = {"suicide", "selfharm", "overdose", "stroke", "heart", "breathing", "other"}
ORDINARY_KINDS = {"data", "fig", "medical"}
CRISIS_KINDS = {"suicide", "selfharm"}


@dataclass(frozen=True)
class Entry:
    split: str
    emergency: bool
    kind: str
    text: str


def _entries() -> list[Entry]:
    entries = []
    for split, name in FILES.items():
        data = yaml.safe_load((HERE / name).read_text(encoding="utf-8"))
        for label in ("emergency", "ordinary"):
            for kind, message in data[label]:
                entries.append(Entry(split, label == "emergency", kind, message))
    return entries


ENTRIES = _entries()


def load_corpus() -> list[tuple[bool, str]]:
    """(is an emergency, message) for every message of every file."""
    return [(e.emergency, e.text) for e in ENTRIES]
