"""The real full stack for tests: Kafka, PostgreSQL and Redis started with ``auren.infra``.

``full_stack`` (a session fixture, see ``tests/conftest.py``) brings up a private stack on free
loopback ports in a temporary data dir and tears it down at the end, or, when
``AUREN_TEST_INFRA_DATA_DIR`` names the data dir of a stack that CI (``.ci/run``) already
started, uses that one (ports from ``AUREN_*_PORT``) and leaves it running. Either way every
test isolates itself: a fresh PostgreSQL database, its own Kafka topics and consumer group, its
own Redis key prefix (:meth:`FullStack.isolated`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from auren import infra
from auren.infra import InfraConfig
from auren.infra.base import PG_USER, run_async
from auren.settings import Settings

START_TIMEOUT_S = 180.0
TEST_ENCRYPTION_KEY = "dGVzdC1vbmx5LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="
CI_DATA_DIR_ENV = "AUREN_TEST_INFRA_DATA_DIR"


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.add(int(sock.getsockname()[1]))
    return sorted(ports)


@dataclass
class FullStack:
    cfg: InfraConfig
    owned: bool
    databases: list[str] = field(default_factory=list)

    @property
    def urls(self) -> dict[str, str]:
        return infra.connection_env(self.cfg)

    def ensure_up(self) -> None:
        """After a fault test: every server running and answering again."""
        infra.up(self.cfg, timeout=START_TIMEOUT_S, write_env=False)

    def _admin(self, statement: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(host=str(infra.postgres_admin_socket(self.cfg)),
                                         port=self.cfg.postgres_port, user="postgres",
                                         database="postgres", timeout=10)
            try:
                await conn.execute(statement, timeout=30)
            finally:
                await conn.close(timeout=10)

        run_async(run, 60)

    def new_database(self) -> str:
        """A fresh, empty database owned by the app's role; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name} OWNER {PG_USER}")
        self.databases.append(name)
        return self.urls["POSTGRES_URL"].rsplit("/", 1)[0] + "/" + name

    def lose_database(self, url: str) -> None:
        """What losing PostgreSQL's data looks like to AUREN: the database of ``url`` dropped
        (its connections cut) and created again empty, under the same name and owner."""
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        assert name in self.databases, "only a database this stack made for a test"
        self._admin(f"DROP DATABASE {name} WITH (FORCE)")
        self._admin(f"CREATE DATABASE {name} OWNER {PG_USER}")

    def drop_databases(self) -> None:
        for name in self.databases:
            try:
                self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception as exc:  # noqa: BLE001 - best-effort clean-up of a shared stack
                print(f"could not drop {name}: {exc}")
        self.databases.clear()

    def isolated(self, **overrides: Any) -> dict[str, str]:
        """Environment for services under test: this stack, with a database, topics, a
        consumer group and a Redis prefix of their own."""
        tag = uuid.uuid4().hex[:10]
        env = {
            "POSTGRES_URL": self.new_database(),
            "REDIS_URL": self.urls["REDIS_URL"],
            "KAFKA_BOOTSTRAP_SERVERS": self.urls["KAFKA_BOOTSTRAP_SERVERS"],
            "KAFKA_EVENTS_TOPIC": f"events-{tag}",
            "KAFKA_NOTIFICATIONS_TOPIC": f"notifications-{tag}",
            "KAFKA_SINK_GROUP": f"sink-{tag}",
            "KAFKA_PARTITIONS": "3",
            "REDIS_KEY_PREFIX": f"t:{tag}:",
            # Required beside a full stack: the OAuth tokens are encrypted with it.
            "AUREN_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        }
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    def settings(self, **overrides: Any) -> Settings:
        env = self.isolated(**overrides)
        return Settings.model_validate({k.lower(): v for k, v in env.items()})


def _running_config(data_dir: Path) -> InfraConfig:
    """The config of the stack `auren infra up` started in ``data_dir``: its ports come from
    what ``up`` recorded, so CI needs to pass the data dir only (and no URL or port variable
    leaks into the settings of the tests that expect the embedded defaults)."""
    probe = InfraConfig(data_dir=data_dir)
    ports: dict[str, int] = {}
    for name in infra.SERVER_NAMES:
        record = infra.read_record(probe, name)
        if record is None:
            raise RuntimeError(f"{CI_DATA_DIR_ENV}={data_dir}: no {name} started there by "
                               "`auren infra up`")
        ports.update(record.ports)
    return InfraConfig(data_dir=data_dir, kafka_port=ports["broker"],
                       kafka_controller_port=ports["controller"],
                       postgres_port=ports["postgres"], redis_port=ports["redis"],
                       # Generated and kept in the data dir unless CI chose one.
                       postgres_password=os.environ.get("AUREN_POSTGRES_PASSWORD") or None)


def start_stack() -> Iterator[FullStack]:
    ci_dir = os.environ.get(CI_DATA_DIR_ENV)
    if ci_dir:
        cfg = _running_config(Path(ci_dir))
        stack = FullStack(cfg, owned=False)
        stack.ensure_up()
        try:
            yield stack
        finally:
            stack.drop_databases()
        return
    # PostgreSQL runs as another user and must reach its data dir: pytest's tmp dirs are 0700.
    base = Path(tempfile.mkdtemp(prefix="auren-stack-", dir="/tmp"))
    base.chmod(0o755)
    kafka, controller, postgres, redis_port = _free_ports(4)
    cfg = InfraConfig(data_dir=base / "data", kafka_port=kafka,
                      kafka_controller_port=controller, postgres_port=postgres,
                      redis_port=redis_port)
    stack = FullStack(cfg, owned=True)
    try:
        infra.up(cfg, timeout=START_TIMEOUT_S, write_env=False)
        yield stack
    finally:
        try:
            infra.down(cfg, timeout=30)
        finally:
            shutil.rmtree(base, ignore_errors=True)


# --- processes and queries the full-stack tests share ----------------------------------------


def service_env(extra: dict[str, str], data_dir: Path) -> dict[str, str]:
    """A child's environment: ours without any AUREN data-plane URL or secret, plus ``extra``."""
    from tests.helpers import NATIVE_SECRET

    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_SECRET", "_URL", "_KEYS", "_SERVERS", "_TOKEN", "_CODE",
                              "_CLIENT_ID", "_IPS"))}
    env.update({"AUREN_DATA_DIR": str(data_dir), "STANDARD_WEBHOOK_SECRET": NATIVE_SECRET,
                "LOG_LEVEL": "INFO"})
    env.update(extra)
    return env


@dataclass
class SinkProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: the batch in hand is committed), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def wait_started(self, timeout: float = 90.0) -> None:
        """Until the sink has opened its stores and subscribed ("sink started")."""
        deadline = time.monotonic() + timeout
        while '"sink started"' not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"the sink exited at start-up:\n{self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sink did not start within {timeout:.0f} s")
            time.sleep(0.1)


def start_sink(env: dict[str, str], log_dir: Path, name: str = "sink") -> SinkProcess:
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "auren", "sink"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    return SinkProcess(process, log_path)


def pg_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args, timeout=30)]
        finally:
            await conn.close(timeout=10)

    return run_async(run, 60)


def record_counts(url: str, prefix: str) -> dict[str, int]:
    """How many rows each source record id (of users starting with ``prefix``) has."""
    rows = pg_fetch(url, "SELECT source_record_id, count(*) FROM biometric_events "
                         "WHERE user_id LIKE $1 GROUP BY 1", prefix + "%")
    return {str(r[0]): int(r[1]) for r in rows}


def wait_for_records(url: str, prefix: str, expected: set[str], *, timeout: float = 60.0,
                     settle: float = 2.0) -> dict[str, int]:
    """Poll until every expected record id is stored and the count stopped moving for
    ``settle`` seconds (so late duplicates would show); returns the final counts."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        counts = record_counts(url, prefix)
        if counts != last:
            last, stable_since = counts, time.monotonic()
        elif expected <= set(counts) and time.monotonic() - stable_since >= settle:
            return counts
        time.sleep(0.25)
    return last


def untraced(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the variables that make a Python process start the suite's coverage
    measurement (``[tool.coverage.run] patch = subprocess``) set empty, which coverage reads
    as unset (an empty value also overrides ours in ``service_env``): for processes whose
    speed a test measures."""
    return {**env, "COVERAGE_PROCESS_CONFIG": "", "COVERAGE_PROCESS_START": ""}


@dataclass
class LoadResult:
    """What each webhook was answered: status code, or the transport error's name."""

    answers: dict[int, int | str] = field(default_factory=dict)
    records: dict[int, list[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # (seconds from the load's start to the send, latency) of each answer, in answer order.
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def slowest(self, n: int = 10) -> list[tuple[float, float]]:
        """The ``n`` slowest answers as (sent at, latency): when in the load the waits were."""
        return sorted(self.timeline, key=lambda t: -t[1])[:n]

    def record_ids(self, *, ok: bool) -> set[str]:
        """The record ids of webhooks answered 2xx (``ok``) or anything else."""
        return {r for i, answer in self.answers.items()
                if (isinstance(answer, int) and 200 <= answer < 300) == ok
                for r in self.records[i]}

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for answer in self.answers.values():
            counts[answer] = counts.get(answer, 0) + 1
        return counts


async def send_load(base_url: str, prefix: str, count: int, *, rate: float,
                    concurrency: int = 50, events: int = 2, users: int = 20,
                    timeout_s: float = 30.0,
                    on_start: Callable[[], None] | None = None) -> LoadResult:
    """``count`` unique signed native webhooks at ``rate`` per second (an open model: the
    schedule does not wait for answers), each of ``events`` events with known record ids."""
    import httpx

    from tests.helpers import native_body, native_headers

    result = LoadResult()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits,
                                 timeout=httpx.Timeout(timeout_s)) as client:
        async def one(i: int) -> None:
            records = [f"{prefix}-r{i}-{k}" for k in range(events)]
            result.records[i] = records
            body = native_body(f"{prefix}-u{i % users}", [
                {"metric": "heart_rate", "value": 50 + (i + k) % 40, "unit": "/min",
                 "start": f"2026-11-{1 + (i + k) % 25:02d}T{(i // 60) % 24:02d}:"
                          f"{i % 60:02d}:{k:02d}Z", "id": record}
                for k, record in enumerate(records)])
            async with gate:
                started = time.monotonic()
                try:
                    response = await client.post("/webhooks/auren", content=body,
                                                 headers=native_headers(body))
                    result.answers[i] = response.status_code
                except httpx.HTTPError as exc:
                    result.answers[i] = type(exc).__name__
                latency = time.monotonic() - started
                result.latencies.append(latency)
                result.timeline.append((started - begin_monotonic, latency))

        loop = asyncio.get_running_loop()
        begin = loop.time()
        begin_monotonic = time.monotonic()
        if on_start is not None:
            on_start()
        tasks = []
        for i in range(count):
            delay = begin + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return result


def check_exactly_once(url: str, prefix: str, load: LoadResult, *,
                       timeout: float = 90.0) -> dict[str, int]:
    """K9: every record of a webhook answered 2xx is in PostgreSQL exactly once, and no
    record at all is there twice. Returns the counts for further checks."""
    accepted = load.record_ids(ok=True)
    counts = wait_for_records(url, prefix, accepted, timeout=timeout)
    missing = accepted - set(counts)
    assert not missing, f"LOST: {len(missing)} records answered 2xx are not stored " \
                        f"(e.g. {sorted(missing)[:5]})"
    twice = {r: n for r, n in counts.items() if n != 1}
    assert not twice, f"{len(twice)} records stored more than once: {list(twice.items())[:5]}"
    unexpected = set(counts) - accepted - load.record_ids(ok=False)
    assert not unexpected, f"{len(unexpected)} stored records were never sent"
    return counts


@dataclass
class BridgeProcess:
    """``auren serve bridge`` on a fixed port and data dir, so that it can be killed and
    started again on both (what it spooled must be replayed by its successor)."""

    env: dict[str, str]
    data_dir: Path
    log_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        if not self.port:
            self.port = _free_ports(1)[0]
        env = service_env(self.env, self.data_dir)
        log_path = self.log_dir / f"bridge-{self.port}-{len(self.logs)}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "auren", "serve", "bridge", "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge exited early:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge not ready in {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        """The end of each log (for a failure's message)."""
        return "\n".join(p.read_text(errors="replace")[-20000:] for p in self.logs)

    def full_log(self) -> str:
        """Every log line (one access line per request: a searched line can be far back)."""
        return "\n".join(p.read_text(errors="replace") for p in self.logs)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def health(self) -> dict[str, Any]:
        import httpx

        body: dict[str, Any] = httpx.get(self.base_url + "/health", timeout=10).json()
        return body

    def metric(self, name: str) -> dict[str, float]:
        """Every sample of one Prometheus metric: {label text: value}."""
        import httpx

        samples = {}
        for line in httpx.get(self.base_url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(name):
                labels, _, value = line[len(name):].rpartition(" ")
                samples[labels] = float(value)
        return samples
