"""NEUROS chat latency with the builtin engine: 50 concurrent users, 60 days of data each.

    python bench/neuros_chat.py [--users 50] [--days 60] [--duration 10] [--runs 3]
                                [--think-ms 0] [--json out.json]

One run:

1. seeds a fresh temporary ``AUREN_DATA_DIR`` with ``--users`` simulated users x ``--days``
   days (``auren.sim``, written straight through ``SQLiteStore.write_batch``, the same
   store the bridge fills, to keep set-up fast);
2. starts ``auren serve neuros`` on a free loopback port (one worker, the CLI's server
   options), with the per-user rate limit raised so that the bench measures answers, not 429s;
3. runs a **closed model**: each virtual user sends a question, waits for the whole answer,
   thinks (exponentially distributed, mean ``--think-ms``; users start at random offsets)
   and asks the next one, for ``--duration`` seconds. Questions rotate
   through readiness, sleep, HRV, resting HR, training load, trends and comparisons, each in
   the user's own conversation (so memory is read and written on every turn). The client is a
   minimal keep-alive HTTP/1.1 client on asyncio streams, so that on a small machine the load
   generator costs less CPU than the server it measures;
4. reports p50/p95/p99, throughput and errors, then stops the server by its pid.

The verdict is the median p95 over ``--runs`` against the target p95 < 50 ms (the seed's SLA
for ``/chat`` is p95 < 2000 ms). ``--think-ms 0`` (the default) is the harshest case: every
user asks again the moment an answer arrives, so latency includes queueing behind the other 49.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson

from auren.adapters.sqlite import SQLiteStore
from auren.events import Delivery, make_event, parse_time
from auren.sim.render import native_events
from auren.sim.wearers import generate_users

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TARGET_P95_MS = 50.0
SLA_P95_MS = 2000.0
IDLE_REUSE_S = 4.0
QUESTIONS = (
    "How ready am I today?",
    "How did I sleep last night?",
    "What's my HRV like?",
    "What is my resting heart rate?",
    "How is my training load?",
    "Should I train hard today?",
    "How did I sleep last week?",
    "hrv this week vs last week",
    "steps over the last 30 days",
    "and my resting heart rate?",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _offset(minutes: int) -> str:
    return f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


async def seed(data_dir: Path, users: int, days: int) -> list[tuple[str, str]]:
    """Write the users' histories; returns (user_id, timezone) per user."""
    store = SQLiteStore(data_dir / "auren.sqlite3")
    await store.open()
    now = datetime.now(UTC)
    out = []
    try:
        # End on the latest local date any offset has, so every user has "last night".
        end = (now + timedelta(hours=14)).date()
        for history in generate_users(users, days, seed=11, end_date=end,
                                                prefix="bench"):
            local_today = datetime.now(timezone(timedelta(
                minutes=history.profile.utc_offset_min))).date()
            batch = []
            for record in history.days:
                if record.day > local_today:
                    continue
                events = [make_event(provider="auren", user_id=history.user_id,
                                     provider_user_id=history.user_id, metric=e["metric"],
                                     value=e["value"], unit=e["unit"],
                                     start=parse_time(e["start"]), end=parse_time(e["end"]),
                                     source_record_id=e["id"], received_at=now)
                          for e in native_events(record)]
                batch.append(Delivery("auren", f"bench-{history.user_id}-{record.day}", events))
            await store.write_batch(batch)
            out.append((history.user_id, _offset(history.profile.utc_offset_min)))
    finally:
        await store.close()
    return out


class Connection:
    """Keep-alive HTTP/1.1 POST of JSON; just enough for this bench."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._used = 0.0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        # uvicorn closes a keep-alive connection after 5 idle seconds; like any HTTP client,
        # open a new one rather than write into a socket the server is closing.
        if self._writer is not None and time.monotonic() - self._used > IDLE_REUSE_S:
            await self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        self._used = time.monotonic()
        assert self._reader is not None  # noqa: S101
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        data = await self._reader.readexactly(length)
        self._used = time.monotonic()
        return status, data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None


@dataclass
class RunResult:
    requests: int
    errors: int
    statuses: dict[str, int]
    duration_s: float
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float | None


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


async def drive(port: int, users: list[tuple[str, str]], duration_s: float,
                think_s: float) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.perf_counter() + duration_s

    async def user_loop(index: int, user_id: str, tz: str) -> None:
        conn = Connection(port)
        rng = random.Random(index)
        conversation: str | None = None
        turn = rng.randrange(len(QUESTIONS))
        if think_s:
            # Users do not start in lockstep; a burst of 50 at t=0 would be an artefact.
            await asyncio.sleep(rng.uniform(0, think_s))
        try:
            while time.perf_counter() < deadline:
                body: dict[str, Any] = {"message": QUESTIONS[turn % len(QUESTIONS)],
                                        "user_id": user_id, "timezone": tz}
                if conversation:
                    body["conversation_id"] = conversation
                turn += 1
                started = time.perf_counter()
                try:
                    status, raw = await asyncio.wait_for(conn.post("/chat", orjson.dumps(body)),
                                                         10)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] += 1
                    await conn.close()
                    conn = Connection(port)
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[str(status)] += 1
                if status == 200:
                    conversation = orjson.loads(raw)["conversation_id"]
                if think_s:
                    # Exponential think times (mean think_s): people do not pause in unison.
                    pause = min(rng.expovariate(1 / think_s), 10 * think_s)
                    await asyncio.sleep(max(0.0, min(pause, deadline - time.perf_counter())))
        finally:
            await conn.close()

    await asyncio.gather(*(user_loop(i, u, tz) for i, (u, tz) in enumerate(users)))
    return latencies, statuses


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def one_run(args: argparse.Namespace) -> RunResult:
    workdir = Path(tempfile.mkdtemp(prefix="neuros-bench-"))
    try:
        users = asyncio.run(seed(workdir / "data", args.users, args.days))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEUROS_", "AUREN_"))}
        env.update({"AUREN_DATA_DIR": str(workdir / "data"), "NEUROS_LLM": "builtin",
                    "NEUROS_RATE_PER_MINUTE": "1000000", "LOG_LEVEL": "WARNING"})
        log = (workdir / "neuros.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "auren", "serve", "neuros", "--port",
                                 str(port), "--workers", str(args.workers)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("neuros exited:\n" + (workdir / "neuros.log").read_text())
                try:
                    if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("neuros did not become ready")
                time.sleep(0.1)
            # Warm-up: imports, SQLite page cache, first conversations.
            asyncio.run(drive(port, users, 1.0, 0.0))
            cpu_before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            latencies, statuses = asyncio.run(drive(port, users, args.duration,
                                                    args.think_ms / 1000))
            elapsed = time.perf_counter() - started
            cpu_after = cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()
        ms = [s * 1000 for s in latencies]
        errors = sum(n for status, n in statuses.items() if status != "200")
        return RunResult(
            requests=len(ms) + sum(n for s, n in statuses.items() if not s.isdigit()),
            errors=errors, statuses=dict(statuses), duration_s=round(elapsed, 2),
            throughput_rps=round(len(ms) / elapsed, 1), p50_ms=round(percentile(ms, 0.50), 2),
            p95_ms=round(percentile(ms, 0.95), 2), p99_ms=round(percentile(ms, 0.99), 2),
            max_ms=round(max(ms), 2) if ms else float("nan"),
            server_cpu_s=round(cpu_after - cpu_before, 2)
            if cpu_before is not None and cpu_after is not None else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="concurrent virtual users")
    parser.add_argument("--days", type=int, default=60, help="days of data per user")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="pause of each user between an answer and its next question")
    parser.add_argument("--workers", type=int, default=1, help="NEUROS worker processes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (1 <= args.users <= 1000 and 1 <= args.days <= 365 and 1 <= args.duration <= 600
            and 1 <= args.runs <= 20 and 0 <= args.think_ms <= 60_000
            and 1 <= args.workers <= 16):
        parser.error("out of range: users 1-1000, days 1-365, duration 1-600, runs 1-20")

    print(f"NEUROS builtin chat: {args.users} users x {args.days} days, closed model, "
          f"think {args.think_ms:g} ms, {args.workers} worker(s), {args.duration:g} s x "
          f"{args.runs} runs "
          f"({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs)")
    results = []
    for number in range(1, args.runs + 1):
        result = one_run(args)
        results.append(result)
        print(f"run {number}: {result.requests} requests, {result.throughput_rps} req/s, "
              f"p50 {result.p50_ms} ms, p95 {result.p95_ms} ms, p99 {result.p99_ms} ms, "
              f"max {result.max_ms} ms, errors {result.errors} {result.statuses}, "
              f"server CPU {result.server_cpu_s} s")
    p95 = statistics.median(r.p95_ms for r in results)
    p50 = statistics.median(r.p50_ms for r in results)
    p99 = statistics.median(r.p99_ms for r in results)
    errors = sum(r.errors for r in results)
    ok = p95 < TARGET_P95_MS and errors == 0
    print(f"median of {args.runs}: p50 {p50} ms, p95 {p95} ms, p99 {p99} ms, errors {errors}")
    print(f"verdict: {'PASS' if ok else 'FAIL'} target p95 < {TARGET_P95_MS:g} ms "
          f"(SLA p95 < {SLA_P95_MS:g} ms: {'PASS' if p95 < SLA_P95_MS else 'FAIL'})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": [asdict(r) for r in results],
                                         "median_p95_ms": p95, "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
