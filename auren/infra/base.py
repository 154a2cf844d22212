"""Shared pieces of ``auren infra``: its configuration, its error, and bounded subprocess helpers.

Split out so that the server definitions (:mod:`auren.infra.servers`) and the orchestration
(:mod:`auren.infra.stack`) can both use them without importing each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from auren.settings import Settings

T = TypeVar("T")

# Every server listens on loopback only: this is a dev/CI stack with no TLS and trust between
# processes on the machine, so it must not be reachable from the network.
HOST = "127.0.0.1"

# The app's PostgreSQL role and database (the names the rest of AUREN expects).
PG_USER = "auren"
PG_DATABASE = "auren_production"


class InfraError(RuntimeError):
    """A server could not be installed, started, stopped or reached. The message says which and
    what to do about it; the CLI prints it as is."""


@dataclass(frozen=True)
class InfraConfig:
    """Where the stack lives and which loopback ports it uses. Build it with :meth:`from_settings`
    so that the environment (``AUREN_DATA_DIR``, ``AUREN_KAFKA_PORT``, ...) is honoured."""

    data_dir: Path
    kafka_port: int = 9092
    # KRaft's controller listener: a second port, because the combined node serves both roles.
    kafka_controller_port: int = 9093
    postgres_port: int = 5432
    redis_port: int = 6379
    # None: a random password is generated once per data dir and kept in it (mode 0600).
    postgres_password: str | None = field(default=None, repr=False)
    # The whole stack shares 2 cores and a few GB with the services under test.
    kafka_heap_mb: int = 512
    # Where the Kafka jars fetched by Maven are cached, shared by every data dir (None: the
    # user's cache dir). Keeps the second `up`, and every test run, off the network.
    cache_dir: Path | None = None
    # A fault proxy between the services and Kafka (auren.ops.placement): the port of a second
    # broker listener for clients that come through it, and the proxy's port that listener
    # advertises. Kafka hands clients the address to use after bootstrap, so without its own
    # listener a proxied client would reconnect straight to the broker. None: no proxy.
    kafka_proxied: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Generated configs embed absolute paths and the servers run with other working dirs.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        ports = [self.kafka_port, self.kafka_controller_port, self.postgres_port,
                 self.redis_port, *(self.kafka_proxied or ())]
        if len(set(ports)) != len(ports):
            raise InfraError(f"the infra ports must differ, got {ports}")
        for port in ports:
            if not 1 <= port <= 65535:
                raise InfraError(f"port {port} is out of range")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> InfraConfig:
        """The config the settings describe; ``overrides`` that are not None win (CLI options)."""
        password = settings.auren_postgres_password
        values: dict[str, Any] = {
            "data_dir": settings.auren_data_dir,
            "kafka_port": settings.auren_kafka_port,
            "kafka_controller_port": settings.auren_kafka_controller_port,
            "postgres_port": settings.auren_postgres_port,
            "redis_port": settings.auren_redis_port,
            "postgres_password": password.get_secret_value() if password else None,
            "kafka_heap_mb": settings.auren_kafka_heap_mb,
            "cache_dir": settings.auren_infra_cache_dir,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def infra_dir(self) -> Path:
        return self.data_dir / "infra"

    @property
    def env_file(self) -> Path:
        return self.infra_dir / "env"

    def server_dir(self, name: str) -> Path:
        return self.infra_dir / name

    @property
    def kafka_cache_base(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser().resolve()
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "auren"


@dataclass(frozen=True)
class SpawnSpec:
    """How to start one server process."""

    argv: Sequence[str]
    cwd: Path
    log: Path
    env: Mapping[str, str] | None = None
    # Run as this OS user (PostgreSQL refuses to run as root); None: as ourselves.
    user: str | None = None


@dataclass(frozen=True)
class Probe:
    """The answer to one real request: how long it took and what the server says it is."""

    rtt_ms: float
    version: str
    detail: str = ""


def is_root() -> bool:
    return os.geteuid() == 0


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def run_bounded(argv: Sequence[str], *, timeout: float, what: str, user: str | None = None,
                cwd: Path | None = None, env: Mapping[str, str] | None = None,
                stdin_text: str | None = None) -> str:
    """Run a command to completion within ``timeout`` seconds; return its output (stdout and
    stderr merged) or raise :class:`InfraError` naming ``what`` and the output's tail."""
    try:
        done = subprocess.run(  # noqa: S603 - argv is built by this module, never a shell
            list(argv), cwd=cwd, env=dict(env) if env is not None else None,
            input=stdin_text, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, check=False, **user_kwargs(user))
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{what} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise InfraError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        raise InfraError(f"{what} failed (exit {done.returncode}):\n{tail(done.stdout)}")
    return str(done.stdout)


def user_kwargs(user: str | None) -> dict[str, Any]:
    """subprocess keywords that run a child as ``user`` (exec'd directly, unlike ``runuser``,
    which forks and would leave us holding the pid of a wrapper instead of the server's)."""
    if user is None or not is_root():
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail_file(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as fh:
            # Logs can be large; the last 64 KiB holds the lines that explain a failure.
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            return tail(fh.read().decode("utf-8", "replace"), lines)
    except OSError:
        return ""


_apt_updated = False


def apt_install(packages: Sequence[str], why: str) -> None:
    """Install Debian packages (bounded). Needs root; otherwise says what to run."""
    global _apt_updated
    command = f"apt-get install -y {' '.join(packages)}"
    if not is_root() or shutil.which("apt-get") is None:
        raise InfraError(f"{why}: install it with `sudo {command}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        # The package lists of a fresh machine are empty or stale; refresh them once per run.
        run_bounded(["apt-get", "update", "-q"], timeout=600, what="apt-get update", env=env)
        _apt_updated = True
    run_bounded(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                timeout=900, what=command, env=env)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
    """Run a coroutine to completion within ``timeout`` from synchronous code, also when the
    caller is itself inside an event loop (an async test): then on a thread with its own loop."""

    async def bounded() -> T:
        return await asyncio.wait_for(factory(), timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, bounded()).result(timeout=timeout + 5)
