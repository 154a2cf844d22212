"""Signed webhooks flowing into a real bridge while something else happens (a backup, a
drill), with the time of every answer, so that a test can name exactly which events were
acknowledged before a moment, and which were first sent after one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from tests.helpers import native_body, native_headers

_BASE = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Answer:
    records: tuple[str, ...]
    status: int | str  # the HTTP status, or the transport error's name
    sent: float  # time.monotonic() when the request began
    answered: float  # ... and when its answer (or error) arrived

    @property
    def acknowledged(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


@dataclass
class WebhookFlow:
    """``workers`` threads, each sending one signed native webhook after another (two events
    with unique record ids, under users of ``prefix``) until :meth:`stop`."""

    base_url: str
    prefix: str
    workers: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> WebhookFlow:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                      name=f"flow-{worker}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, worker: int) -> None:
        user = f"{self.prefix}-u{worker}"
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                records = tuple(f"{self.prefix}-w{worker}-{n}-{k}" for k in range(2))
                body = native_body(user, [
                    {"metric": "heart_rate", "value": 50 + (n + k) % 40, "unit": "/min",
                     "start": (_BASE + timedelta(seconds=2 * n + k)).isoformat().replace(
                         "+00:00", "Z"), "id": record}
                    for k, record in enumerate(records)])
                sent = time.monotonic()
                try:
                    status: int | str = client.post("/webhooks/auren", content=body,
                                                    headers=native_headers(body)).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.answers.append(Answer(records, status, sent, time.monotonic()))
                n += 1

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def wait_acknowledged(self, count: int, *, after: float = 0.0,
                          timeout_s: float = 60.0) -> None:
        """Until ``count`` webhooks answered 2xx after ``after`` (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while sum(a.acknowledged and a.answered > after for a in self.snapshot()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} webhooks acknowledged: "
                                     f"{self.statuses()}")
            time.sleep(0.05)

    def acknowledged_before(self, moment: float) -> set[str]:
        return {r for a in self.snapshot() if a.acknowledged and a.answered < moment
                for r in a.records}

    def acknowledged(self) -> set[str]:
        return {r for a in self.snapshot() if a.acknowledged for r in a.records}

    def sent_after(self, moment: float) -> set[str]:
        return {r for a in self.snapshot() if a.sent > moment for r in a.records}

    def all_sent(self) -> set[str]:
        return {r for a in self.snapshot() for r in a.records}

    def answered_between(self, start: float, end: float) -> int:
        return sum(start < a.answered < end for a in self.snapshot())

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for answer in self.snapshot():
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts
