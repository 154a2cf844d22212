"""Builtin phrasing: short, specific replies from the engine's facts. Deterministic.

Each function returns the reply text and the evidence it rests on. Every number in a text is
written from an :class:`~auren.neuros.engine.Evidence` item with ``Evidence.text``, so it reads
exactly as the evidence says; dates appear only as ISO dates that are ends of an evidence
window. Replies end with at most one concrete suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from auren.neuros import engine
from auren.neuros.engine import (
    DeviationInsight,
    Evidence,
    HrvInsight,
    LoadInsight,
    PeriodInsight,
    ReadinessInsight,
    SleepInsight,
)
from auren.neuros.safety import MEDICAL_LINE, OTHER_PERSON_LINE, RANGE_LINE

CAPABILITIES = ("I can answer questions about your own sleep, HRV, resting heart rate, "
                "readiness, recovery and training load, and how they changed over a period "
                "such as \"last week\" or \"since Monday\".")


@dataclass(slots=True)
class Reply:
    text: str
    evidence: list[Evidence] = field(default_factory=list)
    # False: say it exactly so (no LLM phrasing), e.g. a notice that data stopped arriving.
    phrase: bool = True

    def add(self, sentence: str, *items: Evidence | None) -> None:
        self.text = f"{self.text} {sentence}".strip() if sentence else self.text
        for item in items:
            if item is not None and item not in self.evidence:
                self.evidence.append(item)


def _night(ev: Evidence, today: date) -> str:
    day = ev.window.end
    return "last night" if day == today else f"on the night ending {day.isoformat()}"


def _day(day: date, today: date) -> str:
    if day == today:
        return "today"
    if day == today - timedelta(days=1):
        return "yesterday"
    return f"on {day.isoformat()}"


# --------------------------------------------------------------------------------------------
# Simple intents
# --------------------------------------------------------------------------------------------


def greeting() -> Reply:
    return Reply("Hi, I'm NEUROS. " + CAPABILITIES)


def status() -> Reply:
    return Reply("Yes, I'm up and running. " + CAPABILITIES)


def help_reply() -> Reply:
    return Reply(CAPABILITIES + " For example: \"How did I sleep last night?\" or \"How is my "
                 "HRV this week compared to last week?\"")


def unknown() -> Reply:
    return Reply("I'm not sure what you're asking. " + CAPABILITIES)


def other_person() -> Reply:
    return Reply(OTHER_PERSON_LINE + " Ask me about your own sleep, HRV, resting heart rate or "
                 "readiness.")


def medical(data: Reply | None) -> Reply:
    reply = Reply(MEDICAL_LINE)
    if data is not None and data.text:
        reply.add("For reference, from your own data: " + data.text, *data.evidence)
    else:
        reply.add("If it helps, I can show you your own sleep, HRV and resting heart rate.")
    return reply


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def sleep(s: SleepInsight, today: date, *, advice: bool = True) -> Reply:
    reply = Reply("")
    if s.last is None and s.mean7.n_days == 0:
        reply.add(f"I don't have any sleep data from the last {s.mean7.window.days} days.",
                  s.mean7)
        return reply
    if s.last is not None:
        reply.add(f"You slept {s.last.text()} h {_night(s.last, today)}.", s.last)
        if s.last.window.end != today:
            reply.add("I don't have last night's sleep yet.")
    if s.mean7.value is not None:
        reply.add(f"Your {s.mean7.window.days}-day average is {s.mean7.text()} h "
                  f"({s.mean7.n_days} nights).", s.mean7)
    else:
        reply.add(f"I have only {s.mean7.n_days} nights in the last {s.mean7.window.days} days, "
                  f"too few for an average.", s.mean7)
    if s.debt.value is not None:
        reply.add(f"Sleep debt over the last {s.debt.window.days} days: {s.debt.text()} h "
                  f"({s.debt.status}), against a need of {s.need.text()} h a night.",
                  s.debt, s.need)
    else:
        reply.add(f"Sleep debt needs at least {s.debt.min_days} of the last "
                  f"{s.debt.window.days} nights; I have {s.debt.n_days}.", s.debt)
    if s.streak is not None:
        reply.add(f"That's {s.streak.text()} nights in a row with at least "
                  f"{s.streak.text('threshold')} h.", s.streak)
    if advice:
        if s.debt.status in ("moderate", "high"):
            reply.add("An earlier night or two would pay some of that debt back.")
        elif s.last is not None and s.last.value is not None and s.need.value is not None \
                and s.last.value < s.need.value:
            reply.add("A slightly earlier bedtime tonight would help.")
        else:
            reply.add("Keep your current sleep routine.")
    return reply


def hrv(h: HrvInsight, today: date, *, advice: bool = True) -> Reply:
    reply = Reply("")
    if h.latest is None:
        reply.add(f"I don't have any HRV from the last {h.mean7.window.days} days.", h.mean7)
        return reply
    reply.add(f"Your HRV {_night(h.latest, today)} was {h.latest.text()} ms.", h.latest)
    if h.mean7.value is None:
        reply.add(f"I have HRV on only {h.mean7.n_days} of the last {h.mean7.window.days} days "
                  f"and need at least {h.mean7.min_days} for a baseline.", h.mean7)
        return reply
    base = (f"Your {h.mean7.window.days}-day average is {h.mean7.text()} ms "
            f"({h.mean7.n_days} nights)")
    if h.band.value is None:
        reply.add(f"{base}; I need {h.band.min_days} days in the last {h.band.window.days} to "
                  f"learn your normal range and have {h.band.n_days}.", h.mean7, h.band)
        return reply
    where = {"below": "below", "above": "above", "normal": "within"}[h.status or "normal"]
    reply.add(f"{base}, {where} your {h.band.window.days}-day normal range of "
              f"{h.band.text('low')}-{h.band.text('high')} ms.", h.mean7, h.band)
    if h.acute_drop:
        reply.add(f"{'Last night' if h.latest.window.end == today else 'That'} reading was "
                  f"well below your usual.")
    elif h.falling:
        reply.add("It has fallen two nights in a row.")
    if advice:
        if h.status == "below" or h.acute_drop:
            reply.add("Favour easy training and extra recovery until it comes back up.")
        elif h.status == "above":
            reply.add("That points to good recovery.")
        else:
            reply.add("That's a stable baseline, a sign you're coping well with your load.")
    return reply


def resting_hr(r: DeviationInsight, today: date, *, advice: bool = True) -> Reply:
    reply = Reply("")
    if r.latest is None:
        reply.add("I don't have a resting heart rate from the last few nights.")
        return reply
    when = _night(r.latest, today)
    if r.baseline is None or r.baseline.value is None or r.latest.delta is None:
        reply.add(f"Your resting heart rate {when} was {r.latest.text()} bpm.", r.latest)
        if r.baseline is not None:
            reply.add(f"I need at least {r.baseline.min_days} nights in the last "
                      f"{r.baseline.window.days} for a baseline and have {r.baseline.n_days}.",
                      r.baseline)
    else:
        if r.latest.delta == 0:
            relation = "the same as"
        else:
            relation = (f"{r.latest.text('delta')} bpm "
                        f"{'above' if r.latest.delta > 0 else 'below'}")
        reply.add(f"Your resting heart rate {when} was {r.latest.text()} bpm, {relation} your "
                  f"{r.baseline.window.days}-day average of {r.baseline.text()} bpm.",
                  r.latest, r.baseline)
        if advice:
            if r.status == "elevated":
                reply.add("That's higher than usual; it often follows hard training, short "
                          "sleep, alcohol or a coming illness, so keep today easy.")
            elif r.status == "lower":
                reply.add("Lower than usual is generally a sign of good recovery.")
            else:
                reply.add("That's in line with your usual.")
    if r.latest.value is not None and not 40 <= r.latest.value <= 100:
        reply.add(RANGE_LINE)
    return reply


def readiness(r: ReadinessInsight, h: HrvInsight, rhr: DeviationInsight, s: SleepInsight,
              today: date, *, advice: bool = True) -> Reply:
    reply = Reply("")
    if r.score.value is None:
        reply.add("I can't score your readiness yet: I need your HRV or resting heart rate "
                  "against its baseline plus one more signal.", r.score)
        parts = [hrv(h, today, advice=False), resting_hr(rhr, today, advice=False)]
        for part in parts:
            reply.add(part.text, *part.evidence)
        return reply
    names = {"hrv": "HRV", "resting_hr": "resting heart rate", "respiratory_rate":
             "respiratory rate", "temperature": "temperature", "sleep": "last night's sleep",
             "sleep_debt": "sleep debt"}
    inputs = [names[i] for i in r.inputs]
    joined = ", ".join(inputs[:-1]) + " and " + inputs[-1] if len(inputs) > 1 else inputs[0]
    reply.add(f"Your readiness today is {r.score.text()} ({r.band}), from {joined}.",
              r.score, *r.extra)
    if h.mean7.value is not None and h.status is not None:
        where = {"below": "below", "above": "above", "normal": "within"}[h.status]
        reply.add(f"HRV: {h.mean7.window.days}-day average {h.mean7.text()} ms, {where} your "
                  f"normal range.", h.mean7, h.band)
    if rhr.latest is not None and rhr.latest.delta is not None and rhr.baseline is not None:
        direction = ("at" if rhr.latest.delta == 0 else
                     f"{rhr.latest.text('delta')} bpm "
                     f"{'above' if rhr.latest.delta > 0 else 'below'}")
        reply.add(f"Resting heart rate: {rhr.latest.text()} bpm, {direction} your usual.",
                  rhr.latest, rhr.baseline)
    if s.last is not None and "sleep" in r.inputs:
        reply.add(f"Sleep: {s.last.text()} h against a need of {s.need.text()} h.", s.last,
                  s.need)
    elif "sleep" not in r.inputs:
        reply.add("No sleep from last night, so sleep is not in today's score.")
    if advice:
        reply.add({"green": "A good day for a harder session if you planned one.",
                   "yellow": "A moderate day: train if you like, but keep the intensity in "
                             "check.",
                   "red": "Prioritise recovery today: easy movement and an early night."}
                  [r.band or "yellow"])
    return reply


def training(load: LoadInsight) -> Reply:
    reply = Reply("")
    spec = engine.DISPLAY[load.acute.metric]
    what = "steps" if load.acute.metric == "steps" else "active energy"
    unit = "steps" if load.acute.metric == "steps" else "kcal"
    if load.ratio is None or load.chronic.value is None or load.acute.value is None:
        reply.add(f"To compare your recent training load with your usual I need "
                  f"{engine.LOAD_MIN_28D} days of {what} in the last {load.chronic.window.days} "
                  f"and have {load.chronic.n_days}.",
                  Evidence(load.chronic.metric, load.chronic.statistic, load.chronic.window,
                           None, spec.unit, load.chronic.n_days,
                           min_days=engine.LOAD_MIN_28D))
        if load.acute.value is not None:
            reply.add(f"Your {what} averaged {load.acute.text()} {unit} a day over the last "
                      f"{load.acute.window.days} days.", load.acute)
        return reply
    reply.add(f"Over the last {load.acute.window.days} days your {what} averaged "
              f"{load.acute.text()} {unit} a day, {load.ratio.text()} times your "
              f"{load.chronic.window.days}-day average of {load.chronic.text()} {unit} "
              f"(acute:chronic ratio): {load.description}.",
              load.acute, load.chronic, load.ratio)
    return reply


def recovery(r: ReadinessInsight, h: HrvInsight, rhr: DeviationInsight, s: SleepInsight,
             load: LoadInsight, today: date) -> Reply:
    reply = readiness(r, h, rhr, s, today, advice=False)
    if load.ratio is not None:
        reply.add(f"Your last {load.acute.window.days} days of activity were "
                  f"{load.ratio.text()} times your {load.chronic.window.days}-day average "
                  f"({load.description}).", load.acute, load.chronic, load.ratio)
    ratio = load.ratio.value if load.ratio is not None and load.ratio.value else None
    strained = (r.band == "red" or h.status == "below" or h.acute_drop
                or rhr.status == "elevated")
    if r.score.value is None and not strained:
        reply.add("Until I know your baseline, let how you feel guide the intensity.")
    elif strained:
        reply.add("Keep today easy: a walk, mobility or an easy spin, and get to bed early.")
    elif ratio is not None and ratio > 1.3:
        reply.add("You've done more than usual lately; an easier day would balance it out.")
    elif r.band == "green":
        reply.add("You're well recovered: a good day for a harder or longer session.")
    else:
        reply.add("A moderate session is reasonable; save the hardest efforts for a greener "
                  "day.")
    return reply


# --------------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------------

_PER = {"sleep_duration": ("Sleep", "h a night"), "hrv_rmssd": ("HRV", "ms on average"),
        "resting_heart_rate": ("Resting heart rate", "bpm on average"),
        "steps": ("Steps", "steps a day"), "active_energy": ("Active energy", "kcal a day")}
_UNIT = {"sleep_duration": "h", "hrv_rmssd": "ms", "resting_heart_rate": "bpm",
         "steps": "steps", "active_energy": "kcal"}


def _period_label(ev: Evidence, label: str, today: date) -> str:
    if ev.window.days == 1:
        return _day(ev.window.end, today)
    return f"over {label}" if label.startswith("the last") else label


def trend(items: Sequence[tuple[str, PeriodInsight | None]], label: str, today: date) -> Reply:
    reply = Reply("")
    for metric, p in items:
        name, per = _PER[metric]
        if p is None:
            reply.add(f"{name}: that period hasn't happened yet.")
            continue
        cur = p.current
        when = _period_label(cur, label, today)
        if cur.value is None:
            reply.add(f"{name}: no data {when}.", cur)
            continue
        unit = _UNIT[metric]
        if cur.window.days == 1:
            so_far = " so far" if p.partial_today else ""
            text = f"{name} {when}{so_far}: {cur.text()} {unit}"
        else:
            text = f"{name} {when}: {cur.text()} {per} ({cur.n_days} days with data)"
        prev = p.previous
        if prev is not None and prev.value is not None and p.direction is not None \
                and not p.partial_today:
            before = (f"the {prev.window.days} days before" if prev.window.days > 1 else
                      _day(prev.window.end, today))
            if p.direction == "same":
                text += f", the same as {before}"
            else:
                text += f", {p.direction} from {prev.text()} {unit} {before}"
            reply.add(text + ".", cur, prev)
        else:
            reply.add(text + ".", cur)
    if not reply.text:
        reply.add("I have nothing to report for that period.")
    return reply


def compare(items: Sequence[tuple[str, PeriodInsight | None]], first: str, second: str,
            today: date) -> Reply:
    reply = Reply("")
    for metric, p in items:
        name = _PER[metric][0]
        unit = _UNIT[metric]
        if p is None or p.previous is None:
            reply.add(f"{name}: {first} hasn't happened yet.")
            continue
        a, b = p.current, p.previous
        a_label = _period_label(a, first, today)
        b_label = _period_label(b, second, today)
        if a.value is None or b.value is None:
            missing = a_label if a.value is None else b_label
            reply.add(f"{name}: no data {missing}, so I can't compare.", a, b)
            continue
        verdict = {"up": "higher", "down": "lower", "same": "the same"}[p.direction or "same"]
        reply.add(f"{name}: {a.text()} {unit} {a_label} ({a.n_days} days) vs {b.text()} {unit} "
                  f"{b_label} ({b.n_days} days), {verdict}.", a, b)
    return reply


# --------------------------------------------------------------------------------------------
# Whether the data is arriving
# --------------------------------------------------------------------------------------------

DEVICE_NAMES = {"oura": "Oura ring", "whoop": "WHOOP", "fitbit": "Fitbit", "polar": "Polar",
                "withings": "Withings devices", "garmin": "Garmin",
                "terra": "device connected through Terra"}


@dataclass(frozen=True, slots=True)
class Silence:
    """A connected source that stopped sending a topic's data."""

    provider: str
    last_start: datetime
    last_received: datetime
    silent_days: int
    needs_reconnect: bool


def device(provider: str) -> str:
    return DEVICE_NAMES.get(provider, provider)


def stale_sources(topic: str, silences: Sequence[Silence]) -> Reply:
    """No answer from old data: which device went quiet, since when, and when data last
    arrived."""
    reply = Reply("", phrase=False)
    for s in silences:
        reply.add(f"Your {device(s.provider)} has sent no new {topic} data since "
                  f"{s.last_start.date().isoformat()}, {s.silent_days} days ago; the last data "
                  f"arrived {s.last_received.strftime('%Y-%m-%d %H:%M')} UTC.")
        if s.needs_reconnect:
            reply.add(f"Its connection needs to be renewed: connect your {device(s.provider)} "
                      "again.")
    reply.add(f"I won't describe your {topic} from data that old. Once it syncs again, ask me "
              "and I'll have the new days.")
    return reply


def reconnect_note(reply: Reply, providers: Sequence[str]) -> Reply:
    for provider in providers:
        reply.add(f"Your {device(provider)} connection needs to be renewed: connect it again "
                  "to keep its data coming.")
    return reply
