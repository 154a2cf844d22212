"""The SLA file: the default is the validation plan's table; mistakes are loud."""

from __future__ import annotations

import pytest

from auren.ops import sla


def test_default_table_is_the_plans() -> None:
    rows = {r.name: r for r in sla.load(None)}
    assert (rows["chat"].latency_ms, rows["chat"].error_rate) == (2000, 0.001)
    assert (rows["health"].latency_ms, rows["health"].error_rate) == (100, 0.0001)
    assert (rows["webhooks"].latency_ms, rows["webhooks"].error_rate) == (500, 0.01)
    assert rows["webhooks"].workload == "webhooks" and rows["chat"].workload == "chat"


@pytest.mark.parametrize("text", [
    "sla: []",
    "nope: 1",
    "sla:\n  - {name: x, service: bridge, method: GET, path: /health, latency_ms: 1, p95: 3}",
    "sla:\n  - {name: x, service: mars, method: GET, path: /health, latency_ms: 1}",
    "sla:\n  - {name: x, service: bridge, method: GET, path: /health, latency_ms: 1, "
    "percentile: 97}",
    "sla:\n  - {name: x, service: bridge, method: GET, path: /health, latency_ms: fast}",
    "[unclosed",
])
def test_malformed_files_are_rejected(text: str) -> None:
    with pytest.raises(sla.SLAConfigError):
        sla.parse(text)


def test_verdict_uses_the_rows_percentile_and_error_rate() -> None:
    row = sla.parse("sla:\n  - {name: x, service: bridge, method: GET, path: /h, "
                    "latency_ms: 100, percentile: 99, error_rate: 0.01}")[0]
    assert sla.verdict(row, {"p99": 99.0}, 0.009, False).status == "pass"
    assert sla.verdict(row, {"p99": 101.0}, 0.0, False).status == "fail"
    assert sla.verdict(row, {"p99": 1.0}, 0.02, False).status == "fail"
    assert sla.verdict(row, {"p99": 1.0}, 0.0, True).status == "invalid"
    assert sla.verdict(row, {"p99": 50.0}, 0.0, False).headroom == pytest.approx(0.5)
