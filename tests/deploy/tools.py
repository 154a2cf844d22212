"""System programs the deploy tests run (Debian packages, see scripts/install-system)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs"
PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))


def rules() -> dict[str, dict[str, Any]]:
    """Every shipped recording and alerting rule, by its record or alert name."""
    found: dict[str, dict[str, Any]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[rule.get("alert") or rule["record"]] = rule
    return found


def system_tool(name: str) -> str:
    """The program's path; missing, a failure in CI (which installs it) and a skip elsewhere."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/install-system installs it")
        pytest.skip(f"{name} is not installed (scripts/install-system)")
    return path


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub's rules) gives the document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


# PromQL words that are not metric names (keywords, aggregation modifiers, set operators).
_PROMQL_WORDS = frozenset({"by", "without", "and", "or", "unless", "on", "ignoring",
                           "group_left", "group_right", "bool", "offset", "inf", "nan"})


def promql_metric_names(expr: str) -> set[str]:
    """The metric (and recorded series) names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # label values and strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Every sample name a /metrics document can carry, from its # TYPE lines (a labelled
    family without children yet still declares its type)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                 "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",),
                "info": ("_info",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gcount",
                                                                         "_gsum")}
    names = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        family, kind = match.group(1), match.group(2)
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
        names.add(family)
    return names
