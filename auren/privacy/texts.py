"""The consent texts a person is shown before an account is connected, versioned.

A text is never edited once published: a change is a new version, and every consent records
the version that was shown, so what a person agreed to can always be read again. The versions
are documented in ``docs/privacy.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConsentText:
    version: str
    purpose: str
    text: str

    def as_dict(self, provider: str | None = None) -> dict[str, Any]:
        body = self.text.format(provider=provider or "the provider")
        return {"version": self.version, "purpose": self.purpose, "text": body}


# The purpose a connection's data is processed for (one purpose, named in every consent).
PURPOSE = "personal_insights"

TEXTS: dict[str, ConsentText] = {
    "2026-12-01": ConsentText(
        "2026-12-01", PURPOSE,
        "AUREN will receive and store the measurements {provider} holds about you (sleep, "
        "heart rate and heart rate variability, activity, temperature, blood oxygen, body "
        "measurements) from the moment you connect, and the last days of history, to show you "
        "your trends and to answer your questions in NEUROS. They are not sold or shared with "
        "anyone else. You can see every consent you gave, withdraw it at any time (AUREN then "
        "stops receiving {provider}'s data), download everything AUREN holds about you, and "
        "have all of it erased."),
}
CURRENT_VERSION = "2026-12-01"


def current() -> ConsentText:
    return TEXTS[CURRENT_VERSION]
