"""``auren infra``: real Kafka, PostgreSQL and Redis on the loopback.

The fast tests check the generated configs and the pid bookkeeping without servers. The slow
ones bring the whole stack up in a temporary data dir on free ports (never the defaults: CI may
run its own stack there at the same time), ask each server a real question, crash and restart
servers the way the fault tests will, and end with `down` leaving no process behind. The
fixture's teardown runs `down` whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from auren.infra import InfraConfig, InfraError
from auren.infra import stack as infra
from auren.infra.base import SpawnSpec, run_async
from auren.infra.servers import (
    KafkaServer,
    PostgresServer,
    RedisServer,
    kafka_version,
    new_cluster_id,
    sql_literal,
)
from auren.settings import Settings
from tests.helpers import free_port

# --- without servers -----------------------------------------------------------------------------


def _cfg(tmp_path: Path, **kw: object) -> InfraConfig:
    return InfraConfig(data_dir=tmp_path / "data", **kw)  # type: ignore[arg-type]


def test_config_comes_from_settings_and_options_win(monkeypatch, tmp_path):
    monkeypatch.setenv("AUREN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("AUREN_KAFKA_PORT", "19092")
    monkeypatch.setenv("AUREN_POSTGRES_PORT", "15432")
    monkeypatch.setenv("AUREN_REDIS_PORT", "16379")
    monkeypatch.setenv("AUREN_POSTGRES_PASSWORD", "s3cret")
    cfg = InfraConfig.from_settings(Settings(), redis_port=16380, kafka_port=None)
    assert cfg.data_dir == (tmp_path / "d").resolve()
    assert (cfg.kafka_port, cfg.kafka_controller_port) == (19092, 9093)
    assert (cfg.postgres_port, cfg.redis_port) == (15432, 16380)
    assert cfg.postgres_password == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_defaults_are_the_well_known_ports(monkeypatch):
    for var in ("AUREN_KAFKA_PORT", "AUREN_POSTGRES_PORT", "AUREN_REDIS_PORT"):
        monkeypatch.delenv(var, raising=False)
    cfg = InfraConfig.from_settings(Settings())
    assert (cfg.kafka_port, cfg.postgres_port, cfg.redis_port) == (9092, 5432, 6379)


def test_ports_must_differ(tmp_path):
    with pytest.raises(InfraError, match="differ"):
        _cfg(tmp_path, kafka_port=7000, redis_port=7000)


def test_the_pom_names_a_kafka_4_release():
    assert kafka_version().startswith("4.")


def test_cluster_id_is_what_kafka_storage_expects():
    cid = new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert new_cluster_id() != cid


def test_a_cluster_id_never_begins_with_a_dash():
    # One draw in 64 would: the storage tool's parser then took it for an option (seen in CI).
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_kafka_config_is_a_single_loopback_kraft_node(tmp_path):
    cfg = _cfg(tmp_path, kafka_port=19092, kafka_controller_port=19093)
    props = dict(line.split("=", 1) for line in KafkaServer(cfg).server_properties().splitlines()
                 if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "min.insync.replicas"):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"].startswith(str(cfg.infra_dir))


def test_redis_config_is_loopback_and_inside_the_data_dir(tmp_path):
    cfg = _cfg(tmp_path, redis_port=16379)
    conf = RedisServer(cfg).conf().splitlines()
    for line in ("bind 127.0.0.1", "port 16379", "protected-mode yes", "daemonize no",
                 "appendonly no", f"dir {cfg.infra_dir / 'redis'}"):
        assert line in conf


def test_postgres_config_url_and_password(tmp_path):
    cfg = _cfg(tmp_path, postgres_port=15432, postgres_password="p@ss:/w'rd")
    server = PostgresServer(cfg)
    conf = server.conf()
    assert "listen_addresses = '127.0.0.1'" in conf and "fsync = on" in conf
    assert f"unix_socket_directories = '{server.run_dir}'" in conf
    assert server.url() == ("postgresql://auren:p%40ss%3A%2Fw%27rd@127.0.0.1:15432/"
                            "auren_production")
    assert sql_literal("it's") == "'it''s'"
    with pytest.raises(InfraError):
        sql_literal("a\x00b")


def test_generated_password_is_kept_private_and_stable(tmp_path):
    server = PostgresServer(_cfg(tmp_path))
    first = server.password()
    assert len(first) >= 20 and server.password() == first
    mode = stat.S_IMODE((server.dir / "password").stat().st_mode)
    assert mode == 0o600


def test_env_file_is_sourceable_and_private(tmp_path):
    cfg = _cfg(tmp_path, kafka_port=19092, postgres_port=15432, redis_port=16379,
               postgres_password="pw with space")
    path = infra.write_env_file(cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = subprocess.run(
        ["bash", "-c", f'. "{path}"; echo "$POSTGRES_URL|$REDIS_URL|$KAFKA_BOOTSTRAP_SERVERS"'],
        capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    assert out == ("postgresql://auren:pw%20with%20space@127.0.0.1:15432/auren_production|"
                   "redis://127.0.0.1:16379/0|127.0.0.1:19092")


def _answer() -> Coroutine[Any, Any, str]:
    return asyncio.sleep(0.01, "x")


async def test_probes_also_run_from_inside_an_event_loop():
    # The fault tests may be async; the asyncpg probes then run on a thread of their own.
    assert run_async(_answer, 5) == "x"


def test_probes_run_from_plain_code():
    assert run_async(_answer, 5) == "x"


def test_a_recycled_pid_is_never_signalled(tmp_path):
    """A record naming a live pid with another start time (the kernel reused the pid) is a
    stale record: not running, not signalled, and `down` leaves that process alone."""
    cfg = _cfg(tmp_path)
    me = infra._stat(os.getpid())
    assert me is not None
    (cfg.server_dir("redis")).mkdir(parents=True)
    infra._write_record(cfg, "redis", infra.ProcessRecord(
        pid=os.getpid(), starttime=me.starttime + 1, ports={"redis": 6379}, version="x",
        started_at=""))
    assert infra.running_pid(cfg, "redis") is None
    assert infra.status(cfg, ["redis"])[0].state == "not running"
    with pytest.raises(InfraError, match="not running"):
        infra.kill_server(cfg, "redis", signal.SIGTERM)
    assert infra.down(cfg, ["redis"])[0].action == "not running"
    assert not (cfg.server_dir("redis") / "state.json").exists()


def test_a_server_left_running_at_exit_draws_no_warning(tmp_path):
    """Servers outlive the process that started them by design (`down` stops them later), so
    exiting with one running is not Python's "subprocess is still running" mistake."""
    code = ("import sys; from pathlib import Path; from auren.infra import stack; "
            "from auren.infra.base import SpawnSpec; d = Path(sys.argv[1]); "
            "print(stack._spawn(SpawnSpec(argv=['sleep', '30'], cwd=d, log=d / 'out.log')))")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    pid = int(done.stdout.strip())
    try:
        assert done.returncode == 0, done.stderr
        assert "ResourceWarning" not in done.stderr
        assert infra._stat(pid) is not None, "the server was stopped, not left running"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_stop_is_graceful_then_kills(tmp_path):
    """The stop path on plain processes: one that exits on SIGTERM, one that ignores it."""
    cfg = _cfg(tmp_path)
    server_dir = cfg.server_dir("redis")
    server_dir.mkdir(parents=True)
    for script, expected in (("sleep 60", "stopped"),
                             ("trap '' TERM; sleep 60 & wait; sleep 60", "killed")):
        pid = infra._spawn(SpawnSpec(argv=["bash", "-c", script], cwd=server_dir,
                                     log=server_dir / "stdout.log"))
        time.sleep(0.2)  # let bash install its trap
        proc = infra._stat(pid)
        assert proc is not None
        infra._write_record(cfg, "redis", infra.ProcessRecord(
            pid=pid, starttime=proc.starttime, ports={"redis": 6379}, version="",
            started_at=""))
        assert infra.running_pid(cfg, "redis") == pid
        started = time.monotonic()
        assert infra.stop_server(cfg, "redis", timeout=1.0) == expected
        assert time.monotonic() - started < 15
        assert infra.running_pid(cfg, "redis") is None
        assert not _processes_under(server_dir)


# --- the real stack ------------------------------------------------------------------------------

HEALTHY_TIMEOUT_S = 60.0


@dataclass
class Stack:
    cfg: InfraConfig
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "auren", "infra", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def urls(self) -> dict[str, str]:
        return infra.connection_env(self.cfg)


def _processes_under(path: Path) -> list[int]:
    """Live processes whose working directory is inside ``path``: every server process (and
    every PostgreSQL backend) works in its dir under <data>/infra."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").readlink()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and (cwd == path or path in cwd.parents):
            found.append(int(entry.name))
    return found


def _unique_free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # PostgreSQL runs as another user and must reach its data dir: pytest's tmp dirs are 0700,
    # so the stack lives in a world-searchable dir of its own.
    base = Path(tempfile.mkdtemp(prefix="auren-infra-test-", dir="/tmp"))
    base.chmod(0o755)
    kafka, controller, postgres, redis_port = _unique_free_ports(4)
    cfg = InfraConfig(data_dir=base / "data", kafka_port=kafka,
                      kafka_controller_port=controller, postgres_port=postgres,
                      redis_port=redis_port)
    env = {**os.environ, "AUREN_DATA_DIR": str(cfg.data_dir), "AUREN_KAFKA_PORT": str(kafka),
           "AUREN_KAFKA_CONTROLLER_PORT": str(controller),
           "AUREN_POSTGRES_PORT": str(postgres), "AUREN_REDIS_PORT": str(redis_port)}
    try:
        yield Stack(cfg, env)
    finally:
        try:
            infra.down(cfg, timeout=30)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _kafka_round_trip(bootstrap: str, topic: str, payload: bytes,
                      timeout: float = 30.0) -> list[bytes]:
    """Create ``topic`` if needed, produce ``payload`` (acks=all, idempotent) and read the
    partition from the start; returns every value read up to and including ``payload``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=timeout).topics:
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=timeout)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": int(timeout * 1000)})
    errors: list[object] = []
    producer.produce(topic, value=payload, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(timeout) == 0
    assert errors == [None]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout
        while payload not in seen:
            assert time.monotonic() < deadline, f"did not read back {payload!r}; saw {seen}"
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None:
                seen.append(value)
        return seen
    finally:
        consumer.close()


def _postgres(url: str, *statements: str) -> list[object]:
    """Run statements in one connection; returns the first column of each one's first row."""
    async def run() -> list[object]:
        conn = await asyncpg.connect(url, timeout=10, ssl=False)
        try:
            return [await conn.fetchval(sql, timeout=10) for sql in statements]
        finally:
            await conn.close(timeout=10)

    return asyncio.run(asyncio.wait_for(run(), 30))


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _actions(down_output: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in down_output.splitlines())


def _status_json(stack: Stack) -> dict[str, dict[str, object]]:
    done = stack.cli("status", "--json", timeout=60)
    return {item["name"]: item for item in json.loads(done.stdout)}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first `up` of a machine installs packages and fetches Kafka
def test_cli_up_starts_the_three_servers_and_prints_the_urls(stack):
    done = stack.cli("up", timeout=1100)
    assert done.returncode == 0, done.stderr
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in done.stdout.splitlines())
    assert exports == stack.urls()
    assert exports["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{stack.cfg.kafka_port}"
    assert exports["REDIS_URL"] == f"redis://127.0.0.1:{stack.cfg.redis_port}/0"
    assert exports["POSTGRES_URL"].startswith("postgresql://auren:")
    assert exports["POSTGRES_URL"].endswith(f"@127.0.0.1:{stack.cfg.postgres_port}/"
                                            "auren_production")
    assert stack.cfg.env_file.is_file()
    assert done.stderr.count("[started]") == 3
    for name in infra.SERVER_NAMES:
        pid = int((stack.cfg.server_dir(name) / f"{name}.pid").read_text())
        assert infra.running_pid(stack.cfg, name) == pid


@pytest.mark.slow
def test_each_server_answers_a_real_round_trip(stack):
    urls = stack.urls()
    seen = _kafka_round_trip(urls["KAFKA_BOOTSTRAP_SERVERS"], "auren-infra-test", b"first")
    assert seen == [b"first"]
    assert _postgres(urls["POSTGRES_URL"], "SELECT 1",
                     "CREATE TABLE IF NOT EXISTS infra_probe (id int PRIMARY KEY, v text)",
                     "INSERT INTO infra_probe VALUES (1, 'kept') ON CONFLICT DO NOTHING",
                     "SELECT v FROM infra_probe WHERE id = 1",
                     "SELECT current_user || '@' || current_database()") == [
        1, None, None, "kept", "auren@auren_production"]
    client = _redis(urls["REDIS_URL"])
    try:
        assert client.set("auren:infra:test", "v", ex=60)
        assert client.get("auren:infra:test") == b"v"
    finally:
        client.close()


@pytest.mark.slow
def test_up_again_is_idempotent(stack):
    before = {n: infra.running_pid(stack.cfg, n) for n in infra.SERVER_NAMES}
    started = time.monotonic()
    statuses = infra.up(stack.cfg, timeout=HEALTHY_TIMEOUT_S)
    assert time.monotonic() - started < 30
    assert {s.name: s.action for s in statuses} == dict.fromkeys(infra.SERVER_NAMES,
                                                                  "already running")
    assert {s.name: s.pid for s in statuses} == before
    assert {n: infra.running_pid(stack.cfg, n) for n in infra.SERVER_NAMES} == before


@pytest.mark.slow
def test_status_reports_pid_round_trip_and_version(stack):
    status = _status_json(stack)
    assert set(status) == set(infra.SERVER_NAMES)
    for name, item in status.items():
        assert item["state"] == "running", item
        assert item["answering"] is True, item
        assert item["pid"] == infra.running_pid(stack.cfg, name)
        assert isinstance(item["rtt_ms"], float) and 0 < item["rtt_ms"] < 5000
    assert str(status["kafka"]["version"]) == f"Kafka {kafka_version()}"
    assert str(status["postgres"]["version"]).startswith("PostgreSQL ")
    assert "timescaledb" in str(status["postgres"]["detail"])
    assert str(status["redis"]["version"]).startswith("Redis ")
    text = stack.cli("status", timeout=60)
    assert text.returncode == 0
    assert text.stdout.count("answering in") == 3


@pytest.mark.slow
def test_kill_9_kafka_then_up_restarts_it_on_the_same_data(stack):
    old = infra.kill_server(stack.cfg, "kafka")
    assert infra.running_pid(stack.cfg, "kafka") is None
    status = infra.status(stack.cfg)
    assert [s.state for s in status] == ["not running", "running", "running"]
    assert stack.cli("status", timeout=60).returncode == 1
    statuses = {s.name: s for s in infra.up(stack.cfg, timeout=HEALTHY_TIMEOUT_S)}
    assert statuses["kafka"].action == "started" and statuses["kafka"].pid != old
    assert statuses["postgres"].action == statuses["redis"].action == "already running"
    # The record acknowledged before the crash survived it.
    seen = _kafka_round_trip(stack.urls()["KAFKA_BOOTSTRAP_SERVERS"], "auren-infra-test",
                             b"after-kill")
    assert seen == [b"first", b"after-kill"]


@pytest.mark.slow
def test_sigstop_kafka_stops_answering_until_sigcont(stack):
    pid = infra.pause_server(stack.cfg, "kafka")
    try:
        started = time.monotonic()
        (kafka,) = infra.status(stack.cfg, ["kafka"], timeout=2)
        assert time.monotonic() - started < 5
        assert (kafka.state, kafka.answering, kafka.pid) == ("paused", False, pid)
    finally:
        infra.resume_server(stack.cfg, "kafka")
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while not infra.status(stack.cfg, ["kafka"])[0].answering:
        assert time.monotonic() < deadline, "kafka did not answer again after SIGCONT"
        time.sleep(0.5)
    assert infra.running_pid(stack.cfg, "kafka") == pid


@pytest.mark.slow
def test_restart_postgres_keeps_its_data(stack):
    old = infra.running_pid(stack.cfg, "postgres")
    restarted = infra.restart_server(stack.cfg, "postgres", timeout=HEALTHY_TIMEOUT_S)
    assert restarted.answering and restarted.pid not in (None, old)
    assert _postgres(stack.urls()["POSTGRES_URL"],
                     "SELECT v FROM infra_probe WHERE id = 1") == ["kept"]
    # A crash too: kill -9 the postmaster, whose backends linger a moment; `up` copes.
    infra.kill_server(stack.cfg, "postgres")
    (again,) = infra.up(stack.cfg, ["postgres"], timeout=HEALTHY_TIMEOUT_S)
    assert again.action == "started" and again.answering
    assert _postgres(stack.urls()["POSTGRES_URL"],
                     "SELECT v FROM infra_probe WHERE id = 1") == ["kept"]


@pytest.mark.slow
def test_kill_redis_then_up_brings_it_back(stack):
    old = infra.kill_server(stack.cfg, "redis")
    (redis_status,) = infra.up(stack.cfg, ["redis"], timeout=HEALTHY_TIMEOUT_S)
    assert redis_status.action == "started" and redis_status.pid != old
    client = _redis(stack.urls()["REDIS_URL"])
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.slow
def test_down_stops_everything_and_leaves_no_process(stack):
    pids = [infra.running_pid(stack.cfg, n) for n in infra.SERVER_NAMES]
    assert all(pids) and _processes_under(stack.cfg.infra_dir)
    done = stack.cli("down", timeout=200)
    assert done.returncode == 0, done.stderr
    assert _actions(done.stdout) == dict.fromkeys(infra.SERVER_NAMES, "stopped")
    assert _processes_under(stack.cfg.infra_dir) == []
    for name, pid in zip(infra.SERVER_NAMES, pids, strict=True):
        assert infra.running_pid(stack.cfg, name) is None
        proc = infra._stat(pid) if pid else None
        assert proc is None or proc.state in ("Z", "X"), (name, pid)
    for port in (stack.cfg.kafka_port, stack.cfg.kafka_controller_port,
                 stack.cfg.postgres_port, stack.cfg.redis_port):
        with socket.create_server(("127.0.0.1", port)):
            pass  # free again
    assert [s.state for s in infra.status(stack.cfg)] == ["not running"] * 3
    assert _actions(stack.cli("down", timeout=60).stdout) == dict.fromkeys(
        infra.SERVER_NAMES, "not running")
