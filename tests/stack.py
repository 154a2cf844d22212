"""The real full stack for tests: Kafka, PostgreSQL and Redis started with ``auren.infra``.

``full_stack`` (a session fixture, see ``tests/conftest.py``) brings up a private stack on free
loopback ports in a temporary data dir and tears it down at the end, or, when
``AUREN_TEST_INFRA_DATA_DIR`` names the data dir of a stack that CI (``.ci/run``) already
started, uses that one (ports from ``AUREN_*_PORT``) and leaves it running. Either way every
test isolates itself: a fresh PostgreSQL database, its own Kafka topics and consumer group, its
own Redis key prefix (:meth:`FullStack.isolated`).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from auren import infra
from auren.infra import InfraConfig
from auren.infra_base import PG_USER, run_async
from auren.settings import Settings

START_TIMEOUT_S = 180.0
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
        }
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    def settings(self, **overrides: Any) -> Settings:
        env = self.isolated(**overrides)
        return Settings.model_validate({k.lower(): v for k, v in env.items()})


def start_stack() -> Iterator[FullStack]:
    ci_dir = os.environ.get(CI_DATA_DIR_ENV)
    if ci_dir:
        cfg = InfraConfig.from_settings(Settings(), data_dir=Path(ci_dir))
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
