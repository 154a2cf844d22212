"""What the toolkit runs against: a deployment (a base URL per service) or the embedded system.

A deployment is described by URLs (options or ``AUREN_*_URL``) plus the data-plane settings the
services use (``POSTGRES_URL``, ``REDIS_URL``, ``KAFKA_BOOTSTRAP_SERVERS``) and, for embedded
deployments, the data directory whose SQLite file holds the events. With no target given, the
toolkit starts the embedded system itself (``procs.embedded_system``) and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from auren.infra.base import InfraConfig
from auren.ops import deps
from auren.ops.procs import SERVICES, embedded_system
from auren.settings import Settings

TITLES = {"neuros": "NEUROS", "legacy": "Original Bridge", "bridge": "Enhanced Bridge",
          "gateway": "Gateway"}


@dataclass
class Target:
    urls: dict[str, str]
    settings: Settings  # secrets to sign with, and the data plane's URLs
    data_dir: Path | None  # where an embedded deployment's SQLite file is
    pids: dict[str, int] = field(default_factory=dict)
    log_paths: dict[str, Path] = field(default_factory=dict)
    started_here: bool = False
    # The control API of a fault proxy the toolkit placed itself (else the settings' one).
    fault_proxy_url: str | None = None
    # The `auren infra` stack the toolkit brought up itself (`validate --stack full`).
    infra: InfraConfig | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded

    @property
    def mode(self) -> str:
        return "embedded" if self.embedded else "full stack"

    def describe(self) -> str:
        where = "started by the toolkit" if self.started_here else "deployment"
        return f"{self.mode} ({where})"

    async def count_store(self, timeout_s: float = 10.0) -> deps.StoreCount:
        """Events and fetch jobs in the store; raises ProbeFailed when it cannot be read."""
        if self.settings.postgres_url is not None:
            return await deps.postgres_count(self.settings.postgres_url.get_secret_value(),
                                             timeout_s)
        if self.data_dir is None:
            raise deps.ProbeFailed("no store to count: give --data-dir (embedded) or "
                                   "POSTGRES_URL (full stack)")
        return await deps.sqlite_count(self.data_dir / "auren.sqlite3", timeout_s)

    @property
    def store_name(self) -> str:
        return "PostgreSQL" if self.settings.postgres_url is not None else "SQLite"

    @property
    def store_label(self) -> str:
        """Which store the reconciliation reads, for a report line."""
        if self.settings.postgres_url is not None:
            return "PostgreSQL (POSTGRES_URL)"
        if self.data_dir is None:
            return "no store"
        return f"SQLite {self.data_dir / 'auren.sqlite3'}"

    async def store_records(self, namespace: str, timeout_s: float = 30.0) -> dict[str, int]:
        """How many times each source record id of users in ``namespace`` is stored; raises
        ProbeFailed when the store cannot be read."""
        if self.settings.postgres_url is not None:
            return await deps.postgres_records(self.settings.postgres_url.get_secret_value(),
                                               namespace, timeout_s)
        if self.data_dir is None:
            raise deps.ProbeFailed("no store to read: give --data-dir (embedded) or "
                                   "POSTGRES_URL (full stack)")
        return await deps.sqlite_records(self.data_dir / "auren.sqlite3", namespace, timeout_s)

    def error_log_offsets(self) -> dict[str, int]:
        return {name: _size(path) for name, path in self.log_paths.items()}

    def error_lines_since(self, offsets: Mapping[str, int]) -> dict[str, int]:
        """ERROR (and CRITICAL) lines each service logged since ``offsets`` were taken."""
        return {name: count_error_lines(path, offsets.get(name, 0))
                for name, path in self.log_paths.items()}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def count_error_lines(path: Path, offset: int = 0) -> int:
    """JSON log lines at level ERROR or CRITICAL from byte ``offset`` on.

    Lines that are not JSON (a traceback uvicorn printed itself) count when they say ERROR.
    """
    try:
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read()
    except OSError:
        return 0
    count = 0
    for line in data.splitlines():
        structured = b'"level":"ERROR"' in line or b'"level":"CRITICAL"' in line
        if structured or line.startswith(b"ERROR"):
            count += 1
    return count


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """A Settings built from an explicit environment (the one given to the child services)."""
    return Settings.model_validate({k.lower(): v for k, v in env.items()
                                    if k.lower() in Settings.model_fields})


def listening_pid(url: str) -> int | None:
    """The pid listening on a loopback URL's port (uvicorn's master), or None.

    Only loopback: the toolkit samples processes of this machine, never guesses remote ones.
    """
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
        return None
    try:
        for conn in psutil.net_connections("tcp"):
            if (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == parts.port
                    and conn.pid):
                return int(conn.pid)
    except (psutil.Error, OSError):
        return None
    return None


def deployed_target(settings: Settings, overrides: Mapping[str, str | None],
                    data_dir: Path | None, logs_dir: Path | None) -> Target:
    urls = {"neuros": settings.auren_neuros_url, "legacy": settings.auren_legacy_url,
            "bridge": settings.auren_bridge_url, "gateway": settings.auren_gateway_url}
    urls.update({k: v for k, v in overrides.items() if v})
    urls = {k: v.rstrip("/") for k, v in urls.items()}
    pids = {name: pid for name in SERVICES if (pid := listening_pid(urls[name])) is not None}
    logs_dir = logs_dir or (data_dir / "logs" if data_dir else None)
    log_paths = ({name: logs_dir / f"{name}.log" for name in SERVICES
                  if (logs_dir / f"{name}.log").exists()} if logs_dir else {})
    return Target(urls, settings, data_dir, pids, log_paths)


@contextlib.contextmanager
def resolve(*, overrides: Mapping[str, str | None], deployed: bool, data_dir: Path | None,
            logs_dir: Path | None = None, extra_env: Mapping[str, str] | None = None
            ) -> Iterator[Target]:
    """The deployment named by the options, or a fresh embedded system for the block."""
    if deployed or any(overrides.values()):
        settings = Settings()
        yield deployed_target(settings, overrides, data_dir or settings.auren_data_dir,
                              logs_dir)
        return
    parent = Path(tempfile.mkdtemp(prefix="auren-ops-")) if data_dir is None else data_dir
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = parent / f"embedded-{stamp}-{os.getpid()}"
    with embedded_system(run_dir, extra_env=extra_env, fault_proxy=True) as services:
        yield Target(services.urls, settings_from_env(services.env), run_dir, services.pids,
                     services.log_paths, started_here=True,
                     fault_proxy_url=services.fault_proxy_url)
