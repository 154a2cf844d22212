"""Load engines: closed model (fixed connections) and open model (constant arrival rate).

Both speak HTTP/1.1 over keep-alive asyncio streams with pre-rendered raw requests: an HTTP
client library costs more CPU per request than the server under test spends on a health check,
and a generator that saturates first measures itself.

**Coordinated omission.** A closed-model client waits for each answer before sending the next,
so while the server stalls it simply stops asking and the stall hides in a handful of samples.
The open model fixes the send schedule up front (request *i* is due at ``i / rate``) and
measures every latency from that *intended* time, waiting for a free connection included
(wrk2's model); the time from the actual send is kept beside it as ``uncorrected``. The closed
model is labelled as such, and its percentiles are also given back-filled with HdrHistogram's
``record_corrected_value`` using the expected interval ``connections / achieved rate``.

**Generator self-check.** A run is ``invalid`` (the generator, not the server, was the limit)
when the open model's scheduler fell behind its own schedule (lateness p99 beyond
``MAX_LAG_MS``) or sent less than ``MIN_RATE_RATIO`` of the target without the server being
the reason, or when the generator process used a whole core (``MAX_GEN_CPU_PCT``).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
from hdrh.histogram import HdrHistogram

from auren.ops.ledger import Identity, Ledger

# Microseconds from 1 µs to 10 min, 3 significant digits (0.1 % resolution).
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 600_000_000, 3
MAX_LAG_MS = 50.0
MIN_RATE_RATIO = 0.9
MAX_GEN_CPU_PCT = 95.0
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
REFILL = 256

# Renders ``n`` raw HTTP requests, each with the ``items`` the server should store for it. A
# factory that is also an ``Identity`` (the webhook workload) knows the ids each one carries:
# the n-th request it rendered is sequence number n of the step's ledger.
RequestFactory = Callable[[int], list[tuple[bytes, int]]]


def new_ledger(factory: RequestFactory) -> Ledger:
    return Ledger(factory if isinstance(factory, Identity) else None)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def summarize(hist: HdrHistogram) -> dict[str, float]:
    """p50/p90/p95/p99/p99.9, max and mean in milliseconds (zeros when empty)."""
    if hist.get_total_count() == 0:
        return {**{_pname(p): 0.0 for p in PERCENTILES}, "max": 0.0, "mean": 0.0}
    out = {_pname(p): round(hist.get_value_at_percentile(p) / 1000, 3) for p in PERCENTILES}
    out["max"] = round(hist.get_max_value() / 1000, 3)
    out["mean"] = round(hist.get_mean_value() / 1000, 3)
    return out


def exact_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """The PERCENTILES and max of ``samples_ms`` from the samples themselves (each one kept,
    no histogram), in ms; empty without any."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {}
    out = {_pname(p): round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)
           for p in PERCENTILES}
    out["max"] = round(ordered[-1], 3)
    return out


def _pname(p: float) -> str:
    return f"p{p:g}"


def raw_request(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- a minimal HTTP/1.1 keep-alive connection ------------------------------------------------


class HTTPError(Exception):
    """A transport failure; ``kind`` is connect, read, write or timeout (wrk's taxonomy)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Connection:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # Whether the last answer carried Retry-After (a 503 must: the breaker checks read it).
        self.retry_after = False

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._timeout_s)
        except (OSError, TimeoutError):
            raise HTTPError("connect") from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None  # noqa: S101
        try:
            self._writer.write(raw)
            async with asyncio.timeout(self._timeout_s):
                return await self._read_response(self._reader)
        except TimeoutError:
            self.close()
            raise HTTPError("timeout") from None
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            self.close()
            raise HTTPError("read") from None

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        self.retry_after = False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
            elif name == b"retry-after":
                self.retry_after = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            close = True
        if close:
            self.close()
        return status, body


def accepted_of(status: int, body: bytes, items: int) -> int:
    """What a bridge answer says it made durable (Fitbit's empty 204: the request's items)."""
    if status == 204:
        return items
    if not 200 <= status < 300 or b'"accepted"' not in body:
        return 0
    try:
        value = orjson.loads(body).get("accepted", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return value if isinstance(value, int) else 0


# --- results ----------------------------------------------------------------------------------


@dataclass
class StepResult:
    """One measured step: a model, an engine, a load level and what came back."""

    label: str
    model: str  # "closed" | "open"
    engine: str  # "builtin" | "wrk"
    connections: int
    target_rate: float | None
    duration_s: float = 0.0
    sent: int = 0
    completed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted_items: int = 0
    dropped: int = 0  # open model: due but never sent (too many outstanding)
    latency_ms: dict[str, float] = field(default_factory=dict)  # the verdict's percentiles
    uncorrected_ms: dict[str, float] = field(default_factory=dict)
    corrected_ms: dict[str, float] = field(default_factory=dict)  # closed model back-filled
    # wrk with answers files: the percentiles of the 2xx answers alone (503s apart).
    admitted_ms: dict[str, float] = field(default_factory=dict)
    lag_ms: dict[str, float] = field(default_factory=dict)  # open model scheduler lateness
    generator_cpu_pct: float | None = None
    invalid: bool = False
    invalid_reason: str = ""
    wrapped: int = 0  # wrk: requests repeated because the pre-signed pool ran out
    histogram: str = ""  # HdrHistogram "histoblob" of latency_ms, for merging and re-plotting
    server: dict[str, Any] = field(default_factory=dict)  # filled by the load test (psutil)
    error_lines: dict[str, int] = field(default_factory=dict)
    workload: str = ""  # webhooks | chat | get: set by the load test
    service: str = "bridge"  # the service the step loaded: set by the load test
    no_retry_after_503: int = 0  # 503 answers without Retry-After (a shed must say when)
    # wrk: requests still on the wire when the step ended (not in ``sent``: no outcome).
    cut_off: int = 0
    # What became of each rendered request (answered with which status, or why not).
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def achieved_rate(self) -> float:
        return self.completed / self.duration_s if self.duration_s else 0.0

    @property
    def ok_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= code < 300)

    @property
    def failures(self) -> int:
        """Answers that are not 2xx plus requests with no answer at all."""
        return self.sent - self.ok_2xx + self.dropped

    @property
    def error_rate(self) -> float:
        total = self.sent + self.dropped
        return self.failures / total if total else 0.0

    @property
    def shed_503(self) -> int:
        return self.statuses.get(503, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "workload": self.workload, "model": self.model,
            "engine": self.engine,
            "connections": self.connections, "target_rate": self.target_rate,
            "duration_s": round(self.duration_s, 3), "sent": self.sent,
            "completed": self.completed, "achieved_rate": round(self.achieved_rate, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors), "error_rate": round(self.error_rate, 6),
            "accepted_items": self.accepted_items, "dropped": self.dropped,
            "latency_ms": self.latency_ms, "uncorrected_ms": self.uncorrected_ms,
            "corrected_ms": self.corrected_ms, "admitted_ms": self.admitted_ms,
            "lag_ms": self.lag_ms,
            "generator_cpu_pct": self.generator_cpu_pct, "invalid": self.invalid,
            "invalid_reason": self.invalid_reason, "wrapped": self.wrapped,
            "server": self.server, "error_lines": self.error_lines,
            "no_retry_after_503": self.no_retry_after_503, "histogram": self.histogram,
            "cut_off": self.cut_off,
            "requests": self.ledger.as_dict(),
        }


class _Requests:
    """Pre-rendered requests, refilled in small batches so memory stays bounded; each comes
    with its sequence number in ``ledger``."""

    def __init__(self, factory: RequestFactory, ledger: Ledger) -> None:
        self._factory = factory
        self._ledger = ledger
        self._queue: deque[tuple[bytes, int, int]] = deque()

    def next(self) -> tuple[bytes, int, int]:
        if not self._queue:
            batch = self._factory(REFILL)
            first = self._ledger.rendered(len(batch))
            self._queue.extend((raw, items, first + i) for i, (raw, items) in enumerate(batch))
        return self._queue.popleft()


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("the built-in engine speaks plain http:// only")
    return parts.hostname, parts.port or 80


class _CPUMeter:
    """This process's CPU use over a step, in % of one core."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._start = self._proc.cpu_times()
        self._t0 = time.perf_counter()

    def percent(self) -> float:
        now = self._proc.cpu_times()
        used: float = (now.user - self._start.user) + (now.system - self._start.system)
        return round(100 * used / max(time.perf_counter() - self._t0, 1e-9), 1)


def _finish(result: StepResult, hist: HdrHistogram, raw_us: array[int] | None,
            uncorrected: HdrHistogram | None, cpu: _CPUMeter) -> StepResult:
    result.latency_ms = summarize(hist)
    result.histogram = hist.encode().decode() if hist.get_total_count() else ""
    if uncorrected is not None:
        result.uncorrected_ms = summarize(uncorrected)
    if raw_us is not None and result.completed and result.duration_s:
        # Little's law: each connection is expected to ask again every connections/rate s.
        interval_us = int(1_000_000 * result.connections / max(result.achieved_rate, 1e-9))
        corrected = new_histogram()
        for value in raw_us:
            corrected.record_corrected_value(value, max(interval_us, 1))
        result.corrected_ms = summarize(corrected)
    result.generator_cpu_pct = cpu.percent()
    if result.generator_cpu_pct >= MAX_GEN_CPU_PCT:
        result.invalid = True
        result.invalid_reason = (f"the load generator used {result.generator_cpu_pct:.0f} % of "
                                 "a core: it, not the server, set the pace")
    return result


# --- closed model -----------------------------------------------------------------------------


async def run_closed(base_url: str, factory: RequestFactory, *, connections: int,
                     duration_s: float, timeout_s: float = 10.0, label: str = "",
                     on_progress: Callable[[float], None] | None = None) -> StepResult:
    """``connections`` workers, each sending back to back for ``duration_s`` (like wrk -c)."""
    host, port = _host_port(base_url)
    result = StepResult(label, "closed", "builtin", connections, None,
                        ledger=new_ledger(factory))
    ledger = result.ledger
    hist = new_histogram()
    raw_us: array[int] = array("q")
    requests = _Requests(factory, ledger)
    cpu = _CPUMeter()
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        conn = Connection(host, port, timeout_s)
        try:
            while time.perf_counter() < deadline:
                raw, items, seq = requests.next()
                sent_at = time.perf_counter()
                result.sent += 1
                ledger.sent(seq)
                try:
                    status, body = await conn.request(raw)
                except HTTPError as exc:
                    result.errors[exc.kind] += 1
                    if exc.kind == "connect":
                        ledger.not_sent(seq)  # nothing was written
                        await asyncio.sleep(0.05)  # a refused port must not spin a core
                    continue
                ledger.answered(seq, status)
                micros = max(1, int((time.perf_counter() - sent_at) * 1_000_000))
                hist.record_value(min(micros, _HIGHEST_US))
                raw_us.append(micros)
                result.completed += 1
                result.statuses[status] += 1
                result.no_retry_after_503 += status == 503 and not conn.retry_after
                result.accepted_items += accepted_of(status, body, items)
        finally:
            conn.close()

    progress = asyncio.create_task(_progress(started, duration_s, on_progress))
    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        progress.cancel()
    result.duration_s = time.perf_counter() - started
    return _finish(result, hist, raw_us, None, cpu)


async def _progress(started: float, duration_s: float,
                    on_progress: Callable[[float], None] | None) -> None:
    if on_progress is None:
        return
    while True:
        await asyncio.sleep(0.25)
        on_progress(min(1.0, (time.perf_counter() - started) / duration_s))


# --- open model -------------------------------------------------------------------------------


async def run_open(base_url: str, factory: RequestFactory, *, rate: float, duration_s: float,
                   connections: int = 64, timeout_s: float = 10.0, label: str = "",
                   max_outstanding: int = 50_000,
                   on_progress: Callable[[float], None] | None = None,
                   stop: asyncio.Event | None = None) -> StepResult:
    """Request *i* is due at ``i / rate`` s; latency counts from then (wrk2's model).

    At most ``connections`` requests are on the wire; the others wait for a connection and
    that wait is part of their latency. Beyond ``max_outstanding`` due requests the schedule
    drops (counted, and a failure): memory stays bounded through any stall. ``stop`` ends the
    schedule early (the drills stop once the system has recovered); what was sent is awaited.
    """
    if not rate > 0:
        raise ValueError("rate must be positive")
    host, port = _host_port(base_url)
    result = StepResult(label, "open", "builtin", connections, rate,
                        ledger=new_ledger(factory))
    ledger = result.ledger
    hist, uncorrected, lag = new_histogram(), new_histogram(), new_histogram()
    requests = _Requests(factory, ledger)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(host, port, timeout_s))
    outstanding: set[asyncio.Task[None]] = set()
    cpu = _CPUMeter()
    total = int(rate * duration_s)
    started = time.perf_counter() + 0.01

    async def one(raw: bytes, items: int, seq: int, intended: float) -> None:
        conn = await pool.get()
        sent_at = time.perf_counter()
        ledger.sent(seq)
        try:
            status, body = await conn.request(raw)
            shed_silently = status == 503 and not conn.retry_after
        except HTTPError as exc:
            result.errors[exc.kind] += 1
            if exc.kind == "connect":
                ledger.not_sent(seq)
                await asyncio.sleep(0.05)
            return
        finally:
            pool.put_nowait(conn)
        ledger.answered(seq, status)
        done = time.perf_counter()
        hist.record_value(min(max(1, int((done - intended) * 1_000_000)), _HIGHEST_US))
        uncorrected.record_value(min(max(1, int((done - sent_at) * 1_000_000)), _HIGHEST_US))
        result.completed += 1
        result.statuses[status] += 1
        result.no_retry_after_503 += shed_silently
        result.accepted_items += accepted_of(status, body, items)

    progress = asyncio.create_task(_progress(started, duration_s, on_progress))
    try:
        index = 0
        while index < total and not (stop is not None and stop.is_set()):
            now = time.perf_counter()
            intended = started + index / rate
            if intended > now:
                await asyncio.sleep(min(intended - now, 0.25))
                continue
            # Everything due by now goes out in this wake-up (sleep granularity is ~1 ms).
            while index < total and started + index / rate <= now:
                due = started + index / rate
                lag.record_value(min(max(1, int((time.perf_counter() - due) * 1_000_000)),
                                     _HIGHEST_US))
                index += 1
                if len(outstanding) >= max_outstanding:
                    result.dropped += 1
                    continue
                raw, items, seq = requests.next()
                result.sent += 1
                task = asyncio.create_task(one(raw, items, seq, due))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
        send_window = time.perf_counter() - started
        if outstanding:
            await asyncio.gather(*outstanding)
    finally:
        progress.cancel()
        for _ in range(pool.qsize()):
            pool.get_nowait().close()
    result.duration_s = time.perf_counter() - started
    result.lag_ms = summarize(lag)
    _finish(result, hist, None, uncorrected, cpu)
    send_rate = result.sent / send_window if send_window > 0 else 0.0
    if result.lag_ms["p99"] > MAX_LAG_MS:
        result.invalid = True
        result.invalid_reason = (f"the scheduler ran {result.lag_ms['p99']:.0f} ms (p99) behind "
                                 f"its own schedule: the generator could not keep up")
    elif send_rate < MIN_RATE_RATIO * rate and not result.dropped:
        result.invalid = True
        result.invalid_reason = (f"sent {send_rate:.0f}/s of a target {rate:.0f}/s: the "
                                 "generator could not keep up")
    return result
