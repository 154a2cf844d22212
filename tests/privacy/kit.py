"""A real bridge (service key and user tokens configured) and the provider API simulator, and
the calls the privacy tests share: connecting as a browser would, the person's events, jobs,
and the audit log read straight from the bridge's SQLite file (so that reading it writes no
record of its own)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import jwt

from auren.privacy.base import AuditRecord
from auren.privacy.sqlite import audit_row
from tests.connections.kit import System

KEY = "privacy-service-key-0123456789"
JWT_SECRET = "privacy-jwt-secret-0123456789abcdef-0123456789"
SERVICE = {"authorization": f"Bearer {KEY}"}
SETTINGS = {"AUREN_API_KEYS": KEY, "AUREN_JWT_SECRET": JWT_SECRET, "CONSENT_REFRESH_S": "0.5"}


def token(user: str) -> dict[str, str]:
    claims = {"sub": user, "exp": int(time.time()) + 3600}
    return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS256")}


def call(world: System, method: str, path: str, headers: dict[str, str] | None = None,
         **kwargs: Any) -> httpx.Response:
    return httpx.request(method, world.url + path, headers=SERVICE if headers is None
                         else headers, timeout=30, follow_redirects=False, **kwargs)


def connect_link(world: System, provider: str, name: str) -> httpx.Response:
    made = call(world, "POST", "/api/v1/users", json={"user_id": name})
    assert made.status_code in (200, 201), made.text
    start = call(world, "GET", f"/api/v1/connect/{provider}", token(name),
                 params={"user_id": name})
    assert start.status_code == 302, start.text
    return start


def consent_and_come_back(start: httpx.Response, wearer: int, provider: str) -> str:
    """The provider's consent page (the simulator approves as ``wearer``): the callback URL."""
    params = {"sim_user": str(wearer), **({"resource": "OURA"} if provider == "terra" else {})}
    page = httpx.get(httpx.URL(start.headers["location"]).copy_merge_params(params),
                     follow_redirects=False, timeout=30)
    assert page.status_code == 302, page.text
    return str(page.headers["location"])


def connect(world: System, provider: str, name: str, wearer: int) -> dict[str, Any]:
    start = connect_link(world, provider, name)
    back = httpx.get(consent_and_come_back(start, wearer, provider), timeout=30)
    assert back.status_code == 200, back.text
    answer: dict[str, Any] = back.json()
    return answer


def jobs(world: System) -> list[dict[str, Any]]:
    answer = call(world, "GET", "/api/v1/jobs", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["jobs"]
    return found


def wait_idle(world: System, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = jobs(world)
        if not [j for j in found if j["state"] in ("pending", "running")]:
            return found
        time.sleep(0.2)
    raise AssertionError("jobs still busy")


def events(world: System, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        answer = call(world, "GET", f"/api/v1/users/{name}/events", params=params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["events"]
        cursor = answer.json()["next"]
        if not cursor:
            return found


def audit_after(world: System, seq: int) -> list[AuditRecord]:
    """The bridge's audit records after ``seq``, from its SQLite file (read-only)."""
    path = world.bridge.data_dir / "auren.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT seq, at, actor, action, user_id, route, client, outcome, "
                            "request_id FROM audit_log WHERE seq > ? ORDER BY seq",
                            (seq,)).fetchall()
    finally:
        conn.close()
    return [audit_row(r) for r in rows]


def last_seq(world: System) -> int:
    found = audit_after(world, 0)
    return found[-1].seq or 0 if found else 0


def metric(world: System, name: str, **labels: str) -> float:
    """One sample of the bridge's /metrics (0 when absent)."""
    text = httpx.get(world.url + "/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{wanted}}}" if wanted else name):
            return float(value)
    return 0.0
