"""``auren db upgrade`` and ``auren sink``: thin over the PostgreSQL store and the sink."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.observability import configure_logging
from auren.services.dataplane import postgres_store
from auren.settings import Settings

db_app = typer.Typer(help="The PostgreSQL schema of the full stack (POSTGRES_URL).",
                     no_args_is_help=True)


def _settings() -> Settings:
    settings = Settings()
    if settings.postgres_url is None:
        typer.echo("error: POSTGRES_URL is not set (see `auren infra up`)", err=True)
        raise typer.Exit(ExitCode.USAGE)
    return settings


async def _schema(settings: Settings) -> tuple[str, list[str]]:
    store = postgres_store(settings, application_name="auren-db")
    await store.open()  # applies pending migrations and creates the partitions ahead
    try:
        assert store.schema is not None  # noqa: S101 - set by open()
        info = store.schema
        lines = [f"schema: events v{info.version} ({info.applied} migration(s) applied now)",
                 f"partitioning: {info.partitioning}"]
        if info.partitions_created:
            lines.append(f"partitions created: {', '.join(info.partitions_created)}")
        return info.partitioning, lines
    finally:
        await store.close()


@db_app.command("upgrade")
def upgrade_command() -> None:
    """Apply pending migrations and create the time partitions ahead (idempotent)."""
    settings = _settings()
    configure_logging(settings.log_level)
    try:
        _, lines = asyncio.run(_schema(settings))
    except AurenError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    for line in lines:
        typer.echo(line)


def sink_command(
    once: Annotated[bool, typer.Option(
        help="Exit when caught up (no record for --idle-exit seconds) instead of running "
             "until SIGTERM.")] = False,
    idle_exit: Annotated[float, typer.Option(min=0.1, max=3600,
                                             help="With --once: idle seconds that end it.")] = 5.0,
) -> None:
    """Run the sink: Kafka (biometric events and notifications) into PostgreSQL, exactly once
    in effect. SIGTERM finishes the batch in hand, commits its offsets and exits."""
    from auren.services.sink import (
        run_sink,  # confluent-kafka is loaded only by commands that use it
    )

    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        typer.echo("error: KAFKA_BOOTSTRAP_SERVERS is not set", err=True)
        raise typer.Exit(ExitCode.USAGE)
    configure_logging(settings.log_level)
    try:
        asyncio.run(run_sink(settings, idle_exit_s=idle_exit if once else None))
    except AurenError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc

