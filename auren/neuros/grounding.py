"""Output handling for anything NEUROS did not write itself: plain text, grounded numbers.

``sanitize`` makes a model's text plain: no HTML, no markdown links or images, no URLs (an image
URL in a rendered reply is an exfiltration channel). ``ungrounded`` lists the numbers and
dates in a text that no evidence item supports; a reply with any is rejected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from auren.neuros.engine import Evidence

MAX_REPLY_CHARS = 1200

_DATE = re.compile(r"(?<![\w-])\d{4}-\d{2}-\d{2}(?![\w-])")
# A number not glued to a word ("SpO2", "VO2" are names, not numbers); "1,234" is one number.
_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_SCRIPT = re.compile(r"<\s*(script|style)\b.*?<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^<>]{0,500}>")
_IMAGE = re.compile(r"!\[[^\]]{0,500}\]\([^)]{0,2000}\)")
_LINK = re.compile(r"\[([^\]]{0,500})\]\([^)]{0,2000}\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_URL = re.compile(r"\b(?:https?|ftp|data|javascript|file|mailto):\S*|\bwww\.\S+",
                  re.IGNORECASE)
_MARKUP = re.compile(r"[*`]+|^\s{0,3}#{1,6}\s*|^\s*>\s?", re.MULTILINE)


def sanitize(text: str) -> str:
    """Plain text: markup, links, images and URLs removed, whitespace collapsed, length capped."""
    text = _SCRIPT.sub(" ", text)
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _MARKUP.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    if len(text) > MAX_REPLY_CHARS:
        cut = text[:MAX_REPLY_CHARS]
        text = cut[: cut.rfind(". ") + 1] or cut
    return text


def numbers_in(text: str) -> list[str]:
    """Numbers as written, dates excluded."""
    return _NUMBER.findall(_DATE.sub(" ", text))


def dates_in(text: str) -> list[str]:
    return _DATE.findall(text)


def allowed_numbers(evidence: Iterable[Evidence]) -> set[float]:
    return {n for item in evidence for n in item.numbers()}


def allowed_dates(evidence: Iterable[Evidence]) -> set[str]:
    return {d.isoformat() for item in evidence for d in (item.window.start, item.window.end)}


def ungrounded(text: str, evidence: Iterable[Evidence]) -> list[str]:
    """Numbers and dates in ``text`` that are not in ``evidence`` exactly as values go."""
    items = list(evidence)
    numbers = allowed_numbers(items)
    dates = allowed_dates(items)
    bad = [d for d in dates_in(text) if d not in dates]
    for raw in numbers_in(text):
        value = float(raw.replace(",", ""))
        if not any(math.isclose(value, allowed, rel_tol=0, abs_tol=1e-9) for allowed in numbers):
            bad.append(raw)
    return bad
