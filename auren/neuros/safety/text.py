"""Canonical text for the emergency screen: what people type, brought to one spelling.

``canonical(message)`` lower-cases and strips accents, keeps words and clause punctuation as
tokens, expands contractions and chat shorthand ("im", "dont", "wanna", "kms"), and corrects
misspelt words towards the screen's vocabulary ("sucidal" -> "suicidal", "chset pian" ->
"chest pain"). The rules then read one space-separated string of tokens.

A token is corrected only when it is *not* an English word: "kil" becomes "kill", but "will"
and "skill" stay what they are, because a real word is what its writer meant more often than a
typo of a rarer one. English words come from pyspellchecker's word list (loaded once per
process, about 0.4 s; call :func:`warm_up` at start-up); only the words one edit away from the
vocabulary are kept, a few thousand. Edit distance is optimal string alignment (a swap of two
neighbouring letters is one edit, as in "pian"), computed by rapidfuzz.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable

from rapidfuzz import process
from rapidfuzz.distance import OSA, Indel

# Words and the clause punctuation the rules and the negation scope read.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[.,;:!?]")
# "pleeease", "diiie": three or more of a letter are read as two.
_REPEATS = re.compile(r"([a-z])\1{2,}")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u02bc": "'"})

# Contractions and chat shorthand: one token becomes these tokens.
SHORTHAND: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("can't", "cant", "cnt", "cann't", "caint", "carnt"), ("cannot",)),
    **dict.fromkeys(("couldn't", "couldnt"), ("could", "not")),
    **dict.fromkeys(("don't", "dont", "dnt", "do'nt"), ("do", "not")),
    **dict.fromkeys(("doesn't", "doesnt"), ("does", "not")),
    **dict.fromkeys(("didn't", "didnt"), ("did", "not")),
    **dict.fromkeys(("won't", "wont"), ("will", "not")),
    **dict.fromkeys(("wouldn't", "wouldnt"), ("would", "not")),
    **dict.fromkeys(("shouldn't", "shouldnt"), ("should", "not")),
    **dict.fromkeys(("isn't", "isnt", "ain't", "aint"), ("is", "not")),
    **dict.fromkeys(("aren't", "arent"), ("are", "not")),
    **dict.fromkeys(("wasn't", "wasnt"), ("was", "not")),
    **dict.fromkeys(("weren't", "werent"), ("were", "not")),
    **dict.fromkeys(("haven't", "havent"), ("have", "not")),
    **dict.fromkeys(("hasn't", "hasnt"), ("has", "not")),
    **dict.fromkeys(("hadn't", "hadnt"), ("had", "not")),
    **dict.fromkeys(("i'm", "im", "i'am"), ("i", "am")),
    **dict.fromkeys(("i've", "ive"), ("i", "have")),
    "i'd": ("i", "would"), "i'll": ("i", "will"),
    **dict.fromkeys(("you're", "youre"), ("you", "are")),
    "they're": ("they", "are"), "we're": ("we", "are"),
    **dict.fromkeys(("he's", "hes"), ("he", "is")),
    **dict.fromkeys(("she's", "shes"), ("she", "is")),
    "it's": ("it", "is"), "let's": ("let", "us"),
    **dict.fromkeys(("that's", "thats"), ("that", "is")),
    **dict.fromkeys(("what's", "whats"), ("what", "is")),
    **dict.fromkeys(("there's", "theres"), ("there", "is")),
    "wanna": ("want", "to"), "gonna": ("going", "to"), "gotta": ("got", "to"),
    "tryna": ("trying", "to"), "u": ("you",), "ur": ("your",), "ya": ("you",),
    **dict.fromkeys(("pls", "plz", "plss", "pleas"), ("please",)),
    "rn": ("right", "now"), "idk": ("i", "do", "not", "know"), "ppl": ("people",),
    "bf": ("boyfriend",), "gf": ("girlfriend",),
    # Self-harm and suicide shorthand as people write it.
    "kms": ("kill", "myself"), "kys": ("kill", "yourself"),
    **dict.fromkeys(("unalive", "unaliving"), ("kill",)),
    **dict.fromkeys(("od", "o.d"), ("overdose",)),
    **dict.fromkeys(("od'd", "oded", "od'ed", "odd'd"), ("overdosed",)),
    **dict.fromkeys(("od'ing", "oding"), ("overdosing",)),
    "selfharm": ("self", "harm"), "selfharming": ("self", "harming"),
    "selfharmed": ("self", "harmed"), "heartattack": ("heart", "attack"),
    "chestpain": ("chest", "pain"),
}
# "my self", "her self": one word, as the rules spell it.
_SELVES = {"my": "myself", "him": "himself", "her": "herself", "them": "themselves",
           "your": "yourself"}
_PRONOUN_IS = frozenset({"he", "she", "it", "that", "what", "there", "who", "where", "here"})

# Words of the wearable domain that no English list holds; never corrected.
DOMAIN_WORDS = frozenset({
    "hrv", "rhr", "rmssd", "sdnn", "spo2", "vo2", "vo2max", "hr", "bpm", "hiit", "oura",
    "whoop", "garmin", "fitbit", "polar", "withings", "neuros", "auren", "strava", "zwift",
    "peloton", "ecg", "ekg", "afib", "kcal", "pr", "prs", "km", "mi", "rpe", "ftp", "lol",
    "lmao", "haha", "tbh", "imo", "omg", "btw", "fyi", "doms", "crossfit", "wod",
})


def _ascii_folded(text: str) -> str:
    text = text.translate(_QUOTES).casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return text


def raw_tokens(message: str) -> list[str]:
    """Lower-case ASCII tokens with contractions and shorthand expanded (no spelling fixes)."""
    found = _TOKEN.findall(_REPEATS.sub(r"\1\1", _ascii_folded(message)))
    out: list[str] = []
    for word in found:
        expanded = SHORTHAND.get(word)
        if expanded is not None:
            out.extend(expanded)
            continue
        if word.endswith("'s"):
            # "he's" is "he is"; "dad's" (possessive or "is") is read as "dad".
            stem = word[:-2]
            out.extend((stem, "is") if stem in _PRONOUN_IS else (stem,))
            continue
        if "'" in word:
            word = word.replace("'", "")
        if out and ((word == "self" and out[-1] in _SELVES)
                    or (word == "selves" and out[-1] == "them")):
            out[-1] = _SELVES[out[-1]]
            continue
        if word == "not" and out and out[-1] == "can":
            out[-1] = "cannot"
            continue
        out.append(word)
    return out


class Vocabulary:
    """The words the rules are written in, and how a misspelt token is brought to one of them.

    ``terms``: the rules' words. ``known``: English words one edit away from a term (these are
    never corrected). A token is corrected to the closest term at one edit when it is neither,
    is at least three letters long, and (three or four letters) starts with the term's letter:
    short words have many neighbours, and a first letter is rarely the one mistyped.
    """

    def __init__(self, terms: Iterable[str], known: Iterable[str]) -> None:
        self.terms: tuple[str, ...] = tuple(sorted(set(terms)))
        self._term_set = frozenset(self.terms)
        self._known = frozenset(known) | DOMAIN_WORDS
        # Terms by each string one deletion from them (and by themselves): a token one edit
        # from a term shares one of its own one-deletion strings with it, so its candidates
        # are a few dictionary lookups away, whatever the size of the vocabulary.
        self._by_deletion: dict[str, list[str]] = {}
        for term in self.terms:
            for key in _deletions(term):
                self._by_deletion.setdefault(key, []).append(term)
        self.correct = functools.lru_cache(maxsize=8192)(self._correct)

    def _correct(self, token: str) -> str:
        if (len(token) < 3 or token in self._term_set or token in self._known
                or not token.isalpha()):
            return token
        near = {t for key in _deletions(token) for t in self._by_deletion.get(key, ())}
        if not near:
            return token
        candidates = process.extract(token, near, scorer=OSA.distance, score_cutoff=1,
                                     limit=None)
        if not candidates:
            return token
        best = min(candidates, key=lambda c: _likelihood(token, c[0]))[0]
        if len(token) <= 4 and best[0] != token[0]:
            return token
        return best

    def tokens(self, message: str) -> list[str]:
        return [self.correct(t) for t in raw_tokens(message)]


_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR_KEYS = {
    c: {row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)}
    | {other[j] for other in _ROWS if other is not row for j in (i - 1, i, i + 1)
       if 0 <= j < len(other) and abs(_ROWS.index(other) - _ROWS.index(row)) == 1}
    for row in _ROWS for i, c in enumerate(row)
}


def _slip(token: str, term: str) -> int:
    """0 for the slips fingers make most (two neighbouring letters swapped, a neighbouring
    key hit instead, a doubled letter typed once or a letter typed twice), 1 otherwise."""
    if len(token) == len(term):
        diff = [i for i, (a, b) in enumerate(zip(token, term, strict=True)) if a != b]
        if len(diff) == 2:
            return 0  # a swap (the only two-position change one OSA edit makes)
        return 0 if len(diff) == 1 and token[diff[0]] in _NEAR_KEYS.get(term[diff[0]], ()) \
            else 1
    longer, shorter = (token, term) if len(token) > len(term) else (term, token)
    i = next((k for k, (a, b) in enumerate(zip(longer, shorter, strict=False)) if a != b),
             len(shorter))
    extra = longer[i]
    return 0 if (i > 0 and longer[i - 1] == extra) or (i + 1 < len(longer)
                                                       and longer[i + 1] == extra) else 1


def _likelihood(token: str, term: str) -> tuple[int, int, int, int, str]:
    """Sort key of the terms one edit from ``token``, likeliest slip first (see ``_slip``:
    "pian" is "pain", "mant" is "many", "pils" is "pills"), then a letter dropped or added over
    one replaced, then the longer shared beginning, then the term itself, so that ties are
    decided the same way every time."""
    return (OSA.distance(token, term), _slip(token, term), Indel.distance(token, term),
            -_common_prefix(token, term), term)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _deletions(word: str) -> set[str]:
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def one_edit(word: str) -> set[str]:
    """Every string one edit (OSA: delete, swap neighbours, replace, insert) from ``word``."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _ALPHABET}
    inserts = {a + c + b for a, b in splits for c in _ALPHABET}
    return deletes | swaps | replaces | inserts


def english_near(terms: Iterable[str]) -> set[str]:
    """English words (pyspellchecker's list) one edit away from any of ``terms``."""
    from spellchecker import SpellChecker  # the word list is only read here, once

    listed = SpellChecker(language="en", distance=1).word_frequency.dictionary
    # Messages are read without accents ("cafe"), so the list is too.
    words = set(listed) | {_ascii_folded(w) for w in listed if not w.isascii()}
    near: set[str] = set()
    for term in terms:
        near.update(w for w in one_edit(term) if w in words)
    return near


_lock = threading.Lock()
_vocabulary: Vocabulary | None = None
_terms: tuple[str, ...] = ()


def configure(terms: Iterable[str]) -> None:
    """Declare the rules' vocabulary (the rules module does, once, at import)."""
    global _terms
    _terms = tuple(sorted(set(terms)))


def vocabulary() -> Vocabulary:
    """The process's vocabulary, built on first use (reads the English word list once)."""
    global _vocabulary
    if _vocabulary is None:
        with _lock:
            if _vocabulary is None:
                _vocabulary = Vocabulary(_terms, english_near(_terms))
    return _vocabulary


def warm_up(*, background: bool = False) -> None:
    """Build the vocabulary now rather than in the first chat that needs it. ``background``:
    on a daemon thread, so that a starting service is ready at once (a chat arriving before
    it is done waits for it, as it would have built it itself)."""
    if _vocabulary is not None:
        return
    if background:
        threading.Thread(target=vocabulary, name="safety-vocabulary", daemon=True).start()
    else:
        vocabulary()


def canonical(message: str) -> str:
    """The message as the rules read it: corrected tokens joined by single spaces."""
    return " ".join(vocabulary().tokens(message))
