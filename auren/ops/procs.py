"""The four services as child processes: ``auren serve all`` and the toolkit's embedded system.

Each service is ``python -m auren serve <name>`` on its own loopback port, with its JSON log
(stderr) in ``<data dir>/logs/<name>.log``; the toolkit counts ERROR lines there and samples the
pids with psutil. Start order puts the gateway last (its upstreams first); stop order is the
reverse, SIGTERM first so that each drains what it admitted, SIGKILL only after the timeout.
Only processes started here are ever signalled, by their pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from auren.ops.faultproxy import Placement
from auren.ops.placement import gateway_env
from auren.sim.credentials import fresh_secrets

SERVICES: tuple[str, ...] = ("neuros", "legacy", "bridge", "gateway")
DEFAULT_PORTS: dict[str, int] = {"neuros": 8000, "legacy": 8888, "bridge": 8889, "gateway": 9000}
URL_ENV: dict[str, str] = {"neuros": "AUREN_NEUROS_URL", "legacy": "AUREN_LEGACY_URL",
                           "bridge": "AUREN_BRIDGE_URL", "gateway": "AUREN_GATEWAY_URL"}
HOST = "127.0.0.1"


class EnvironmentBroken(RuntimeError):
    """The system under test could not be started or reached: exit code 3, not a failed check."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def generated_secrets(base: Mapping[str, str]) -> dict[str, str]:
    """A fresh secret for every provider setting ``base`` leaves unset (as ``auren demo``)."""
    return fresh_secrets(base)


@dataclass
class Service:
    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class ServiceSet:
    """Start, watch and stop the services; a context manager that always stops them."""

    data_dir: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    names: tuple[str, ...] = SERVICES
    workers: int = 1
    services: dict[str, Service] = field(default_factory=dict)
    # Per-service additions to the environment (the gateway's upstreams through the fault
    # proxy, auren.ops.placement).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    fault_proxy_url: str | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {name: s.url for name, s in self.services.items() if s.port}

    @property
    def pids(self) -> dict[str, int]:
        return {name: s.pid for name, s in self.services.items() if s.pid is not None}

    @property
    def log_paths(self) -> dict[str, Path]:
        return {name: s.log_path for name, s in self.services.items()}

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env)
        env["AUREN_DATA_DIR"] = str(self.data_dir)
        # Every service listens on the loopback and the gateway in front is the proxy: its
        # X-Forwarded-For is what tells the upstreams who the client is.
        env.setdefault("TRUSTED_PROXIES", f"{HOST}")
        for name in self.names:
            env[URL_ENV[name]] = f"http://{HOST}:{self.ports[name]}"
        return env

    def _spawn(self, service: Service, env: dict[str, str]) -> None:
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed args
                [sys.executable, "-m", "auren", "serve", service.name, "--host", HOST,
                 "--port", str(service.port), "--workers", str(self.workers)],
                stdout=log, stderr=subprocess.STDOUT,
                env={**env, **self.service_env.get(service.name, {})})

    def stop_service(self, name: str, timeout_s: float = 20.0) -> int | None:
        """SIGTERM one service started here (SIGKILL after ``timeout_s``); its exit code."""
        process = self.services[name].process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)

    def start_service(self, name: str, timeout_s: float = 60.0) -> None:
        """Start one stopped service again, on its port, and wait until it is healthy."""
        service = self.services[name]
        if service.process is not None and service.process.poll() is None:
            return
        self._spawn(service, self._child_env())
        self._wait_ready(service, time.monotonic() + timeout_s)

    def start(self, timeout_s: float = 60.0) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self._child_env()
        try:
            for name in self.names:
                service = Service(name, self.ports[name], logs / f"{name}.log")
                self.services[name] = service
                self._spawn(service, env)
            if env.get("KAFKA_BOOTSTRAP_SERVERS") and env.get("POSTGRES_URL"):
                # Full stack: the bridge's 202 means "in Kafka"; the sink moves it on into
                # PostgreSQL (without it nothing reaches the store), and the fetcher turns the
                # thin providers' notifications into data (embedded, the bridge runs it in its
                # own process). No HTTP port: port 0.
                for name in ("sink", "fetcher"):
                    worker = Service(name, 0, logs / f"{name}.log")
                    self.services[name] = worker
                    with worker.log_path.open("ab") as log:
                        worker.process = subprocess.Popen(  # noqa: S603 - our own CLI
                            [sys.executable, "-m", "auren", name], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + timeout_s
            for service in self.services.values():
                self._wait_ready(service, deadline)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _wait_ready(service: Service, deadline: float) -> None:
        assert service.process is not None  # noqa: S101 - set by start()
        if not service.port:  # no HTTP: alive a moment after start is all there is to see
            time.sleep(1.0)
            if service.process.poll() is not None:
                raise EnvironmentBroken(f"{service.name} exited at start-up with "
                                        f"{service.process.returncode}; see {service.log_path}")
            return
        while True:
            if service.process.poll() is not None:
                raise EnvironmentBroken(f"{service.name} exited at start-up with "
                                        f"{service.process.returncode}; see {service.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(service.url + "/health", timeout=1.0,
                             trust_env=False).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise EnvironmentBroken(f"{service.name} did not become healthy on "
                                        f"{service.url}; see {service.log_path}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM each service (reverse start order), SIGKILL after ``timeout_s``."""
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.services)):
            process = self.services[name].process
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            codes[name] = process.returncode
        return codes

    def dead(self) -> list[str]:
        return [n for n, s in self.services.items()
                if s.process is not None and s.process.poll() is not None]

    def __enter__(self) -> ServiceSet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_system(data_dir: Path, *, base_env: Mapping[str, str] | None = None,
                    fixed_ports: bool = False, workers: int = 1,
                    extra_env: Mapping[str, str] | None = None,
                    fault_proxy: bool = False) -> Iterator[ServiceSet]:
    """The whole embedded system in ``data_dir`` with generated secrets, stopped afterwards.

    Free ports unless ``fixed_ports`` (the default ports of ``auren serve all``): a toolkit run
    must not collide with a deployment, or with another run, on the same machine. With
    ``fault_proxy``, the gateway reaches the services through a fault proxy started here
    (``services.fault_proxy_url``), for the gateway drill of ``auren faults``.
    """
    base = dict(os.environ if base_env is None else base_env)
    # A developer's full-stack URLs must not turn the embedded run into a full-stack one.
    for name in ("POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS",
                 "AUREN_FAULT_PROXY_URL"):
        base.pop(name, None)
    env = {**base, **generated_secrets(base), "LOG_LEVEL": "INFO", **(extra_env or {})}
    ports = dict(DEFAULT_PORTS) if fixed_ports else {name: free_port() for name in SERVICES}
    with gateway_proxy(ports, data_dir / "logs", enabled=fault_proxy) as layout, \
            ServiceSet(data_dir, env, ports, workers=workers,
                       service_env={"gateway": gateway_env(layout)} if layout else {},
                       fault_proxy_url=layout.url if layout else None) as services:
        yield services


@contextlib.contextmanager
def gateway_proxy(service_ports: Mapping[str, int], logs: Path, *, enabled: bool = True,
                  dependency_routes: Mapping[str, tuple[int, str]] | None = None
                  ) -> Iterator[Placement | None]:
    """A fault proxy between the gateway and the services (and ``dependency_routes``), for
    the block; stopped by its pid afterwards. None when not ``enabled``."""
    if not enabled:
        yield None
        return
    from auren.ops import faultproxy
    from auren.ops.placement import GATEWAY_ROUTES, free_ports, gateway_routes

    ports = free_ports(len(GATEWAY_ROUTES) + 1)
    routes = gateway_routes(service_ports, dict(zip(GATEWAY_ROUTES, ports[1:], strict=True)))
    layout = Placement(ports[0], {**routes, **(dependency_routes or {})})
    try:
        proxy = faultproxy.start(layout, logs / "faultproxy.log")
    except RuntimeError as exc:
        raise EnvironmentBroken(str(exc)) from exc
    try:
        yield layout
    finally:
        proxy.stop()


def serve_all_forever(services: ServiceSet) -> int:
    """Run until SIGINT/SIGTERM or a service dies; then stop all. Returns an exit code."""
    stop = False

    def _request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop:
            if services.dead():
                return 3
            time.sleep(0.2)
        return 0
    finally:
        services.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
