"""The screen applied to text NEUROS did not write: an LLM's phrasing of a data answer.

An LLM only ever phrases answers about sleep, HRV and the like; a phrasing that encourages
self-harm, gives a method or a lethal amount, tells someone to skip emergency care or to change
their medication, or that talks about an emergency at all (the emergency screen fires on it),
has strayed, and the builtin phrasing is served instead. :func:`unsafe_reply` names the reason.
"""

from __future__ import annotations

from auren.neuros.safety import text
from auren.neuros.safety.emergency import detect, hits
from auren.neuros.safety.rules import Category, Rule, make_rule


def _rule(name: str, pattern: str) -> Rule:
    return make_rule(name, Category.OTHER, pattern, negatable=False)


OUTPUT_RULES: tuple[Rule, ...] = (
    _rule("encourages-self-harm",
          r"\b(?:kill|hurt|harm|cut|end|off|starve) yourself\b|\bend your (?:own )?life\b|"
          r"\byou (?:should|could|might as well|deserve to|ought to) (?:just )?(?:die|"
          r"disappear|give up on life)\b|\b(?:nobody|no one) would (?:miss|care about|notice) "
          r"you\b|\b(?:everyone|they|the world) (?:would be|is) better off without you\b|"
          r"\bbetter off dead\b"),
    _rule("method",
          r"\b(?:lethal|fatal|deadly|toxic) (?:dose|amount|quantity)\b|\boverdose on\b|"
          r"\bhow (?:many|much) (?:\w+ ){0,3}(?:to|would) (?:die|kill|overdose)\b"),
    _rule("discourages-care",
          r"\b(?:do not|never|no need to|there is no need to|not necessary to|skip|avoid|"
          r"stop) (?:\w+ ){0,2}(?:call|calling|see|seeing|go to|going to|visit|visiting|bother "
          r"calling|bother with) (?:an |the |a |your )?(?:ambulance|doctor|emergency|911|999|"
          r"112|hospital|er|paramedics|clinician|gp|emergency department|emergency room)\b|"
          r"\bignore (?:the|your|those|these|any) (?:\w+ )?(?:chest pain|pain|symptoms|"
          r"warning signs)\b|\b(?:it is|that is|this is) (?:probably |likely )?nothing to "
          r"worry about\b"),
    _rule("medication-advice",
          r"\b(?:take|double|increase|decrease|reduce|stop taking|skip|halve) (?:(?:\d+|a|an|"
          r"one|two|three|another|extra|more|double|half) (?:\w+ )?(?:mg|milligrams|pills?|"
          r"tablets?|capsules?|doses?)|(?:your|the|my) (?:dose|dosage|medication|meds|insulin|"
          r"pills|tablets))\b"),
)


def unsafe_reply(reply: str) -> str | None:
    """Why ``reply`` must not be served (a rule name, or the emergency it talks about); None
    when it may."""
    canonical = text.canonical(reply)
    found = hits(canonical, OUTPUT_RULES)
    if found:
        return found[0].rule
    finding = detect(reply)
    if finding is not None:
        return f"mentions-emergency:{finding.category.value}"
    return None
