"""The safety screen: runs before any coaching and decides what NEUROS must not do itself.

- **Emergency** words (chest pain, trouble breathing, fainting, thoughts of self-harm…): the
  reply starts with the emergency-services line, and nothing else is coached.
- **Medical** questions (diagnosis, disease names, medication, "is this normal", pregnancy…):
  a short deferral to a clinician, beside the person's own data on the metric they named.
- **Other people**: NEUROS only ever reads the authenticated user's data; a request about
  someone else (another user, an id, a partner) gets a plain "only your own data".

Keyword rules are deliberately broad: a false positive costs a sentence of deferral; a false
negative could be coaching where a doctor is needed. These lines carry no digits, so the
"every number is evidence" rule holds for them too.
"""

from __future__ import annotations

import enum
import re

from auren.neuros.intents import normalise


class Concern(enum.StrEnum):
    EMERGENCY = "emergency"
    MEDICAL = "medical"
    OTHER_PERSON = "other_person"


EMERGENCY_LINE = ("If you have chest pain, trouble breathing, fainting, signs of a stroke or "
                  "thoughts of harming yourself, call your local emergency number now or go to "
                  "the nearest emergency department.")
MEDICAL_LINE = ("I can't diagnose conditions or advise on treatment or medication; please talk "
                "to a doctor or another clinician about this.")
OTHER_PERSON_LINE = ("I can only look at your own data, so I can't share or discuss anyone "
                     "else's.")
RANGE_LINE = ("Your resting heart rate is outside the usual adult range; consider checking it "
              "with a clinician.")

_EMERGENCY = re.compile(
    r"chest (?:pain|pressure|tightness)|(?:can'?t|cannot|hard to|trouble|difficulty) "
    r"breath\w*|short(?:ness)? of breath|\bfaint\w*|passed out|\bpass(?:ing)? out\b|"
    r"\bsuicid\w*|kill (?:myself|me)|end my life|self[- ]harm|hurt(?:ing)? myself|"
    r"\bstroke\b|heart attack|\bseizure|\boverdos\w*|\bcollaps\w*|\bunconscious\b|"
    r"numb(?:ness)? (?:in|on) (?:my )?(?:face|arm|left)|\b(?:911|112|999)\b")

_MEDICAL = re.compile(
    r"\bdiagnos\w*|\bdisease\b|\bdisorder\b|\barrhythmi\w*|\bafib\b|"
    r"atrial fibrillation|\bapn(?:o)?ea\b|\bcovid\b|\binfect\w*|\bflu\b|\bfever\b|\bsick\b|"
    r"\bill(?:ness)?\b|\bsymptom\w*|\bmedic(?:ation|ine|al)\w*|\bmeds\b|\bdrugs?\b|\bpills?\b|"
    r"\bdos(?:e|age)\b|\bprescri\w*|\bpregnan\w*|\bcancer\b|\bdiabet\w*|\bhypertension\b|"
    r"\btachycardia\b|\bbradycardia\b|\binsomnia\b|\bdepress\w*|\banxiety\b|\btumou?r\b|"
    r"\bis (?:this|that|it|my(?: \w+){1,4}) (?:normal|dangerous|serious|bad|healthy)\b"
    r"(?! range| band)|"
    r"\bsee a doctor\b|\bdo i have\b|\bwhat'?s wrong with me\b|\btreat(?:ment)?\b|\bcure\b|"
    r"\bheart (?:problem|disease|condition)\b|\bblood pressure\b|\bcholesterol\b")

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


def screen(message: str) -> Concern | None:
    """The first concern that applies, most serious first; None for an ordinary question."""
    text = normalise(message)
    if _EMERGENCY.search(text):
        return Concern.EMERGENCY
    if _OTHER_PERSON.search(text):
        return Concern.OTHER_PERSON
    if _MEDICAL.search(text):
        return Concern.MEDICAL
    return None
