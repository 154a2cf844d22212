"""``auren infra up --fault-proxy``: the fault proxy between clients and real Kafka, PostgreSQL
and Redis. Kafka must keep proxied clients on the proxy after bootstrap (its second listener),
toxics must act on each server's real protocol, and ``down`` must stop the proxy too."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from confluent_kafka import KafkaException

from auren.ops import faultproxy
from tests.ops.helpers import ROOT

pytestmark = pytest.mark.slow


def _consecutive_free(n: int) -> int:
    """A base port with ``n`` free ports from it on (the proxy's routes follow its control),
    below Linux's ephemeral range so that no outgoing connection takes one meanwhile."""
    low, _ = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
              .split())
    for _ in range(200):
        base = random.randint(20_000, min(low, 32_768) - n)
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    base_dir = Path(tempfile.mkdtemp(prefix="auren-fp-", dir="/tmp"))
    base_dir.chmod(0o755)  # PostgreSQL runs as its own user
    servers = _consecutive_free(9)
    proxy = servers + 4
    env = {**{k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_SERVERS"))},
           "AUREN_DATA_DIR": str(base_dir / "data"), "AUREN_KAFKA_PORT": str(servers),
           "AUREN_KAFKA_CONTROLLER_PORT": str(servers + 1),
           "AUREN_POSTGRES_PORT": str(servers + 2), "AUREN_REDIS_PORT": str(servers + 3),
           "AUREN_FAULT_PROXY_PORT": str(proxy)}
    up = subprocess.run([sys.executable, "-m", "auren", "infra", "up", "--fault-proxy"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                        check=False)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in up.stdout.splitlines() if line.startswith("export "))
        yield env, {k: v.strip("'") for k, v in exports.items()}
    finally:
        down = subprocess.run([sys.executable, "-m", "auren", "infra", "down"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=180,
                              check=False)
        shutil.rmtree(base_dir, ignore_errors=True)
    assert "faultproxy stopped" in down.stdout, down.stdout + down.stderr
    with pytest.raises(httpx.TransportError):  # the proxy is gone with the stack
        httpx.get(f"http://127.0.0.1:{proxy}/health", timeout=2)


def _kafka_broker_port(bootstrap: str, timeout: float = 5.0) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                         "socket.timeout.ms": int(timeout * 1000)})
    brokers = admin.list_topics(timeout=timeout).brokers
    return int(next(iter(brokers.values())).port)


def test_exports_go_through_the_proxy_and_kafka_keeps_proxied_clients_on_it(
        stack: tuple[dict[str, str], dict[str, str]]) -> None:
    env, exports = stack
    proxy = int(env["AUREN_FAULT_PROXY_PORT"])
    assert exports["AUREN_FAULT_PROXY_URL"] == f"http://127.0.0.1:{proxy}"
    assert exports["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{proxy + 1}"
    assert f"@127.0.0.1:{proxy + 2}/" in exports["POSTGRES_URL"]
    assert exports["REDIS_URL"] == f"redis://127.0.0.1:{proxy + 3}/0"
    # After bootstrap a Kafka client uses the address the broker advertises: the proxy's for
    # clients that came through it, the broker's own for the others.
    assert _kafka_broker_port(exports["KAFKA_BOOTSTRAP_SERVERS"]) == proxy + 1
    direct = f"127.0.0.1:{env['AUREN_KAFKA_PORT']}"
    assert _kafka_broker_port(direct) == int(env["AUREN_KAFKA_PORT"])


def test_toxics_act_on_each_servers_protocol(
        stack: tuple[dict[str, str], dict[str, str]]) -> None:
    env, exports = stack
    control = faultproxy.Client(exports["AUREN_FAULT_PROXY_URL"])
    try:
        control.reset()
        assert set(control.routes()) == {"kafka", "postgres", "redis"}
        # Kafka partitioned: the proxied client gets no metadata, the direct one does.
        control.add_toxic("kafka", "timeout", stream="upstream", timeout=0)
        with pytest.raises(KafkaException):
            _kafka_broker_port(exports["KAFKA_BOOTSTRAP_SERVERS"], timeout=2.0)
        assert _kafka_broker_port(f"127.0.0.1:{env['AUREN_KAFKA_PORT']}") > 0
        control.reset()
        assert _kafka_broker_port(exports["KAFKA_BOOTSTRAP_SERVERS"]) > 0

        # PostgreSQL slowed: every round trip pays the latency.
        async def select_one() -> float:
            conn = await asyncpg.connect(exports["POSTGRES_URL"], timeout=10)
            try:
                started = time.perf_counter()
                assert await conn.fetchval("SELECT 1") == 1
                return time.perf_counter() - started
            finally:
                await conn.close()

        assert asyncio.run(select_one()) < 0.2
        control.add_toxic("postgres", "latency", latency=300)
        assert asyncio.run(select_one()) >= 0.29
        control.reset()

        # Redis reset: the client sees its connection reset.
        client = redis.Redis.from_url(exports["REDIS_URL"], socket_timeout=2)
        assert client.ping()
        control.add_toxic("redis", "reset_peer", timeout=0)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        control.reset()
        assert client.ping()
        client.close()
    finally:
        control.reset()
        control.close()


def test_up_again_keeps_the_placement(stack: tuple[dict[str, str], dict[str, str]]) -> None:
    env, exports = stack
    again = subprocess.run([sys.executable, "-m", "auren", "infra", "up"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"export KAFKA_BOOTSTRAP_SERVERS={exports['KAFKA_BOOTSTRAP_SERVERS']}" in again.stdout
    assert httpx.get(exports["AUREN_FAULT_PROXY_URL"] + "/health", timeout=5).status_code == 200
