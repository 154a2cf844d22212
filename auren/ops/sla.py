"""SLA thresholds: one row per endpoint, from YAML; the default is the validation plan's table.

    sla:
      - name: chat                # a label for reports
        service: neuros           # neuros | bridge | legacy | gateway
        method: POST
        path: /chat               # the workload is chosen by path: /chat, /health, /webhooks/*
        latency_ms: 2000          # the percentile below must stay under this
        percentile: 95
        error_rate: 0.001         # non-2xx + no answer, as a fraction of requests
        rate: 20                  # open-model arrival rate of the baseline, requests/s
        duration_s: 20            # baseline length (--quick divides by QUICK_DIVISOR)

Thresholds are evaluated on the open-model latency (from the intended send time), so a
stalling server cannot pass by slowing its own load down. Unknown keys are errors (k6's lesson:
a mistyped threshold must not be silently ignored).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from auren.ops.loadgen import PERCENTILES
from auren.ops.procs import SERVICES

QUICK_DIVISOR = 4

DEFAULT_YAML = """\
# The validation plan's SLA table. Percentiles are of the open-model latency (from the
# intended send time); error_rate counts non-2xx answers and requests with no answer.
sla:
  - name: chat
    service: neuros
    method: POST
    path: /chat
    latency_ms: 2000
    percentile: 95
    error_rate: 0.001
    rate: 20
    duration_s: 20
  - name: health
    service: bridge
    method: GET
    path: /health
    latency_ms: 100
    percentile: 95
    error_rate: 0.0001
    rate: 100
    duration_s: 20
  - name: webhooks
    service: bridge
    method: POST
    path: /webhooks/auren
    latency_ms: 500
    percentile: 95
    error_rate: 0.01
    rate: 200
    duration_s: 20
"""


class SLAConfigError(ValueError):
    """The SLA file is malformed: exit code 2."""


@dataclass(frozen=True)
class SLARow:
    name: str
    service: str
    method: str
    path: str
    latency_ms: float
    percentile: float = 95.0
    error_rate: float = 0.01
    rate: float = 50.0
    duration_s: float = 20.0

    @property
    def workload(self) -> str:
        if self.path.rstrip("/").endswith("/chat"):
            return "chat"
        if "/webhooks/" in self.path:
            return "webhooks"
        return "get"

    @property
    def pkey(self) -> str:
        return f"p{self.percentile:g}"

    def describe(self) -> str:
        return (f"{self.method} {self.path} ({self.service}): p{self.percentile:g} < "
                f"{self.latency_ms:g} ms, errors < {self.error_rate:.3%}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    row: SLARow
    observed_ms: float
    error_rate: float
    invalid: bool
    invalid_reason: str = ""

    @property
    def latency_ok(self) -> bool:
        return self.observed_ms < self.row.latency_ms

    @property
    def errors_ok(self) -> bool:
        return self.error_rate < self.row.error_rate or self.error_rate == 0

    @property
    def status(self) -> str:
        if self.invalid:
            return "invalid"
        return "pass" if self.latency_ok and self.errors_ok else "fail"

    @property
    def headroom(self) -> float:
        """The smaller of the two margins, as a fraction of the limit (1 = untouched, <0 over)."""
        latency = 1 - self.observed_ms / self.row.latency_ms
        errors = 1 - self.error_rate / self.row.error_rate if self.row.error_rate else 1.0
        return min(latency, errors)

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row.as_dict(), "observed_ms": self.observed_ms,
                "error_rate": self.error_rate, "status": self.status,
                "latency_ok": self.latency_ok, "errors_ok": self.errors_ok,
                "headroom": round(self.headroom, 4), "invalid_reason": self.invalid_reason}


_FIELDS = set(SLARow.__dataclass_fields__)
_REQUIRED = {"name", "service", "method", "path", "latency_ms"}
_NUMBERS = {"latency_ms", "percentile", "error_rate", "rate", "duration_s"}


def parse(text: str) -> list[SLARow]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SLAConfigError(f"not YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sla"), list) or not data["sla"]:
        raise SLAConfigError("expected a top-level 'sla:' list with at least one row")
    rows = []
    for index, item in enumerate(data["sla"]):
        if not isinstance(item, dict):
            raise SLAConfigError(f"sla[{index}] is not a mapping")
        unknown = set(item) - _FIELDS
        missing = _REQUIRED - set(item)
        if unknown or missing:
            raise SLAConfigError(f"sla[{index}]: unknown keys {sorted(unknown)}, "
                                 f"missing keys {sorted(missing)}")
        if item["service"] not in SERVICES:
            raise SLAConfigError(f"sla[{index}]: service must be one of {', '.join(SERVICES)}")
        try:
            numbers = {k: float(item[k]) for k in _NUMBERS if k in item}
            texts = {k: str(item[k]) for k in _FIELDS - _NUMBERS if k in item}
            row = SLARow(**texts, **numbers)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise SLAConfigError(f"sla[{index}]: {exc}") from None
        if not (row.percentile in PERCENTILES and row.latency_ms > 0
                and 0 <= row.error_rate < 1 and row.rate > 0 and row.duration_s > 0):
            raise SLAConfigError(f"sla[{index}]: percentile must be one of "
                                 f"{', '.join(f'{p:g}' for p in PERCENTILES)}; latency_ms, rate "
                                 "and duration_s positive; error_rate in [0, 1)")
        rows.append(row)
    return rows


def load(path: Path | None) -> list[SLARow]:
    if path is None:
        return parse(DEFAULT_YAML)
    try:
        return parse(path.read_text())
    except OSError as exc:
        raise SLAConfigError(f"cannot read {path}: {exc.strerror}") from None


def verdict(row: SLARow, latency_ms: dict[str, float], error_rate: float, invalid: bool,
            invalid_reason: str = "") -> Verdict:
    observed = latency_ms.get(row.pkey)
    if observed is None:
        raise SLAConfigError(f"percentile {row.percentile:g} is not measured; use one of "
                             "50, 90, 95, 99, 99.9")
    return Verdict(row, observed, error_rate, invalid, invalid_reason)


def webhook_row(rows: list[SLARow]) -> SLARow:
    """The row the stress and ramp phases are judged by (the webhooks row, or a default)."""
    for row in rows:
        if row.workload == "webhooks":
            return row
    return parse(DEFAULT_YAML)[-1]
