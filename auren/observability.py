"""Prometheus metrics and structured (JSON) logs, and reading another process's ``/metrics``
back (``Scrape``, ``histogram_quantile``: the console and the toolkit's comparison).

Each app builds its own ``CollectorRegistry`` so that two apps in one process (tests) never
share counters. Logs are JSON lines on stderr; a record carries only allow-listed fields (never
payload values, secrets or signatures: health data must not leak into logs) and the id of the
request being handled (:data:`REQUEST_ID`).

The access log (a line per request) is formatted without ``logging``'s records
(:func:`log_info_fast`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class LabelledChildren:
    """A metric's child per label values, looked up once: ``labels()`` takes a lock and builds
    a tuple on every call, which the hot paths (every webhook, every chat) do not pay."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def get(self, metric: Any, *labels: str) -> Any:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("auren_webhook_requests", "Webhook requests by provider and status",
                                ["provider", "status"], registry=r)
        self.latency = Histogram("auren_webhook_latency_seconds", "Webhook handling latency",
                                 ["provider"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("auren_webhooks_in_flight", "Webhooks holding an admission slot",
                               registry=r)
        self.queue_depth = Gauge("auren_webhooks_waiting", "Webhooks waiting for admission",
                                 registry=r)
        self.events_stored = Counter("auren_events_stored",
                                     "Canonical events and fetch jobs stored", ["provider"],
                                     registry=r)
        self.duplicates = Counter("auren_duplicates", "Items or deliveries already stored",
                                  ["provider"], registry=r)
        self.signature_failures = Counter("auren_signature_failures",
                                          "Requests rejected by signature verification",
                                          ["provider"], registry=r)
        self.batch_size = Histogram("auren_commit_batch_deliveries",
                                    "Deliveries per group commit", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.batch_events = Histogram("auren_commit_batch_events", "Events per group commit",
                                      buckets=_BATCH_BUCKETS, registry=r)
        self.commit_seconds = Histogram("auren_commit_seconds",
                                        "Time to make one group commit durable",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("auren_admission_rejected", "Webhooks shed with 503", registry=r)
        # What a stored delivery carried but AUREN did not store (first deliveries only, not
        # re-deliveries): skipped measurements by reason (auren.events.SKIP_REASONS), and
        # items AUREN has no metric for.
        self.items_skipped = Counter("auren_webhook_items_skipped",
                                     "Measurements not stored because they were invalid, while "
                                     "the rest of their delivery was", ["provider", "reason"],
                                     registry=r)
        self.items_ignored = Counter("auren_webhook_items_ignored",
                                     "Items delivered that AUREN has no metric for",
                                     ["provider"], registry=r)
        # Items of erased people that arrived afterwards (a provider's retry, a late
        # notification): answered 2xx, never stored (docs/DESIGN.md, "Erasure").
        self.items_erased = Counter("auren_webhook_items_erased",
                                    "Items of erased people received and not stored",
                                    ["provider"], registry=r)

        self._children = LabelledChildren()

    def observe_request(self, provider: str, status: int, seconds: float) -> None:
        self._children.get(self.requests, provider, str(status)).inc()
        self._children.get(self.latency, provider).observe(seconds)

    def observe_stored(self, provider: str, items: int) -> None:
        self._children.get(self.events_stored, provider).inc(items)

    def observe_unstored(self, provider: str, ignored: int,
                         skipped: list[tuple[str, int]]) -> None:
        """Count a delivery's ignored items and its skipped measurements (reason, count)."""
        if ignored:
            self._children.get(self.items_ignored, provider).inc(ignored)
        for reason, count in skipped:
            self._children.get(self.items_skipped, provider, reason).inc(count)

    def observe_batch(self, deliveries: int, events: int, seconds: float) -> None:
        self.batch_size.observe(deliveries)
        self.batch_events.observe(events)
        self.commit_seconds.observe(seconds)


# --- reading another process's /metrics back -------------------------------------------------


class Scrape:
    """One ``/metrics`` answer, parsed by prometheus_client, for reading figures back (the
    console's live view, the toolkit's comparison). Sample names are as exposed: counters end
    in ``_total``, histograms have ``_bucket``/``_sum``/``_count`` samples."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, sample.labels, float(sample.value))
            for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples whose labels include ``labels``; None without any."""
        found = [v for n, have, v in self.samples if n == name and _matches(have, labels)]
        return sum(found) if found else None

    def by(self, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
        """``name``'s samples summed per value of ``label_names``."""
        out: dict[tuple[str, ...], float] = {}
        for n, labels, value in self.samples:
            if n == name:
                key = tuple(labels.get(label, "") for label in label_names)
                out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, name: str, **labels: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts by upper bound, summed over its children
        whose labels include ``labels``."""
        out: dict[float, float] = {}
        for n, have, value in self.samples:
            if n == f"{name}_bucket" and _matches(have, labels):
                bound = float(have["le"])
                out[bound] = out.get(bound, 0.0) + value
        return out

    def families(self, prefix: str) -> set[str]:
        return {n for n, _, _ in self.samples if n.startswith(prefix)}


def _matches(have: dict[str, str], want: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative bucket counts, interpolated linearly within its
    bucket as Prometheus's ``histogram_quantile`` does; None when the histogram is empty. A
    quantile in the ``+Inf`` bucket is the largest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound

# The id of the HTTP request being handled (auren.services.kernel.requests sets it): every log
# line written while it is handled carries it as ``request_id``.
REQUEST_ID: ContextVar[str | None] = ContextVar("auren_request_id", default=None)

# Fields a log record may carry besides the message; everything else is dropped.
_ALLOWED = frozenset({"provider", "status", "error", "batch", "method", "path", "duration_ms",
                      "service", "port", "workers", "mode", "count", "detail", "state",
                      "breaker"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Cheap enough for a line per request (the access log): the
    second's text is formatted once per second, and only allow-listed fields are looked up."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        exc_type = record.exc_info[0] if record.exc_info else None
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         record.__dict__, None if exc_type is None else exc_type.__name__)

    def line(self, created: float, level: str, logger: str, msg: str,
             fields: dict[str, Any], exc_type: str | None = None) -> str:
        """The JSON line of one record (also written without a ``LogRecord``: see
        :func:`log_info_fast`)."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._second_text}.{int((created - second) * 1000):03d}Z",
            "level": level,
            "logger": logger,
            # CR/LF escaped by JSON encoding: no log injection.
            "msg": msg,
        }
        for key in _ALLOWED.intersection(fields):
            entry[key] = fields[key]
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if exc_type is not None:
            entry["exc_type"] = exc_type
        return orjson.dumps(entry, default=str).decode()


class JsonStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The services' handler: a line per record on the stream, plus the lines formatted by
    :func:`log_info_fast` (the access log).

    A record is written as it is emitted. The access lines written on an event loop are gathered
    for one turn of that loop and written together, in one ``write``, rather than a system call
    per request on the loop that serves them (the bridge's request tracing profiled at a sixth
    of a webhook's CPU; see DESIGN). They are out before anything else is written (a record, or
    a flush) and at the latest at the loop's next turn, so a service ended by a signal after its
    graceful shutdown, whose last words are records, has written every line; only a process
    killed outright can lose the lines of the loop's last turn.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        # A deque: appends and pops are atomic, so the loop's thread appends without the
        # handler's lock, and a flush from any thread takes exactly the lines it writes.
        self._gathered: collections.deque[str] = collections.deque()
        # The loop whose next turn writes what is gathered (None: nothing scheduled).
        self._gathering_on: asyncio.AbstractEventLoop | None = None

    def emit_line(self, line: str) -> None:
        self._gathered.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: now
            self.flush()
            return
        if self._gathering_on is not loop:
            self._gathering_on = loop
            loop.call_soon(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        if self._gathered:
            self.flush()  # the access lines gathered so far came first
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._gathering_on = None
            gathered = self._gathered
            if not gathered:
                super().flush()
                return
            lines = [gathered.popleft() for _ in range(len(gathered))]
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
                super().flush()
            except Exception:  # noqa: BLE001 - a closed or full stderr must not stop the service
                if logging.raiseExceptions:
                    sys.stderr.write("--- logging: a line could not be written\n")


def log_info_fast(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """``logger.info(msg, extra=fields)`` for a line per request (the access log), in a
    fraction of its CPU: with logging as :func:`configure_logging` set it up (one JSON
    handler on the root, no handler or filter on the way), the line is formatted and handed to
    that handler directly, without a ``LogRecord`` or the caller lookup that logging makes for
    each one (3.6 us a line against 9.7). Otherwise (another handler was added, e.g. by a
    test) it is ``logger.info``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _json_handler(logger)
    if handler is None:
        logger.info(msg, extra=fields)
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)  # noqa: S101 - set by configure_logging
    handler.emit_line(formatter.line(time.time(), "INFO", logger.name, msg, fields))


def _json_handler(logger: logging.Logger) -> JsonStreamHandler | None:
    """The root's JSON handler when it is the only handler ``logger``'s lines reach and
    nothing filters them on the way."""
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        if node.parent is None:  # the root
            handlers = node.handlers
            if len(handlers) == 1 and isinstance(handlers[0], JsonStreamHandler) and \
                    not handlers[0].filters and isinstance(handlers[0].formatter, JsonFormatter):
                return handlers[0]
            return None
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    return None


def configure_logging(level: str) -> None:
    # The formatter writes none of these; not collecting them makes every record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = JsonStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
