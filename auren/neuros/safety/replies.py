"""The emergency answer: the local emergency number and a crisis line, by locale.

``LOCALES`` is a built-in table of countries (ISO 3166-1 alpha-2 codes) and their ambulance /
emergency number and a national crisis line; ``intl`` names no single country. A deployment
sets ``NEUROS_LOCALE`` to its country, and may override either entry with
``NEUROS_EMERGENCY_NUMBER`` and ``NEUROS_CRISIS_LINE`` (for a region, a service of its own, or
a number that changed). The table is a starting point to verify for the country served, not
an authority: services change their numbers.

The answer depends on the finding: a crisis (suicidal thoughts, self-harm) leads with the
crisis line, an overdose or poisoning with the emergency number (the crisis line too), any
other emergency with the emergency number and the nearest emergency department.
"""

from __future__ import annotations

from dataclasses import dataclass

from auren.neuros.safety.emergency import Finding
from auren.neuros.safety.rules import Category


@dataclass(frozen=True, slots=True)
class Contacts:
    """Where to send a person in an emergency, as the replies phrase it."""

    emergency_number: str  # "911", "15 or 112", or a phrase for ``intl``
    crisis_line: str       # "the 988 Suicide & Crisis Lifeline (call or text 988)"


LOCALES: dict[str, Contacts] = {
    "intl": Contacts("your local emergency number (such as 112 in Europe or 911 in North "
                     "America)",
                     "a local crisis line (findahelpline.com lists them by country)"),
    "US": Contacts("911", "the 988 Suicide & Crisis Lifeline (call or text 988)"),
    "CA": Contacts("911", "the 9-8-8 Suicide Crisis Helpline (call or text 988)"),
    "GB": Contacts("999", "Samaritans (call 116 123, free, day or night)"),
    "IE": Contacts("112 or 999", "Samaritans (call 116 123, free, day or night)"),
    "AU": Contacts("000", "Lifeline (call 13 11 14)"),
    "NZ": Contacts("111", "Need to Talk? (call or text 1737)"),
    "DE": Contacts("112", "TelefonSeelsorge (call 0800 111 0 111 or 0800 111 0 222)"),
    "AT": Contacts("144", "TelefonSeelsorge (call 142)"),
    "CH": Contacts("144", "Die Dargebotene Hand / La Main Tendue (call 143)"),
    "FR": Contacts("15 or 112", "the national suicide prevention line (call 3114)"),
    "BE": Contacts("112", "Zelfmoordlijn (call 1813) or the Centre de Prévention du Suicide "
                          "(call 0800 32 123)"),
    "NL": Contacts("112", "113 Zelfmoordpreventie (call 113 or 0800 0113)"),
    "ES": Contacts("112", "the suicidal behaviour helpline (call 024)"),
    "SE": Contacts("112", "Självmordslinjen (call 90101)"),
    "NO": Contacts("113", "Mental Helse (call 116 123)"),
    "DK": Contacts("112", "Livslinien (call 70 201 201)"),
    "FI": Contacts("112", "the MIELI crisis line (call 09 2525 0111)"),
    "IN": Contacts("112", "Tele-MANAS (call 14416)"),
    "SG": Contacts("995", "Samaritans of Singapore (call 1767)"),
    "BR": Contacts("192", "CVV (call 188)"),
    "ZA": Contacts("10177 (or 112 from a mobile)", "SADAG (call 0800 567 567)"),
}


def contacts_for(locale: str, emergency_number: str | None = None,
                 crisis_line: str | None = None) -> Contacts:
    """The locale's contacts with the explicit overrides applied.

    Raises:
        KeyError: an unknown locale (settings validate it first).
    """
    base = LOCALES["intl" if locale.lower() == "intl" else locale.upper()]
    return Contacts(emergency_number or base.emergency_number, crisis_line or base.crisis_line)


_CRISIS = ("I'm really sorry you're going through this, and I'm glad you said something. You "
           "don't have to face it alone: please contact {crisis} now to talk with someone, any "
           "time. If you or someone else might act on these thoughts or is in danger right "
           "now, call {emergency}.")
_POISON = ("If you or someone else has taken too much of a medicine or swallowed something "
           "harmful, call {emergency} now, even if you feel fine for the moment, and keep the "
           "packet or bottle to show them. If it was taken to cause harm, {crisis} is there for "
           "you too, any time.")
_MEDICAL = ("This could be a medical emergency. Call {emergency} now, or have someone take you "
            "to the nearest emergency department; don't wait to see if it passes.{extra} Your "
            "data questions can wait.")
_STROKE = " Note the time the symptoms started."


def emergency_reply(finding: Finding, contacts: Contacts) -> str:
    """The answer to a message the screen found to be an emergency."""
    values = {"emergency": contacts.emergency_number, "crisis": contacts.crisis_line}
    if finding.category is Category.OVERDOSE:
        return _POISON.format(**values)
    if finding.category in (Category.SUICIDE, Category.SELF_HARM):
        return _CRISIS.format(**values)
    extra = _STROKE if Category.STROKE in finding.categories else ""
    return _MEDICAL.format(extra=extra, **values)
