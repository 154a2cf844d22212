"""NEUROS's Prometheus metrics, in a registry of its own (two apps in one process never share)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from auren.observability import LabelledChildren

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class NeurosMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.chats = Counter("auren_neuros_chat_requests", "Chat requests by intent and status",
                             ["intent", "status"], registry=r)
        self.latency = Histogram("auren_neuros_chat_latency_seconds",
                                 "Chat handling latency by endpoint", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.llm_calls = Counter("auren_neuros_llm_calls",
                                 "LLM phrasing attempts by outcome; anything but ok fell back "
                                 "to the builtin phrasing", ["outcome"], registry=r)
        self.llm_latency = Histogram("auren_neuros_llm_latency_seconds",
                                     "Time spent in the LLM phase", buckets=_LATENCY_BUCKETS,
                                     registry=r)
        self.rate_limited = Counter("auren_neuros_rate_limited",
                                    "Chat requests refused by the per-user rate limit",
                                    registry=r)
        self.emergencies = Counter("auren_neuros_emergencies",
                                   "Emergency answers by category of the safety screen",
                                   ["category"], registry=r)
        self.emergencies_over_limit = Counter(
            "auren_neuros_emergencies_over_limit",
            "Emergency answers given although the user was over the rate limit", registry=r)
        self.cache_lookups = Counter("auren_neuros_cache_lookups",
                                     "Daily-series cache lookups (one per metric) by level: "
                                     "process, then redis for what the process missed",
                                     ["level", "result"], registry=r)
        self._children = LabelledChildren()

    def count_cache_lookups(self, level: str, result: str, n: int) -> None:
        self._children.get(self.cache_lookups, level, result).inc(n)
