"""``auren validate --stack full``: the loopback full stack, brought up for one run and torn
down after it, also on Ctrl-C, SIGTERM or failure.

1. ``auren infra`` starts Kafka, PostgreSQL and Redis in a private directory on free ports,
   Kafka with a listener for clients behind the fault proxy (``auren.ops.placement``).
2. One fault proxy process routes the services to the three servers and the gateway to each
   service, so every drill of ``auren faults`` applies.
3. The four services, the sink and the fetcher start against the stack (through the proxy),
   with freshly generated provider secrets (and encryption key); the toolkit's own probes and
   the reconciliation use the direct URLs, so a drill never slows the measurement itself.

Everything is stopped by the pid it was started with, in reverse order; the directory is
removed unless the caller named it. The services' logs and the fault proxy's are copied next
to the report by the caller (:func:`keep_logs`) before that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from auren import infra
from auren.infra.base import InfraConfig, InfraError
from auren.ops import placement
from auren.ops.procs import (
    SERVICES,
    EnvironmentBroken,
    ServiceSet,
    gateway_proxy,
    generated_secrets,
)
from auren.ops.target import Target, settings_from_env

START_TIMEOUT_S = 300.0
DATA_PLANE = ("POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "AUREN_FAULT_PROXY_URL")
Log = Callable[[str], None]


@contextlib.contextmanager
def full_stack_system(base_dir: Path | None = None, *, extra_env: Mapping[str, str] | None = None,
                      log: Log = lambda message: None) -> Iterator[Target]:
    """The whole full stack for the block; see the module docstring."""
    owned = base_dir is None
    root = Path(tempfile.mkdtemp(prefix="auren-stack-")) if base_dir is None else base_dir
    root.mkdir(parents=True, exist_ok=True)
    # PostgreSQL runs as its own OS user and must reach its data dir through every parent.
    root.chmod(0o755)
    ports = placement.free_ports(8)
    cfg = InfraConfig(data_dir=root / "stack", kafka_port=ports[0],
                      kafka_controller_port=ports[1], postgres_port=ports[2],
                      redis_port=ports[3])
    cfg, layout = placement.for_infra(cfg, 0, route_ports=ports[4:8])
    try:
        log(f"bringing the full stack up in {root} (Kafka, PostgreSQL, Redis) ...")
        try:
            infra.up(cfg, timeout=START_TIMEOUT_S, write_env=False)
        except InfraError as exc:
            raise EnvironmentBroken(f"auren infra up failed: {exc}") from exc
        direct = infra.connection_env(cfg)
        services_dir = root / "services"
        base = {k: v for k, v in (extra_env or os.environ).items() if k not in DATA_PLANE}
        service_ports = dict(zip(SERVICES, placement.free_ports(len(SERVICES)), strict=True))
        with gateway_proxy(service_ports, services_dir / "logs",
                           dependency_routes=layout.routes) as proxy:
            assert proxy is not None  # noqa: S101 - enabled
            env = {**base, **generated_secrets(base), "LOG_LEVEL": "INFO",
                   **placement.proxied_env(direct, proxy)}
            log("starting the services and the sink against it ...")
            with ServiceSet(services_dir, env, service_ports,
                            service_env={"gateway": placement.gateway_env(proxy)},
                            fault_proxy_url=proxy.url) as services:
                # The toolkit reads the stack directly: its probes must not go through drills.
                settings = settings_from_env({**services.env, **direct})
                yield Target(services.urls, settings, services_dir, services.pids,
                             services.log_paths, started_here=True, fault_proxy_url=proxy.url,
                             infra=cfg)
    finally:
        log("tearing the full stack down ...")
        try:
            infra.down(cfg, timeout=30)
        finally:
            if owned:
                shutil.rmtree(root, ignore_errors=True)


def keep_logs(target: Target, directory: Path) -> Path | None:
    """Copy the services' and the fault proxy's logs to ``directory/logs`` (the stack's own
    directory goes away with it)."""
    if target.data_dir is None or not (target.data_dir / "logs").is_dir():
        return None
    destination = directory / "logs"
    shutil.copytree(target.data_dir / "logs", destination, dirs_exist_ok=True)
    return destination
