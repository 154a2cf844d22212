"""CPU and RSS of the server processes, sampled in the background while load runs.

Each service is its pid plus its children (uvicorn workers), summed. CPU is in % of one core
(psutil's convention: 200 % is two cores busy); the first ``cpu_percent`` of a process is
meaningless and is discarded. A sampler thread, not the event loop: the load engine's loop
must not be the one that decides when samples are taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

INTERVAL_S = 0.5


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    service: str
    cpu_pct: float
    rss_mb: float


@dataclass
class Sampler:
    pids: Mapping[str, int]
    interval_s: float = INTERVAL_S
    samples: list[Sample] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (t, label) of step starts
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> Sampler:
        self._t0 = time.monotonic()
        self._sample(record=False)  # primes cpu_percent
        self._thread = threading.Thread(target=self._run, daemon=True, name="auren-sampler")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s * 4)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, label: str) -> float:
        t = self.now()
        self.marks.append((t, label))
        return t

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(record=True)

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(None)
            except psutil.Error:
                return None
        return proc

    def _sample(self, *, record: bool) -> None:
        t = self.now()
        for service, pid in self.pids.items():
            root = self._process(pid)
            if root is None:
                continue
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            cpu = rss = 0.0
            for member in family:
                proc = self._process(member.pid)
                if proc is None:
                    continue
                try:
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            if record:
                self.samples.append(Sample(round(t, 2), service, round(cpu, 1),
                                           round(rss / 1_048_576, 1)))

    def window(self, start: float, end: float) -> dict[str, dict[str, float]]:
        """Peak and mean CPU and RSS per service between ``start`` and ``end`` (sampler time)."""
        out: dict[str, dict[str, float]] = {}
        for service in self.pids:
            rows = [s for s in self.samples if s.service == service and start <= s.t <= end]
            if not rows:
                continue
            out[service] = {
                "cpu_peak_pct": max(r.cpu_pct for r in rows),
                "cpu_mean_pct": round(sum(r.cpu_pct for r in rows) / len(rows), 1),
                "rss_peak_mb": max(r.rss_mb for r in rows),
                "rss_mean_mb": round(sum(r.rss_mb for r in rows) / len(rows), 1),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "cpu_count": psutil.cpu_count(),
                "marks": [{"t": round(t, 2), "label": label} for t, label in self.marks],
                "samples": [{"t": s.t, "service": s.service, "cpu_pct": s.cpu_pct,
                             "rss_mb": s.rss_mb} for s in self.samples]}
