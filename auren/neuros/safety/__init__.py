"""The safety screen: runs before anything else on a chat and decides what NEUROS must not do.

- **Emergency** (``emergency``: suicidal thoughts, self-harm, overdose or poisoning, stroke or
  heart-attack signs, severe breathing trouble, collapse, seizure, bleeding, danger): the reply
  is the emergency answer for the deployment's locale (``replies``: the local emergency number
  and a crisis line), nothing is coached, no LLM is asked, and neither the rate limit nor the
  message-length limit refuses it.
- **Medical** questions (diagnosis, disease names, medication, "is this normal", pregnancy…):
  a short deferral to a clinician, beside the person's own data on the metric they named.
- **Other people**: NEUROS only ever reads the authenticated user's data; a request about
  someone else (another user, an id, a partner) gets a plain "only your own data".

The emergency screen is a deterministic classifier (canonical text, spelling-tolerant words,
phrase rules with negation and figurative guards), measured against a corpus in the tests. The
medical and other-person rules are deliberately broad keyword rules: a false positive costs a
sentence of deferral. Their lines carry no digits, so the "every number is evidence" rule
holds for them; an emergency answer's only numbers are the phone numbers it gives.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from auren.neuros.intents import normalise
from auren.neuros.safety.emergency import Finding, detect
from auren.neuros.safety.output import unsafe_reply
from auren.neuros.safety.replies import LOCALES, Contacts, contacts_for, emergency_reply
from auren.neuros.safety.rules import Category
from auren.neuros.safety.text import warm_up

__all__ = ["LOCALES", "MEDICAL_LINE", "OTHER_PERSON_LINE", "RANGE_LINE", "Category", "Concern",
           "Contacts", "Finding", "Screening", "contacts_for", "detect", "emergency_reply",
           "screen", "unsafe_reply", "warm_up"]


class Concern(enum.StrEnum):
    EMERGENCY = "emergency"
    MEDICAL = "medical"
    OTHER_PERSON = "other_person"


MEDICAL_LINE = ("I can't diagnose conditions or advise on treatment or medication; please talk "
                "to a doctor or another clinician about this.")
OTHER_PERSON_LINE = ("I can only look at your own data, so I can't share or discuss anyone "
                     "else's.")
RANGE_LINE = ("Your resting heart rate is outside the usual adult range; consider checking it "
              "with a clinician.")

# Alternatives that start at a word boundary share one "\b" (``\b(?:a|b)`` is ``\ba|\bb``):
# Python's re tries every alternative at every position, each testing the boundary first, and
# one shared test made the medical screen ten times faster (14 -> 1.5 us a message).
_MEDICAL = re.compile(
    r"\b(?:diagnos\w*|disease\b|disorder\b|arrhythmi\w*|afib\b|"
    r"apn(?:o)?ea\b|covid\b|infect\w*|flu\b|fever\b|sick\b|"
    r"ill(?:ness)?\b|symptom\w*|medic(?:ation|ine|al)\w*|meds\b|drugs?\b|pills?\b|"
    r"dos(?:e|age)\b|prescri\w*|pregnan\w*|cancer\b|diabet\w*|hypertension\b|"
    r"tachycardia\b|bradycardia\b|insomnia\b|depress\w*|anxiety\b|tumou?r\b|"
    r"is (?:this|that|it|my(?: \w+){1,4}) (?:normal|dangerous|serious|bad|healthy)\b"
    r"(?! range| band)|"
    r"see a doctor\b|do i have\b|what'?s wrong with me\b|treat(?:ment)?\b|cure\b|"
    r"heart (?:problem|disease|condition)\b|blood pressure\b|cholesterol\b)|"
    r"atrial fibrillation")

_OTHER_PERSON = re.compile(
    r"\b(?:other|another|different|all|every|each)\s+(?:users?|persons?|people|accounts?|"
    r"members?|customers?|patients?)\b|\bsomeone else'?s?\b|\bsomebody else'?s?\b|"
    r"\buser[_ -]?id\b|\buser\s+[\w@.+-]+'s\b|\bfor user\b|\b(?:users?|account)\s*[:=#]|"
    r"\bmy (?:wife|husband|partner|friend|son|daughter|mom|mum|dad|father|mother|brother|"
    r"sister|boss|colleague|coach|client|kid|child)(?:'s|s')|\b(?:for|of|about|on) my (?:wife|"
    r"husband|partner|friends?|son|daughter|mom|mum|dad|father|mother|brother|sister|boss|"
    r"colleague|client|kids?|child)\b|\b(?:his|her|their)\s+(?:sleep|hrv|data|"
    r"heart|readiness|recovery|steps|rhr)\b|\beveryone'?s\b|\bdump\b|\ball (?:the )?data\b|"
    # "bob's sleep", "user42's data" (but not "today's readiness" or "last week's sleep")
    r"\b(?!(?:today|yesterday|tonight|night|week|month|year|day|morning|weekend|monday|"
    r"tuesday|wednesday|thursday|friday|saturday|sunday|neuros|auren|everyone)'s)[a-z][\w.@-]*'s "
    r"(?:data|sleep|hrv|heart|readiness|recovery|steps|rhr|resting|numbers|metrics|stats|"
    r"records|history|conversations?|messages)\b")


@dataclass(frozen=True, slots=True)
class Screening:
    """What the screen found: the most serious concern, and for an emergency, why."""

    concern: Concern | None
    finding: Finding | None = None

    @property
    def emergency(self) -> bool:
        return self.concern is Concern.EMERGENCY


ORDINARY = Screening(None)


def screen(message: str) -> Screening:
    """The most serious concern of ``message``: emergency, other person, medical, or none."""
    finding = detect(message)
    if finding is not None:
        return Screening(Concern.EMERGENCY, finding)
    text = normalise(message)
    if _OTHER_PERSON.search(text):
        return Screening(Concern.OTHER_PERSON)
    if _MEDICAL.search(text):
        return Screening(Concern.MEDICAL)
    return ORDINARY
