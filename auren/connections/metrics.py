"""The fetcher's Prometheus metrics: jobs by provider and outcome, provider calls and their
latency, rate-limit waits, events fetched, and (read from the stores, see ``Fetcher``) jobs by
state, dead jobs and connections by status."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from auren.connections.base import DEAD, JOB_STATES, STATUSES
from auren.observability import LabelledChildren

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class FetcherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.jobs = Counter("auren_fetch_jobs", "Fetch job runs by provider and outcome (done, "
                            "retry, dead, blocked, cancelled)", ["provider", "outcome"],
                            registry=r)
        self.requests = Counter("auren_fetch_requests", "Provider API calls by provider and "
                                "result (HTTP status, timeout, error)", ["provider", "result"],
                                registry=r)
        self.latency = Histogram("auren_fetch_latency_seconds", "Provider API call latency",
                                 ["provider"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rate_limit_waits = Counter("auren_fetch_rate_limit_waits", "Calls held back by a "
                                        "rate limit, by provider and source (auren: its own "
                                        "count of the documented limit; provider: a 429)",
                                        ["provider", "source"], registry=r)
        self.rate_limit_wait_seconds = Counter("auren_fetch_rate_limit_wait_seconds",
                                               "Seconds spent waiting for rate limits",
                                               ["provider"], registry=r)
        self.events = Counter("auren_fetch_events", "Canonical events fetched and stored, by "
                              "provider and provenance", ["provider", "provenance"], registry=r)
        self.refreshes = Counter("auren_token_refreshes", "Token refreshes by provider and "
                                 "result", ["provider", "result"], registry=r)
        self._children = LabelledChildren()

    def job(self, provider: str, outcome: str) -> None:
        self._children.get(self.jobs, provider, outcome).inc()

    def request(self, provider: str, result: str, seconds: float) -> None:
        self._children.get(self.requests, provider, result).inc()
        self._children.get(self.latency, provider).observe(seconds)

    def waited(self, provider: str, source: str, seconds: float) -> None:
        self._children.get(self.rate_limit_waits, provider, source).inc()
        self._children.get(self.rate_limit_wait_seconds, provider).inc(seconds)

    def stored(self, provider: str, provenance: str, events: int) -> None:
        if events:
            self._children.get(self.events, provider, provenance).inc(events)

    def refreshed(self, provider: str, result: str) -> None:
        self._children.get(self.refreshes, provider, result).inc()


class QueueCollector(Collector):
    """Gauges of the latest counts the fetcher read from its stores (a scrape never waits on
    a database): jobs by state, the dead letters the alert rule watches, connections."""

    def __init__(self) -> None:
        self.jobs: Mapping[tuple[str, str], int] | None = None
        self.connections: Mapping[tuple[str, str], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.jobs is not None:
            jobs = GaugeMetricFamily("auren_fetch_jobs_by_state", "Fetch jobs by provider and "
                                     "state", labels=["provider", "state"])
            for (provider, state), count in sorted(self.jobs.items()):
                if state in JOB_STATES:
                    jobs.add_metric([provider, state], count)
            yield jobs
            # The alert rule AurenFetchJobsDead reads this exact name.
            yield GaugeMetricFamily("auren_fetch_jobs_dead", "Fetch jobs that used up their "
                                    "retries or were refused for good (dead letters)",
                                    value=sum(n for (_, state), n in self.jobs.items()
                                              if state == DEAD))
        if self.connections is not None:
            connections = GaugeMetricFamily("auren_connections", "Connected accounts by "
                                            "provider and status (reauthorization_required: "
                                            "the person must connect again)",
                                            labels=["provider", "status"])
            for (provider, status), count in sorted(self.connections.items()):
                if status in STATUSES:
                    connections.add_metric([provider, status], count)
            yield connections
