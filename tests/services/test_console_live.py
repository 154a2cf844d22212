"""The console's arithmetic on what services export: Prometheus text read back, quantiles from
cumulative buckets as Prometheus computes them, counters that restart, webhook outcomes."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from auren.observability import Scrape, histogram_quantile
from auren.services.console.live import _increase, outcome


def test_a_scrape_reads_counters_and_histograms_back() -> None:
    registry = CollectorRegistry()
    requests = Counter("hooks", "h", ["provider", "status"], registry=registry)
    latency = Histogram("lat_seconds", "l", ["provider"], buckets=(0.01, 0.1, 1.0),
                        registry=registry)
    requests.labels("oura", "202").inc(3)
    requests.labels("oura", "401").inc()
    requests.labels("whoop", "202").inc(2)
    for value in (0.005, 0.05, 0.05, 0.5):
        latency.labels("oura").observe(value)
    latency.labels("whoop").observe(2.0)
    scrape = Scrape(generate_latest(registry).decode())
    assert scrape.value("hooks_total") == 6
    assert scrape.value("hooks_total", status="202") == 5
    assert scrape.value("missing_total") is None
    assert scrape.by("hooks_total", "provider", "status") == {
        ("oura", "202"): 3, ("oura", "401"): 1, ("whoop", "202"): 2}
    assert scrape.buckets("lat_seconds") == {0.01: 1, 0.1: 3, 1.0: 4, math.inf: 5}
    assert scrape.buckets("lat_seconds", provider="whoop") == {0.01: 0, 0.1: 0, 1.0: 0,
                                                              math.inf: 1}


def test_quantiles_interpolate_within_the_bucket_as_prometheus_does() -> None:
    buckets = {0.01: 1.0, 0.1: 3.0, 1.0: 4.0, math.inf: 4.0}
    # Rank 2 of 4 lies halfway through (0.01, 0.1]: 0.01 + 0.09 * (2 - 1) / (3 - 1).
    assert math.isclose(histogram_quantile(0.5, buckets) or 0, 0.055)
    assert histogram_quantile(0.25, buckets) == 0.01
    assert histogram_quantile(1.0, buckets) == 1.0
    assert histogram_quantile(0.99, {0.1: 0.0, math.inf: 2.0}) == 0.1  # in +Inf: its bound
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


def test_a_counter_that_went_down_starts_from_zero() -> None:
    assert _increase({"a": 5.0, "b": 1.0}, {"a": 7.0, "b": 1.0, "c": 2.0}) == {
        "a": 2.0, "b": 0.0, "c": 2.0}
    assert _increase({"a": 5.0}, {"a": 3.0}) == {"a": 3.0}  # restarted: all of it is new


def test_webhook_outcomes() -> None:
    assert outcome("oura", "202") == "2xx" and outcome("fitbit", "204") == "2xx"
    assert outcome("oura", "200") == "duplicate" and outcome("withings", "200") == "2xx"
    assert outcome("oura", "401") == "401 unauthorized"
    assert outcome("oura", "422") == "422 invalid" and outcome("oura", "418") == \
        "418 client error"
    assert outcome("oura", "503") == "503" and outcome("oura", "500") == "5xx"
    assert outcome("oura", "499") == "gone"
