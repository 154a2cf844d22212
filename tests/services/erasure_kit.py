"""Shared code of the erasure tests: a person with data in every store, and the proofs that
nothing of them is left (raw files, Redis) while nobody else was touched."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.helpers import native_body, native_headers

KEY = "erasure-service-key-0123456789"
JWT_SECRET = "erasure-jwt-secret-0123456789abcdef-0123"
SERVICE = {"authorization": f"Bearer {KEY}"}
AUTH_ENV = {"AUREN_API_KEYS": KEY, "AUREN_JWT_SECRET": JWT_SECRET}
# Short waits: a test must not wait for production's backoff and leases.
FAST_ERASURE = {"ERASURE_POLL_S": "0.2", "ERASURE_RETRY_BASE_S": "0.3",
                "ERASURE_LEASE_S": "2"}


def token(user: str) -> dict[str, str]:
    claims = {"sub": user, "exp": int(time.time()) + 600}
    return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS256")}


@dataclass
class Person:
    """Someone with data in every store; ``marks`` are the byte strings that would betray any
    of it in a raw file: ids, distinctive values (as text and as SQLite/PostgreSQL store
    doubles, big- and little-endian), words of their conversation."""

    user_id: str
    value: float
    words: str
    provider_user_ids: list[str] = field(default_factory=list)
    batch: str = "record"  # a later batch of the person's events: other record ids

    @property
    def record_id(self) -> str:
        return f"{self.user_id}-{self.batch}"

    def marks(self) -> dict[str, bytes]:
        found = {"user id": self.user_id.encode(), "record id": self.record_id.encode(),
                 "words": self.words.encode(), "value": repr(self.value).encode(),
                 "value (big-endian double)": struct.pack(">d", self.value),
                 "value (little-endian double)": struct.pack("<d", self.value)}
        for index, provider_user_id in enumerate(self.provider_user_ids):
            found[f"provider user id {index}"] = provider_user_id.encode()
        return found


def push_events(url: str, person: Person) -> None:
    """Two signed native webhooks of distinctive HRV values, stored (202)."""
    for day in (3, 4):
        body = native_body(person.user_id, [{
            "metric": "hrv_rmssd", "value": person.value + day, "unit": "ms",
            "start": f"2026-01-{day:02d}T06:00:00Z", "id": f"{person.record_id}-{day}"}])
        sent = httpx.post(f"{url}/webhooks/auren", content=body,
                          headers=native_headers(body), timeout=30)
        assert sent.status_code == 202, sent.text
    body = native_body(person.user_id, [{
        "metric": "hrv_rmssd", "value": person.value, "unit": "ms",
        "start": "2026-01-05T06:00:00Z", "id": person.record_id}])
    sent = httpx.post(f"{url}/webhooks/auren", content=body, headers=native_headers(body),
                      timeout=30)
    assert sent.status_code == 202, sent.text


def late_webhook(url: str, person: Person) -> httpx.Response:
    body = native_body(person.user_id, [{
        "metric": "hrv_rmssd", "value": person.value, "unit": "ms",
        "start": "2026-01-09T06:00:00Z", "id": f"{person.record_id}-late"}])
    return httpx.post(f"{url}/webhooks/auren", content=body, headers=native_headers(body),
                      timeout=30)


def wait_receipt(url: str, erasure_id: str, timeout_s: float = 90.0, *,
                 until: Iterable[str] = ("complete", "failed")) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    wanted = set(until)
    receipt: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/erasures/{erasure_id}", headers=SERVICE, timeout=30)
        assert answer.status_code == 200, answer.text
        receipt = answer.json()
        if receipt["status"] in wanted:
            return receipt
        time.sleep(0.2)
    raise AssertionError(f"erasure not {wanted} after {timeout_s} s: {receipt}")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def betrayed(paths: Iterable[Path], person: Person) -> list[str]:
    """Every (file, mark) where a raw file still holds something of the person."""
    found = []
    marks = person.marks()
    for path in paths:
        data = path.read_bytes()
        found += [f"{path.name}: {name}" for name, mark in marks.items() if mark in data]
    return found


def event_count(url: str, user_id: str) -> int:
    """The person's events the read API serves (none for an erased person: 404)."""
    answer = httpx.get(f"{url}/api/v1/users/{user_id}/events", headers=SERVICE,
                       params={"limit": 1000}, timeout=30)
    if answer.status_code == 404:
        return 0
    assert answer.status_code == 200, answer.text
    return len(answer.json()["events"])


def metric_value(url: str, name: str, labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def connect(url: str, provider: str, user_id: str, wearer: int) -> dict[str, Any]:
    """The connect flow as a browser follows it, the person's consent given at the simulator
    as ``wearer``; the connection's answer."""
    made = httpx.post(f"{url}/api/v1/users", json={"user_id": user_id}, headers=SERVICE,
                      timeout=30)
    assert made.status_code in (200, 201), made.text
    start = httpx.get(f"{url}/api/v1/connect/{provider}", params={"user_id": user_id},
                      headers=SERVICE, timeout=30)
    assert start.status_code == 302, start.text
    consent = httpx.get(httpx.URL(start.headers["location"]).copy_merge_params(
        {"sim_user": str(wearer)}), follow_redirects=False, timeout=30)
    assert consent.status_code == 302, consent.text
    back = httpx.get(consent.headers["location"], timeout=30)
    assert back.status_code == 200, back.text
    answer: dict[str, Any] = back.json()
    return answer


def wait_jobs_idle(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    busy: list[Any] = []
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/jobs", params={"limit": 1000}, headers=SERVICE,
                           timeout=30)
        assert answer.status_code == 200, answer.text
        busy = [j for j in answer.json()["jobs"] if j["state"] in ("pending", "running")]
        if not busy:
            return
        time.sleep(0.2)
    raise AssertionError(f"jobs still busy: {busy[:3]}")
