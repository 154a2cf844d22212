"""``auren infra up | down | status``: thin over :mod:`auren.infra`.

Human-readable lines go to stderr and only the ``export`` lines to stdout, so that
``eval "$(auren infra up)"`` works; ``status --json`` is for scripts.
"""

from __future__ import annotations

import enum
import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from auren import infra
from auren.cli.exit_codes import ExitCode
from auren.infra import InfraConfig, InfraError
from auren.settings import Settings

infra_app = typer.Typer(
    help="Real Kafka, PostgreSQL and Redis on the loopback for dev and CI, without Docker.",
    no_args_is_help=True)


class ServerName(enum.StrEnum):
    kafka = "kafka"
    postgres = "postgres"
    redis = "redis"


Servers = Annotated[list[ServerName] | None,
                    typer.Argument(help="Only these servers (default: all three).",
                                   show_default=False)]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Default: AUREN_DATA_DIR (./.auren); servers live in <dir>/infra.",
    show_default=False)]
KafkaPort = Annotated[int | None, typer.Option(
    min=1, max=65535, help="Default: AUREN_KAFKA_PORT (9092).", show_default=False)]
ControllerPort = Annotated[int | None, typer.Option(
    min=1, max=65535, help="KRaft controller port. Default: AUREN_KAFKA_CONTROLLER_PORT (9093).",
    show_default=False)]
PostgresPort = Annotated[int | None, typer.Option(
    min=1, max=65535, help="Default: AUREN_POSTGRES_PORT (5432).", show_default=False)]
RedisPort = Annotated[int | None, typer.Option(
    min=1, max=65535, help="Default: AUREN_REDIS_PORT (6379).", show_default=False)]


def _config(data_dir: Path | None, kafka_port: int | None, kafka_controller_port: int | None,
            postgres_port: int | None, redis_port: int | None) -> InfraConfig:
    from auren.ops import placement

    try:
        return placement.with_recorded(InfraConfig.from_settings(
            Settings(), data_dir=data_dir, kafka_port=kafka_port,
            kafka_controller_port=kafka_controller_port, postgres_port=postgres_port,
            redis_port=redis_port))
    except InfraError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from exc


def _names(servers: list[ServerName] | None) -> list[str] | None:
    return [s.value for s in servers] if servers else None


def _print(statuses: list[infra.ServerStatus]) -> None:
    for item in statuses:
        typer.echo(item.line(), err=True)


@infra_app.command("up")
def up_command(
    servers: Servers = None,
    data_dir: DataDir = None,
    kafka_port: KafkaPort = None,
    kafka_controller_port: ControllerPort = None,
    postgres_port: PostgresPort = None,
    redis_port: RedisPort = None,
    timeout: Annotated[float, typer.Option(
        min=1, max=3600, help="Seconds to wait, in all, until every started server answers "
                              "(installing packages and fetching Kafka are bounded apart).")] =
        infra.DEFAULT_START_TIMEOUT_S,
    env_file: Annotated[bool, typer.Option(
        help="Write the export lines to <data>/infra/env (mode 0600).")] = True,
    fault_proxy: Annotated[bool, typer.Option(
        "--fault-proxy", help="Also start the fault proxy (`auren faultproxy`) in front of the "
                              "three servers and export URLs through it (and "
                              "AUREN_FAULT_PROXY_URL), for `auren faults`. Its ports: "
                              "AUREN_FAULT_PROXY_PORT (8474) and the four after it.")] = False,
) -> None:
    """Start what is not running, wait until each answers, print the URLs to export.

    Installs PostgreSQL and Redis (Debian packages) and fetches Kafka (Maven) when missing.
    Exit code 0 when all answer, 3 when one could not be started or did not answer in time.
    """
    from auren.ops import placement

    cfg = _config(data_dir, kafka_port, kafka_controller_port, postgres_port, redis_port)
    proxy = placement.recorded(cfg)
    if fault_proxy and proxy is None:
        cfg, layout = placement.for_infra(cfg, Settings().auren_fault_proxy_port)
    elif proxy is not None:  # placed by an earlier `up --fault-proxy`: stays until `down`
        layout = proxy.placement
    try:
        statuses = infra.up(cfg, _names(servers), timeout=timeout, write_env=env_file)
        if fault_proxy or proxy is not None:
            proxy = placement.start_for_infra(cfg, layout)
    except (InfraError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        _print(infra.status(cfg, _names(servers)))
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    _print(statuses)
    if proxy is None:
        exports = infra.export_lines(cfg)
    else:
        typer.echo(f"fault proxy pid {proxy.pid}, control API {proxy.placement.url}", err=True)
        env = placement.proxied_env(infra.connection_env(cfg), proxy.placement)
        exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        if env_file:
            placement.write_env(cfg, env)
    for line in exports:
        typer.echo(line)
    if env_file:
        typer.echo(f"# also written to {cfg.env_file} (source it)", err=True)


@infra_app.command("status")
def status_command(
    servers: Servers = None,
    data_dir: DataDir = None,
    kafka_port: KafkaPort = None,
    kafka_controller_port: ControllerPort = None,
    postgres_port: PostgresPort = None,
    redis_port: RedisPort = None,
    timeout: Annotated[float, typer.Option(
        min=0.1, max=120, help="Seconds each server has to answer.")] =
        infra.DEFAULT_PROBE_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Per server: running (pid), answering (round trip ms), version.

    Exit code 0 when every server asked about answers, 1 otherwise.
    """
    from auren.ops import placement

    cfg = _config(data_dir, kafka_port, kafka_controller_port, postgres_port, redis_port)
    statuses = infra.status(cfg, _names(servers), timeout=timeout)
    proxy = placement.recorded(cfg)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        for item in statuses:
            typer.echo(item.line())
        if proxy is not None:
            state = "running" if proxy.alive() else "not running"
            typer.echo(f"{'faultproxy':<9} {state:<11} pid {proxy.pid:<6} control API "
                       f"{proxy.placement.url}")
    raise typer.Exit(ExitCode.OK if all(s.answering for s in statuses) else ExitCode.CHECK_FAILED)


@infra_app.command("down")
def down_command(
    servers: Servers = None,
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(
        min=0.1, max=600, help="Seconds of graceful shutdown per server before SIGKILL.")] =
        infra.DEFAULT_STOP_TIMEOUT_S,
) -> None:
    """Stop the servers `up` started: gracefully, SIGKILL after --timeout.

    Only the recorded processes are signalled. Data stays in <data>/infra for the next `up`.
    """
    from auren.ops import placement

    cfg = _config(data_dir, None, None, None, None)
    try:
        if servers is None and placement.recorded(cfg) is not None:
            typer.echo(f"{'faultproxy':<9} {placement.stop_for_infra(cfg)}")
        statuses = infra.down(cfg, _names(servers), timeout=timeout)
    except InfraError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    for item in statuses:
        typer.echo(f"{item.name:<9} {item.action}")
