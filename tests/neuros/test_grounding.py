"""Output handling: plain text only, and only numbers the evidence supports."""

from __future__ import annotations

from datetime import date

from auren.neuros.engine import Evidence, Window
from auren.neuros.grounding import sanitize, ungrounded

W7 = Window(date(2026, 3, 6), date(2026, 3, 12))
EVIDENCE = [Evidence("hrv_rmssd", "7-day", W7, 52.0, "ms", 6, low=48.0, high=57.0),
            Evidence("sleep_duration", "nightly", Window(date(2026, 3, 12), date(2026, 3, 12)),
                     7.2, "h", 1, 1),
            Evidence("steps", "daily mean", W7, 12345.0, "steps", 7)]


def test_grounded_text_passes() -> None:
    text = ("Your 7-day HRV is 52 ms (6 nights), within 48-57 ms; you slept 7.2 h on "
            "2026-03-12 and walked 12,345 steps a day. SpO2 and VO2 are names.")
    assert ungrounded(text, EVIDENCE) == []


def test_invented_numbers_and_dates_are_caught() -> None:
    assert ungrounded("Your HRV is 53 ms.", EVIDENCE) == ["53"]
    assert ungrounded("You slept 7.25 h", EVIDENCE) == ["7.25"]
    assert ungrounded("You slept 8 h", EVIDENCE) == ["8"]
    assert ungrounded("On 2026-03-01 you slept 7.2 h", EVIDENCE) == ["2026-03-01"]
    assert ungrounded("Call 911", EVIDENCE) == ["911"]


def test_sanitize_removes_links_images_html_and_markup() -> None:
    raw = ("## Result\n**Your HRV** is ![x](https://evil.example/?q=52) 52 ms. "
           "<script>fetch('https://evil.example')</script>See [this](https://evil.example/a) "
           "or www.evil.example/page <img src=x onerror=alert(1)> `code`")
    text = sanitize(raw)
    for bad in ("http", "www.", "<", ">", "![", "](", "**", "`", "#", "script", "onerror"):
        assert bad not in text, (bad, text)
    assert "Your HRV is 52 ms." in text and "See this or" in text
    assert len(sanitize("word. " * 1000)) <= 1200
