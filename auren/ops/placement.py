"""Where the fault proxy (``auren.ops.faultproxy``) sits: between the services and Kafka,
PostgreSQL and Redis of an ``auren infra`` stack, and between the gateway and each service.

Route names are the contract with the drills (``auren.ops.faults``): ``kafka``, ``postgres``
and ``redis`` for the dependencies, ``gateway-neuros``, ``gateway-bridge`` and
``gateway-legacy`` for the gateway's upstreams.

* **Dependencies.** ``auren infra up --fault-proxy`` (:func:`for_infra`, :func:`start_for_infra`)
  starts the proxy beside the servers and exports URLs that go through it, so that services
  started with them reach their dependencies only through the proxy. Kafka needs a second
  listener for that (``InfraConfig.kafka_proxied``): a client is told after bootstrap which
  address to use, and the broker must tell proxied clients the proxy's. The toolkit's own probes
  (health, reconciliation) keep the direct URLs. The placement is recorded in
  ``<data>/infra/faultproxy/state.json`` and stays until ``auren infra down``.
* **Gateway.** The gateway takes its upstreams from ``AUREN_*_URL``; the toolkit, when it
  starts the services itself, gives the gateway (and only it) the proxy's routes there
  (:func:`gateway_env`). The gateway's code does not change.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from auren.infra.base import HOST, InfraConfig
from auren.ops.faultproxy import Placement, ProxyProcess, start
from auren.settings import Settings

DEPENDENCIES = ("kafka", "postgres", "redis")
GATEWAY_ROUTES = {"neuros": "gateway-neuros", "bridge": "gateway-bridge",
                  "legacy": "gateway-legacy"}
GATEWAY_URL_ENV = {"neuros": "AUREN_NEUROS_URL", "bridge": "AUREN_BRIDGE_URL",
                   "legacy": "AUREN_LEGACY_URL"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def state_file(cfg: InfraConfig) -> Path:
    return cfg.infra_dir / "faultproxy" / "state.json"


# --- between the services and the infra stack -------------------------------------------------


def for_infra(cfg: InfraConfig, control_port: int, route_ports: list[int] | None = None
              ) -> tuple[InfraConfig, Placement]:
    """The config whose Kafka has a listener for proxied clients, and the proxy's routes.

    ``route_ports``: the kafka, postgres, redis routes and Kafka's proxied listener (default:
    the four ports after ``control_port``)."""
    kafka, postgres, redis, listener = route_ports or [control_port + i for i in range(1, 5)]
    placed = dataclasses.replace(cfg, kafka_proxied=(listener, kafka))
    routes = {"kafka": (kafka, f"{HOST}:{listener}"),
              "postgres": (postgres, f"{HOST}:{cfg.postgres_port}"),
              "redis": (redis, f"{HOST}:{cfg.redis_port}")}
    return placed, Placement(control_port, routes)


def recorded(cfg: InfraConfig) -> ProxyProcess | None:
    """The fault proxy ``auren infra up --fault-proxy`` started for this data dir, if any."""
    return ProxyProcess.load(state_file(cfg))


def with_recorded(cfg: InfraConfig) -> InfraConfig:
    """``cfg`` with Kafka's proxied listener when a placement is recorded: a server restarted
    (by ``up`` or a kill drill) must keep the listener its proxied clients use."""
    proc = recorded(cfg)
    if proc is None or "kafka" not in proc.placement.routes:
        return cfg
    kafka_port, upstream = proc.placement.routes["kafka"]
    return dataclasses.replace(cfg, kafka_proxied=(int(upstream.rpartition(":")[2]),
                                                   kafka_port))


def infra_config(settings: Settings) -> InfraConfig:
    return with_recorded(InfraConfig.from_settings(settings))


def start_for_infra(cfg: InfraConfig, placement: Placement) -> ProxyProcess:
    """Start the proxy for the stack in ``cfg`` (unless the recorded one still runs)."""
    proc = recorded(cfg)
    if proc is not None and proc.alive():
        return proc
    proc = start(placement, cfg.infra_dir / "faultproxy" / "faultproxy.log")
    proc.save(state_file(cfg))
    return proc


def stop_for_infra(cfg: InfraConfig) -> str:
    proc = recorded(cfg)
    if proc is None:
        return "not running"
    action = "stopped" if proc.alive() else "not running"
    proc.stop()
    state_file(cfg).unlink(missing_ok=True)
    return action


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    host = f"{netloc[0]}@{HOST}:{port}" if netloc[1] else f"{HOST}:{port}"
    return urlunsplit(parts._replace(netloc=host))


def proxied_env(direct: Mapping[str, str], placement: Placement) -> dict[str, str]:
    """The data-plane URLs of ``direct`` (``infra.connection_env``) through the proxy, and
    ``AUREN_FAULT_PROXY_URL``."""
    routes = placement.routes
    return {"POSTGRES_URL": _with_port(direct["POSTGRES_URL"], routes["postgres"][0]),
            "REDIS_URL": _with_port(direct["REDIS_URL"], routes["redis"][0]),
            "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{routes['kafka'][0]}",
            "AUREN_FAULT_PROXY_URL": placement.url}


def write_env(cfg: InfraConfig, env: Mapping[str, str]) -> Path:
    """``<data>/infra/env`` with these exports (0600: it holds the PostgreSQL password)."""
    import shlex

    cfg.infra_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.env_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by `auren infra up --fault-proxy`: the services reach Kafka, "
                 "PostgreSQL and Redis through the fault proxy.\n")
        fh.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    tmp.replace(cfg.env_file)
    return cfg.env_file


# --- between the gateway and the services ------------------------------------------------------


def gateway_routes(service_ports: Mapping[str, int], route_ports: Mapping[str, int]
                   ) -> dict[str, tuple[int, str]]:
    """Routes ``gateway-<service>`` from ``route_ports[service]`` to each service's port."""
    return {GATEWAY_ROUTES[name]: (route_ports[name], f"{HOST}:{service_ports[name]}")
            for name in GATEWAY_ROUTES if name in service_ports and name in route_ports}


def gateway_env(placement: Placement) -> dict[str, str]:
    """The gateway's upstream URLs through the proxy (its only change: where they point)."""
    return {GATEWAY_URL_ENV[name]: placement.route_url(route)
            for name, route in GATEWAY_ROUTES.items() if route in placement.routes}
