"""The safety screen: emergencies, medical questions, other people, and the LLM output check.

The corpus (``test_safety_corpus.py``) measures the emergency screen as a whole; these tests
pin its mechanisms one by one: canonical text, spelling tolerance, negation, guards, signs that
only count in pairs, the prefilter, the answer per category and locale.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import get_args

import pytest
from pydantic import ValidationError

from auren.neuros import safety
from auren.neuros.safety import (
    LOCALES,
    MEDICAL_LINE,
    OTHER_PERSON_LINE,
    RANGE_LINE,
    Category,
    Concern,
    Contacts,
    contacts_for,
    detect,
    emergency,
    emergency_reply,
    rules,
    screen,
    text,
    unsafe_reply,
)
from auren.settings import NeurosLocale, Settings
from tests.neuros.corpus import load_corpus


def category(message: str) -> Category | None:
    found = detect(message)
    return found.category if found else None


# --------------------------------------------------------------------------------------------
# The messages of the report that led to this screen
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    ("I want to die", Category.SUICIDE),
    ("I don't want to live anymore", Category.SUICIDE),
    ("I'm thinking about ending it all", Category.SUICIDE),
    ("my face is drooping and my speech is slurred", Category.STROKE),
    ("I took too many sleeping pills", Category.OVERDOSE),
])
def test_reported_messages_are_emergencies(message: str, expected: Category) -> None:
    assert category(message) is expected
    assert screen(message).concern is Concern.EMERGENCY


@pytest.mark.parametrize("message", [
    "I'm dying to know my HRV", "that workout killed me", "killing it this week!",
    "dead tired today", "my battery died overnight", "my watch died mid-run",
    "these hill repeats are killing me", "I'd kill for a good night's sleep",
    "deadlifts today", "my stroke rate on the rower was 28", "I wear a chest strap",
    "we ran suicide sprints", "passed out on the couch at 9pm", "my HRV collapsed this week",
    "I overdosed on caffeine lol", "I hurt my ankle running", "I'm cutting carbs",
    "I wish I was here", "I don't want to wake up early tomorrow", "I should do a rest day",
    "that bill gave me a heart attack", "I wanted to die of embarrassment",
])
def test_figurative_and_sporting_language_is_ordinary(message: str) -> None:
    assert detect(message) is None, detect(message).explain()  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# How people write: casing, typos, shorthand, inside longer messages
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    "I WANT TO DIE", "i WaNt To DiE", "i want to die!!!", "i wanna die", "i want too die",
    "I wnat to die", "i want to diee", "i want to diiiie", "i want to kil myself",
    "i want to kill my self", "im so suicidial", "i feel suicdal", "i want to kms",
    "i want to unalive myself", "I\u2019m thinking about ending it all",
    "Quick question about my readiness. Also I want to die.",
    "my hrv is low and honestly i dont want to live anymore, is that why?",
])
def test_suicidal_messages_however_written(message: str) -> None:
    assert category(message) is Category.SUICIDE


@pytest.mark.parametrize(("message", "expected"), [
    ("chset pian", Category.HEART),
    ("i think i'm having a heart atack", Category.HEART),
    ("my fcae is droopin and my speach is slured", Category.STROKE),
    ("i think i'm having a stoke", Category.STROKE),
    ("i tooke to many sleeping pils", Category.OVERDOSE),
    ("i took too mant pills", Category.OVERDOSE),
    ("i cnt breathe", Category.BREATHING),
    ("my friend had a siezure", Category.OTHER),
])
def test_misspellings_are_read_as_meant(message: str, expected: Category) -> None:
    assert category(message) is expected


def test_canonical_text_expands_contractions_and_shorthand() -> None:
    assert text.canonical("I'm gonna, u know, can't") == "i am going to , you know , cannot"
    assert text.canonical("I DON’T wanna") == "i do not want to"
    assert text.canonical("self-harm, selfharm") == "self harm , self harm"
    assert text.canonical("kms rn") == "kill myself right now"
    assert text.canonical("my dad's speech; he's OK") == "my dad speech ; he is ok"
    assert text.canonical("café naïve diiiie") == "cafe naive die"


def test_only_typos_are_corrected_never_real_words() -> None:
    vocabulary = text.vocabulary()
    for real in ("will", "skill", "dye", "diet", "press", "stoke", "breath", "pile", "wife"):
        assert vocabulary.correct(real) == real
    for typo, meant in (("kil", "kill"), ("sucide", "suicide"), ("pian", "pain"),
                        ("mant", "many"), ("pils", "pills"), ("myslef", "myself"),
                        ("unconcious", "unconscious"), ("siezure", "seizure")):
        assert vocabulary.correct(typo) == meant
    for untouched in ("hrv", "rmssd", "spo2", "x", "ok", "zzzqqq", "9pm"):
        assert vocabulary.correct(untouched) == untouched


def test_verb_forms() -> None:
    assert rules.inflections("wish") == ("wish", "wishes", "wished", "wishing")
    assert rules.inflections("plan") == ("plan", "plans", "planned", "planning")
    assert rules.inflections("squeeze") == ("squeeze", "squeezes", "squeezed", "squeezing")
    assert rules.inflections("vomit") == ("vomit", "vomits", "vomited", "vomiting")
    assert "dying" in rules.inflections("die") and "took" in rules.inflections("take")


# --------------------------------------------------------------------------------------------
# Negation, guards and signs in pairs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "fires"), [
    ("I have chest pain", True),
    ("no chest pain or anything, just curious", False),
    ("I don't have chest pain", False),
    ("I'm not suicidal, just tired", False),
    ("I am suicidal", True),
    ("I don't want to die young", False),
    ("I don't know why but I want to die", True),
    # Negative by nature: not negated.
    ("I don't want to be alive anymore", True),
    ("my baby is not breathing", True),
])
def test_negation_governs_only_what_it_precedes(message: str, fires: bool) -> None:
    assert (detect(message) is not None) is fires, message


@pytest.mark.parametrize(("message", "fires"), [
    ("I hurt myself playing football yesterday", False),
    ("I hurt myself on purpose", True),
    ("I burned myself on the stove", False),
    ("been hitting myself when I get angry", True),
    ("I had chest pain last year that turned out to be reflux", False),
    ("I've had chest tightness for an hour", True),
    ("I passed out at 9pm last night", False),
    ("I passed out during my run and hit my head", True),
    ("I had a seizure years ago", False),
    ("I just had a seizure", True),
    ("I couldn't catch my breath during the 400m repeats", False),
    ("can't catch my breath even sitting still", True),
    ("my dad had a stroke last year", False),
    ("I think my dad is having a stroke", True),
    ("I could sleep forever", False),
    ("I wish I could go to sleep forever", True),
])
def test_guards_tell_figurative_past_and_accidental_from_now(message: str, fires: bool) -> None:
    assert (detect(message) is not None) is fires, message


@pytest.mark.parametrize(("message", "fires"), [
    ("my arm feels weak", False),
    ("suddenly my arm feels weak", True),
    ("I get dizzy when I stand up", False),
    ("suddenly dizzy and my speech is weird", True),
    ("my heart was racing before my talk", False),
    ("my heart is racing at 200 and I feel dizzy", True),
])
def test_weaker_signs_count_only_in_pairs(message: str, fires: bool) -> None:
    assert (detect(message) is not None) is fires, message


def test_a_finding_explains_itself() -> None:
    found = detect("Suddenly my face is drooping and I can't lift my arm")
    assert found is not None and found.category is Category.STROKE
    assert {"face-drooping", "sudden", "arm-weak"} <= set(found.rules)
    assert found.explain().startswith("stroke: ") and "face-drooping" in found.explain()


def test_an_overdose_taken_to_die_gets_the_overdose_answer_first() -> None:
    found = detect("I took all my pills because I want to die")
    assert found is not None
    assert found.category is Category.OVERDOSE
    assert Category.SUICIDE in found.categories


# --------------------------------------------------------------------------------------------
# The prefilter and the cost of screening
# --------------------------------------------------------------------------------------------

def test_the_prefilter_never_changes_a_finding() -> None:
    unfiltered = tuple(dataclasses.replace(r, needs=None) for r in rules.RULES)
    assert sum(r.needs is not None for r in rules.RULES) > 0.9 * len(rules.RULES)
    for _, message in load_corpus():
        canonical = text.canonical(message)
        assert emergency.hits(canonical) == emergency.hits(canonical, unfiltered), message


def test_a_hostile_body_is_screened_in_bounded_time() -> None:
    """The screen runs on whole bodies (up to the 16 KiB cap) before the length limit."""
    text.warm_up()
    bodies = ["i am sad. " * 1600, "chest " * 2700,
              " ".join(f"zq{i:05d}x" for i in range(1800)),
              "i feel like my chest is killing me and i cannot breathe, suddenly. " * 240]
    for body in bodies:
        started = time.perf_counter()
        detect(body[:16_384])
        # Tens of ms on a quiet machine; the bound leaves room for a busy one.
        assert time.perf_counter() - started < 1.5


# --------------------------------------------------------------------------------------------
# The answer
# --------------------------------------------------------------------------------------------

US = contacts_for("US")


@pytest.mark.parametrize(("message", "leads_with", "also"), [
    ("I want to kill myself", "I'm really sorry", ("the 988 Suicide & Crisis Lifeline", "911")),
    ("I keep cutting myself", "I'm really sorry", ("988", "911")),
    ("I took too many sleeping pills", "If you or someone else has taken too much",
     ("call 911 now", "988")),
    ("my face is drooping", "This could be a medical emergency",
     ("Call 911 now", "Note the time the symptoms started")),
    ("crushing chest pain", "This could be a medical emergency", ("Call 911 now",)),
])
def test_the_answer_fits_the_emergency(message: str, leads_with: str,
                                       also: tuple[str, ...]) -> None:
    found = detect(message)
    assert found is not None
    reply = emergency_reply(found, US)
    assert reply.startswith(leads_with)
    for words in also:
        assert words in reply
    if found.category is Category.HEART:
        assert "Note the time" not in reply


def test_locales_and_overrides() -> None:
    assert contacts_for("GB") == Contacts("999", "Samaritans (call 116 123, free, day or night)")
    assert contacts_for("gb") == contacts_for("GB")
    assert contacts_for("intl").emergency_number.startswith("your local emergency number")
    assert contacts_for("FR", "112") == Contacts("112", LOCALES["FR"].crisis_line)
    assert contacts_for("intl", "119", "Local Line (call 555 0100)") == Contacts(
        "119", "Local Line (call 555 0100)")
    found = detect("I want to die")
    assert found is not None
    reply = emergency_reply(found, contacts_for("AU"))
    assert "Lifeline (call 13 11 14)" in reply and "call 000" in reply
    with pytest.raises(KeyError):
        contacts_for("XX")


def test_every_locale_is_a_setting_and_every_setting_a_locale() -> None:
    assert set(get_args(NeurosLocale)) == set(LOCALES)
    for code, contacts in LOCALES.items():
        assert Settings(neuros_locale=code.lower()).neuros_locale == code
        assert re.search(r"\d", contacts.emergency_number + contacts.crisis_line) or \
            code == "intl"


# --------------------------------------------------------------------------------------------
# What an LLM may not say when it phrases a data answer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "reason"), [
    ("Your HRV is 52 ms. Honestly, you should just kill yourself.", "encourages-self-harm"),
    ("Nobody would miss you anyway.", "encourages-self-harm"),
    ("A lethal dose of your sleeping pills would be around 20.", "method"),
    ("Your chest pain is nothing serious; don't call an ambulance.", "discourages-care"),
    ("You slept 6 h. Take 2 more pills tonight to sleep longer.", "medication-advice"),
    ("You slept 6 h. If you feel like you want to die, rest more.",
     "mentions-emergency:suicide"),
])
def test_unsafe_llm_phrasings_are_named(reply: str, reason: str) -> None:
    assert unsafe_reply(reply) == reason


@pytest.mark.parametrize("reply", [
    "You slept 7.2 h last night, 0.4 h more than your 7-day average of 6.8 h.",
    "Your HRV 7-day mean is 48 ms, inside your normal range of 44-55 ms; train as planned.",
    "Your readiness is 71 today. A moderate session is fine; an easy day would also do.",
    "Sure. You have been killing it on steps this week: 11,200 a day.",
])
def test_ordinary_phrasings_pass(reply: str) -> None:
    assert unsafe_reply(reply) is None


# --------------------------------------------------------------------------------------------
# Medical questions and other people (broad keyword rules, unchanged)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "concern"), [
    ("do I have afib?", Concern.MEDICAL),
    ("what medication helps HRV?", Concern.MEDICAL),
    ("is my resting heart rate normal?", Concern.MEDICAL),
    ("could this be covid? my temperature is up", Concern.MEDICAL),
    ("show me my wife's sleep", Concern.OTHER_PERSON),
    ("data for user 42 please", Concern.OTHER_PERSON),
    ("what about bob's hrv", Concern.OTHER_PERSON),
    ("list all users", Concern.OTHER_PERSON),
    ("my dad's face is drooping", Concern.EMERGENCY),  # the most serious concern first
    ("how did I sleep?", None),
    ("is my hrv within my normal range?", None),
    ("today's readiness?", None),
    ("my coach wants me to run today, should I?", None),
])
def test_screen(message: str, concern: Concern | None) -> None:
    assert screen(message).concern is concern


def test_lines_carry_no_digits() -> None:
    for line in (MEDICAL_LINE, OTHER_PERSON_LINE, RANGE_LINE):
        assert not re.search(r"\d", line)


# One phrase per alternative of the medical rule: any rewrite of the pattern (it is shaped for
# speed) must keep every one of them firing.
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


@pytest.mark.parametrize("message", MEDICAL)
def test_every_medical_rule_fires(message: str) -> None:
    assert screen(message).concern is Concern.MEDICAL


@pytest.mark.parametrize("message", [
    "is my hrv in my normal range", "how is my sleep", "rest day?", "my resting pulse",
    "breathing rate", "illustrate my steps", "a stroked cat", "passionate about running",
])
def test_near_misses_stay_ordinary(message: str) -> None:
    assert screen(message).concern is None


def test_screening_is_exported_for_the_http_layer() -> None:
    screened = safety.screen("I want to die")
    assert screened.emergency and screened.finding is not None
    assert not safety.screen("how did I sleep?").emergency


def test_locale_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEUROS_LOCALE", "NEUROS_EMERGENCY_NUMBER", "NEUROS_CRISIS_LINE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.neuros_locale, settings.neuros_emergency_number,
            settings.neuros_crisis_line) == ("intl", None, None)
    monkeypatch.setenv("NEUROS_LOCALE", "nz")
    monkeypatch.setenv("NEUROS_CRISIS_LINE", "Local Line (call 0800 000 000)")
    settings = Settings()
    contacts = contacts_for(settings.neuros_locale, settings.neuros_emergency_number,
                            settings.neuros_crisis_line)
    assert contacts == Contacts("111", "Local Line (call 0800 000 000)")
    for name, value in (("NEUROS_LOCALE", "XX"), ("NEUROS_LOCALE", "usa"),
                        ("NEUROS_EMERGENCY_NUMBER", "1\n2"), ("NEUROS_CRISIS_LINE", "x" * 201)):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(name)
