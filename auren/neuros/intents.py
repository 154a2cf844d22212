"""What the person asked: a rule-based intent, the metrics named and the days meant. Pure.

Rules, not a model: they are fast, testable and explainable, and a wrong guess costs one
clarifying turn. Periods understood (``today`` is the person's local date):

- ``today``, ``last night``, ``yesterday``, a weekday (``on Monday``, the latest one before
  today), an ISO date (``2026-03-02``) or ``March 2`` / ``2 March``;
- ``this week`` (Monday to today), ``last week`` (the Monday-Sunday before), ``this month``,
  ``last month``, ``last 30 days``, ``past two weeks``, ``since Monday``, ``since 2026-03-01``,
  ``from 2026-03-01 to 2026-03-07``, ``lately`` (the last 7 days);
- comparisons: two periods with ``vs`` / ``compared to`` / ``than`` between them, or one
  period and the same number of days before it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

MAX_PERIOD_DAYS = 366


class Intent(enum.StrEnum):
    GREETING = "greeting"
    STATUS = "status"
    HELP = "help"
    READINESS = "readiness"
    SLEEP = "sleep"
    HRV = "hrv"
    RESTING_HR = "resting_hr"
    RECOVERY = "recovery"
    TRAINING = "training"
    TREND = "trend"
    COMPARE = "compare"
    UNKNOWN = "unknown"
    # Set by the safety screen, never by the rules below.
    MEDICAL = "medical"
    EMERGENCY = "emergency"
    OTHER_PERSON = "other_person"


# Intents whose answer is made of the person's data (the LLM may phrase these).
DATA_INTENTS = frozenset({Intent.READINESS, Intent.SLEEP, Intent.HRV, Intent.RESTING_HR,
                          Intent.RECOVERY, Intent.TRAINING, Intent.TREND, Intent.COMPARE})

# Metric names as the engine knows them.
SLEEP, HRV, RHR, STEPS, ENERGY = ("sleep_duration", "hrv_rmssd", "resting_heart_rate", "steps",
                                  "active_energy")
DEFAULT_TREND_METRICS = (SLEEP, HRV, RHR, STEPS)


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    label: str

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "label": self.label}

    @classmethod
    def from_dict(cls, data: Any) -> Period | None:
        try:
            return cls(date.fromisoformat(data["start"]), date.fromisoformat(data["end"]),
                       str(data["label"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: Intent
    metrics: tuple[str, ...] = ()
    period: Period | None = None
    other: Period | None = None  # the period compared against

    def as_meta(self) -> dict[str, Any]:
        return {"intent": self.intent.value, "metrics": list(self.metrics),
                "period": self.period.as_dict() if self.period else None,
                "other": self.other.as_dict() if self.other else None}

    @classmethod
    def from_meta(cls, meta: Any) -> Parsed | None:
        if not isinstance(meta, dict):
            return None
        try:
            intent = Intent(str(meta.get("intent")))
        except ValueError:
            return None
        metrics = tuple(m for m in meta.get("metrics") or () if m in
                        (SLEEP, HRV, RHR, STEPS, ENERGY))
        period = Period.from_dict(meta["period"]) if meta.get("period") else None
        other = Period.from_dict(meta["other"]) if meta.get("other") else None
        return cls(intent, metrics, period, other)


def normalise(message: str) -> str:
    text = message.lower().replace("’", "'").replace("‘", "'")
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------
# Metrics and topics
# --------------------------------------------------------------------------------------------

_METRIC_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (HRV, re.compile(r"\bhrv\b|heart[- ]rate variability|\bvariability\b|\brmssd\b")),
    (RHR, re.compile(r"\brhr\b|resting (?:heart[- ]?rate|hr|pulse)|\bpulse\b|"
                     r"\bheart ?rate\b(?! variability)")),
    (SLEEP, re.compile(r"\bslept\b|\bsleep\w*|\bnights?\b|\bbed\b|\brest(?:ed)? well\b")),
    (STEPS, re.compile(r"\bsteps?\b|\bwalk\w*")),
    (ENERGY, re.compile(r"\bcalorie\w*|\bactive energy\b|\bkcal\b|\bactivity\b|\bactive\b")),
)

_GREETING = re.compile(r"^(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening)|yo|greetings|"
                       r"howdy)\b[\s!.,?]*(?:neuros)?[\s!.,?]*$")
_STATUS = re.compile(r"\bare you (?:there|up|working|online|operational|alive|awake|ok|"
                     r"running|available)\b|\b(?:system )?status\b|\bhealth ?check\b|"
                     r"\bping\b|\bis (?:neuros|this|the service) (?:up|working|operational)\b")
_HELP = re.compile(r"\bwhat can you (?:do|answer|tell)\b|\bhelp\b|\bwhat do you know\b|"
                   r"\bhow do i use\b|\bwhat (?:kind of )?questions\b")
_READINESS = re.compile(r"\bready\b|\breadiness\b|\bhow (?:am i|do i look|recovered am i)\b|"
                        r"\bhow'?s my body\b|\bmy (?:day|body) (?:today|look)")
_RECOVERY = re.compile(r"\bshould i (?:train|work ?out|run|rest|exercise|go|ride|lift|push|"
                       r"take|skip|do)\b|\bwhat should i do\b|\bwork ?out\b|\brest day\b|"
                       r"\brecover\w*|\btrain (?:hard|today)\b|\bintensity\b|\bcan i (?:train|"
                       r"run|work ?out|push)\b|\bcoach\b|\badvice\b|\brecommend\w*")
_TRAINING = re.compile(r"\b(?:training|workout) load\b|\bload\b|\bacute\b|\bchronic\b|"
                       r"\bacwr\b|\bover ?train\w*|\bhow (?:much|hard) (?:have|did) i train\w*|"
                       r"\bhow active\b")
_TREND = re.compile(r"\btrend\w*|\blately\b|\brecently\b|\bover time\b|\bprogress\b|"
                    r"\bimprov\w*|\bgetting (?:better|worse)\b|\bstreak\w*|\bhistory\b")
_COMPARE = re.compile(r"\bvs\.?\b|\bversus\b|\bcompar\w*|\bthan\b|\bagainst\b|\bdifference\b|"
                      r"\b(?:better|worse|more|less) (?:than|compared)\b")

# --------------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------------

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                 "twelve": 12, "fourteen": 14, "thirty": 30, "sixty": 60, "ninety": 90,
                 "couple of": 2, "few": 3}
_UNIT_DAYS = {"day": 1, "night": 1, "week": 7, "month": 30}

_WEEKDAY = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tue|tues|wed|thu|" \
           r"thur|thurs|fri|sat|sun)"
_MONTH = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|" \
         r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_ISO = r"(\d{4}-\d{2}-\d{2})"
_N = r"(\d{1,3}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"

_PERIOD_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("range_iso", rf"\b(?:from|between) {_ISO} (?:to|and|until|-) {_ISO}\b"),
        ("since_iso", rf"\bsince {_ISO}\b"),
        ("since_weekday", rf"\bsince {_WEEKDAY}\b"),
        ("last_n", rf"\b(?:last|past|previous|over the last|over the past) {_N} "
                   r"(day|night|week|month)s?\b"),
        ("n_ago", rf"\b{_N} (day|week)s? ago\b"),
        ("this_week", r"\bthis week\b|\bso far this week\b"),
        ("last_week", r"\blast week\b|\bprevious week\b|\bthe week before\b|\bprior week\b"),
        ("this_month", r"\bthis month\b"),
        ("last_month", r"\blast month\b|\bprevious month\b|\bthe month before\b"),
        ("last_night", r"\blast night\b|\btonight\b|\bthis morning\b"),
        ("today", r"\btoday\b|\bright now\b|\bnow\b"),
        ("yesterday", r"\byesterday\b"),
        ("day_before", r"\bthe day before yesterday\b"),
        ("iso", rf"\b{_ISO}\b"),
        ("month_day", rf"\b{_MONTH} (\d{{1,2}})(?:st|nd|rd|th)?\b"),
        ("day_month", rf"\b(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?{_MONTH}\b"),
        ("weekday", rf"\b(?:on |last )?{_WEEKDAY}\b"),
        ("lately", r"\blately\b|\brecently\b|\bthese days\b"),
    )
)


def _weekday_index(word: str) -> int:
    for i, name in enumerate(_WEEKDAYS):
        if name.startswith(word[:3]):
            return i
    raise ValueError(word)


def _month_index(word: str) -> int:
    for i, name in enumerate(_MONTHS):
        if name.startswith(word[:3]):
            return i + 1
    raise ValueError(word)


def _previous_weekday(today: date, weekday: int) -> date:
    """The latest such weekday strictly before today ("since Monday" said on a Monday means
    the Monday a week ago)."""
    back = (today.weekday() - weekday) % 7 or 7
    return today - timedelta(days=back)


def _date_in_past(today: date, month: int, day: int) -> date | None:
    try:
        candidate = date(today.year, month, day)
    except ValueError:
        return None
    if candidate > today:
        try:
            candidate = date(today.year - 1, month, day)
        except ValueError:
            return None
    return candidate


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def _period(name: str, groups: tuple[str, ...], today: date, text: str) -> Period | None:
    if name == "range_iso":
        start, end = date.fromisoformat(groups[0]), date.fromisoformat(groups[1])
        start, end = min(start, end), max(start, end)
        return Period(start, end, f"from {start.isoformat()} to {end.isoformat()}")
    if name == "since_iso":
        start = date.fromisoformat(groups[0])
        return Period(start, today, f"since {start.isoformat()}")
    if name == "since_weekday":
        start = _previous_weekday(today, _weekday_index(groups[0]))
        return Period(start, today, f"since {_WEEKDAYS[start.weekday()].title()}")
    if name == "last_n":
        n = _number(groups[0]) * _UNIT_DAYS[groups[1]]
        if n < 1:
            return None
        # Labels count days, the unit the evidence window reports.
        label = "today" if n == 1 else f"the last {n} days"
        return Period(today - timedelta(days=n - 1), today, label)
    if name == "n_ago":
        day = today - timedelta(days=_number(groups[0]) * _UNIT_DAYS[groups[1]])
        return Period(day, day, f"on {day.isoformat()}")
    if name == "this_week":
        return Period(today - timedelta(days=today.weekday()), today, "this week")
    if name == "last_week":
        monday = today - timedelta(days=today.weekday() + 7)
        return Period(monday, monday + timedelta(days=6), "last week")
    if name == "this_month":
        return Period(today.replace(day=1), today, "this month")
    if name == "last_month":
        end = today.replace(day=1) - timedelta(days=1)
        return Period(end.replace(day=1), end, "last month")
    if name == "last_night":
        return Period(today, today, "last night")
    if name == "today":
        return Period(today, today, "today")
    if name == "yesterday":
        day = today - timedelta(days=1)
        return Period(day, day, "yesterday")
    if name == "day_before":
        day = today - timedelta(days=2)
        return Period(day, day, f"on {day.isoformat()}")
    if name == "iso":
        day = date.fromisoformat(groups[0])
        return Period(day, day, f"on {day.isoformat()}")
    if name in ("month_day", "day_month"):
        month_word, day_text = (groups[0], groups[1]) if name == "month_day" else (groups[1],
                                                                                   groups[0])
        found = _date_in_past(today, _month_index(month_word), int(day_text))
        return Period(found, found, f"on {found.isoformat()}") if found else None
    if name == "weekday":
        day = _previous_weekday(today, _weekday_index(groups[0]))
        if today.weekday() == _weekday_index(groups[0]) and "last" not in text:
            day = today
        return Period(day, day, f"on {_WEEKDAYS[day.weekday()].title()}")
    if name == "lately":
        return Period(today - timedelta(days=6), today, "the last 7 days")
    return None


def find_periods(text: str, today: date) -> list[tuple[int, Period]]:
    """Periods in order of appearance, each as (offset in text, period); overlaps skipped."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, Period]] = []
    for name, pattern in _PERIOD_PATTERNS:
        for match in pattern.finditer(text):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            try:
                result = _period(name, match.groups(), today, text)
            except (ValueError, KeyError):
                result = None
            if result is None:
                continue
            taken.append(span)
            if result.days > MAX_PERIOD_DAYS:
                result = Period(result.end - timedelta(days=MAX_PERIOD_DAYS - 1), result.end,
                                result.label)
            found.append((span[0], result))
    found.sort(key=lambda item: item[0])
    return found


def _metrics(text: str) -> tuple[str, ...]:
    found = [(m.start(), metric) for metric, pattern in _METRIC_WORDS
             for m in [pattern.search(text)] if m]
    return tuple(metric for _, metric in sorted(found))


def _same_length_before(period: Period) -> Period:
    end = period.start - timedelta(days=1)
    return Period(end - timedelta(days=period.days - 1), end, "the period before")


def _same_length_now(period: Period, today: date) -> Period:
    if period.label == "last week":
        return Period(today - timedelta(days=today.weekday()), today, "this week")
    if period.label == "last month":
        return Period(today.replace(day=1), today, "this month")
    return Period(today - timedelta(days=period.days - 1), today,
                  f"the last {period.days} days" if period.days > 1 else "today")


def parse(message: str, today: date, previous: Parsed | None = None) -> Parsed:
    """The intent of one message; ``previous`` (the last turn) fills in what a follow-up omits.

    Example: after "how did I sleep last week?", "and my HRV?" is HRV over last week.
    """
    text = normalise(message)
    metrics = _metrics(text)
    periods = find_periods(text, today)
    compare = bool(_COMPARE.search(text))

    follow_up = (previous is not None and previous.intent in DATA_INTENTS
                 and bool(re.match(r"^(?:and|what about|how about|same for|then)\b", text)))
    if follow_up and previous is not None:
        metrics = metrics or previous.metrics
        if previous.period is not None and re.search(r"\b(?:before|prior|earlier)\b", text):
            # "and the week before?": the same length just before the period last asked about.
            before = _same_length_before(previous.period)
            label = ("the week before" if before.days == 7 else
                     f"the {before.days} days before" if before.days > 1 else
                     f"on {before.start.isoformat()}")
            periods = [(0, Period(before.start, before.end, label))]

    if _GREETING.match(text):
        return Parsed(Intent.GREETING)
    if _STATUS.search(text) and not metrics:
        return Parsed(Intent.STATUS)

    past = [p for _, p in periods if p.label not in ("today", "last night")]
    if compare and periods and (metrics or len(periods) >= 2 or previous is not None):
        metrics = metrics or (previous.metrics if previous and previous.metrics else
                              DEFAULT_TREND_METRICS)
        if len(periods) >= 2:
            first, second = periods[0][1], periods[1][1]
        else:
            offset, only = periods[0]
            # "better than last week": the period named is the reference, now is compared.
            if re.search(r"\b(?:than|to|with|vs\.?|versus|against)\s+(?:\w+\s+)?$",
                         text[:offset]):
                first, second = _same_length_now(only, today), only
            else:
                first, second = only, _same_length_before(only)
        return Parsed(Intent.COMPARE, metrics, first, second)

    if _TRAINING.search(text) and not past:
        return Parsed(Intent.TRAINING, (ENERGY,))
    if _RECOVERY.search(text) and not past:
        return Parsed(Intent.RECOVERY)
    if _READINESS.search(text) and not past and not (metrics and not
                                                     re.search(r"\bready|readiness", text)):
        return Parsed(Intent.READINESS)

    if past or (_TREND.search(text) and (metrics or periods)):
        period = past[0] if past else (periods[0][1] if periods else None)
        if period is None or period.label in ("today", "last night"):
            period = Period(today - timedelta(days=6), today, "the last 7 days")
        return Parsed(Intent.TREND, metrics or DEFAULT_TREND_METRICS, period)
    if _TREND.search(text):
        return Parsed(Intent.TREND, metrics or DEFAULT_TREND_METRICS,
                      Period(today - timedelta(days=13), today, "the last 14 days"))

    if metrics:
        topic = metrics[0]
        if topic in (STEPS, ENERGY):
            period = periods[0][1] if periods else Period(today - timedelta(days=6), today,
                                                          "the last 7 days")
            return Parsed(Intent.TREND, metrics, period)
        if previous is not None and previous.intent in (Intent.TREND, Intent.COMPARE) \
                and not periods and re.match(r"^(?:and|what about|how about|same for)\b", text):
            return replace(previous, metrics=metrics)
        intent = {SLEEP: Intent.SLEEP, HRV: Intent.HRV, RHR: Intent.RESTING_HR}[topic]
        return Parsed(intent, metrics)

    if periods and previous is not None and previous.intent in DATA_INTENTS:
        # "and last week?" after a question about sleep.
        base_metrics = previous.metrics or DEFAULT_TREND_METRICS
        if compare or previous.intent is Intent.COMPARE:
            period = periods[0][1]
            return Parsed(Intent.COMPARE, base_metrics, period, _same_length_before(period))
        period = periods[0][1]
        if period.label in ("today", "last night") and previous.intent is not Intent.TREND:
            return replace(previous, period=None)
        return Parsed(Intent.TREND, base_metrics, period)
    if _HELP.search(text):
        return Parsed(Intent.HELP)
    return Parsed(Intent.UNKNOWN)
