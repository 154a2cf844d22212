"""The emergency screen: does a message describe a crisis or a medical emergency, and which.

Deterministic and explainable: the message is brought to canonical text (``text``), split into
sentences, and every rule of ``rules`` is tried on every sentence. A match counts unless a
negation governs it or its guard describes a figurative, sporting, accidental or past use. A
category fires on one strong match, or on two different weaker signs (stroke: "suddenly" and
"my arm feels weak"). The :class:`Finding` names the rules that fired and the words they
matched, so every decision can be read back (and is, in the logs, without the message).

No network, no model: the same message always gets the same answer, in about a tenth of a
millisecond.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auren.neuros.safety import text
from auren.neuros.safety.rules import RULES, Category, Rule, vocabulary_terms

text.configure(vocabulary_terms())

# Checked in this order; the first that fires is the finding's category (an overdose taken to
# die needs the overdose answer first, and it names the crisis line too).
PRIORITY = (Category.OVERDOSE, Category.SUICIDE, Category.SELF_HARM, Category.STROKE,
            Category.HEART, Category.BREATHING, Category.OTHER)
_SENTENCE_END = re.compile(r" ?[.;!?] ?")
# A negation governs a match when only these words stand between them ("i have never really
# been suicidal", "do not have chest pain").
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "none", "denies", "deny"})
_BETWEEN = frozenset({
    "really", "even", "ever", "actually", "currently", "have", "has", "had", "been", "being",
    "am", "is", "are", "was", "were", "feel", "feeling", "felt", "a", "an", "any", "the",
    "having", "experiencing", "getting", "got", "get", "do", "does", "did", "i", "he", "she",
    "they", "it", "much", "too", "so", "very", "just", "that", "seem", "seems", "think",
})
_MARK = "\u00a7"  # stands for the match in the sentence a guard reads


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that fired, and the canonical words it matched."""

    rule: str
    category: Category
    words: str
    weight: int


@dataclass(frozen=True, slots=True)
class Finding:
    """Why a message is an emergency: its category and every sign that counted."""

    category: Category
    categories: tuple[Category, ...]
    hits: tuple[Hit, ...]

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h.rule for h in self.hits))

    def explain(self) -> str:
        """``category: rule "words", ...`` (a message's words: for tests and tools, not logs)."""
        signs = ", ".join(f'{h.rule} "{h.words}"' for h in self.hits)
        return f"{self.category.value}: {signs}"


def _negated(sentence: str, start: int) -> bool:
    for word in reversed(sentence[:start].split()):
        if word in _NEGATIONS:
            return True
        if word not in _BETWEEN:
            return False
    return False


def _counts(rule: Rule, sentence: str, match: re.Match[str]) -> bool:
    if rule.negatable and _negated(sentence, match.start()):
        return False
    if rule.unless is None:
        return True
    marked = f"{sentence[:match.start()]}{_MARK}{sentence[match.end():]}"
    if not rule.unless.search(marked):
        return True
    return rule.force is not None and rule.force.search(marked) is not None


def hits(canonical: str, rules: tuple[Rule, ...] = RULES) -> list[Hit]:
    """Every sign the rules find in canonical text, sentence by sentence."""
    found: list[Hit] = []
    # Rules whose needed words occur nowhere in the message are not tried on any sentence.
    active = [r for r in rules if r.needs is None or any(n in canonical for n in r.needs)]
    if not active:
        return found
    for sentence in _SENTENCE_END.split(canonical):
        if not sentence:
            continue
        for rule in active:
            if rule.needs is not None and not any(n in sentence for n in rule.needs):
                continue
            for match in rule.pattern.finditer(sentence):
                if _counts(rule, sentence, match):
                    found.append(Hit(rule.name, rule.category, match.group(), rule.weight))
                    break
    return found


def detect(message: str) -> Finding | None:
    """The emergency ``message`` describes, or None."""
    found = hits(text.canonical(message))
    if not found:
        return None
    fired: list[Category] = []
    for category in PRIORITY:
        signs = {h.rule: h.weight for h in found if h.category is category}
        if sum(signs.values()) >= 2:
            fired.append(category)
    if not fired:
        return None
    return Finding(fired[0], tuple(fired),
                   tuple(h for h in found if h.category in fired))
