"""``auren db upgrade | backup | restore`` and ``auren sink``: thin over the PostgreSQL store,
the backups (:mod:`auren.ops.backup`) and the sink."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.observability import configure_logging
from auren.services.dataplane import postgres_store
from auren.settings import Settings

db_app = typer.Typer(help="The store: the full stack's PostgreSQL schema, and backups of the "
                          "store the settings name (PostgreSQL with POSTGRES_URL, else the "
                          "SQLite file in AUREN_DATA_DIR).", no_args_is_help=True)


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


@contextlib.contextmanager
def _backup_errors() -> Iterator[None]:
    """A refused backup or restore is a usage error (exit 2), a broken environment exit 3."""
    from auren.ops.backup import BackupFailed, BackupRefused

    try:
        yield
    except BackupRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    except BackupFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from None


Timeout = Annotated[float, typer.Option(min=1, max=86_400,
                                        help="The longest the backup or restore may take, s.")]


@db_app.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the backup; its "
                                         "manifest goes to FILE.json.")],
    timeout: Timeout = 3600.0,
) -> None:
    """Back up the store while the services run: one consistent snapshot holding every event
    acknowledged before the backup began (SQLite: the online backup API; PostgreSQL:
    pg_dump of an exported snapshot, with the sink group's Kafka offsets in the manifest)."""
    from auren.ops.backup import backup

    with _backup_errors():
        manifest = backup(Settings(), file, timeout)
    typer.echo(f"backup: {file} ({manifest.store}, {manifest.bytes} bytes, sha256 "
               f"{manifest.sha256[:16]}...)")
    typer.echo(f"holds: {manifest.events} events, {manifest.fetch_jobs} fetch jobs; every "
               f"event acknowledged before {manifest.started_at}")
    if manifest.kafka is not None:
        typer.echo(f"kafka: offsets of sink group {manifest.kafka['group']} saved")


@db_app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="A file `auren db backup` "
                                         "wrote (its FILE.json manifest is checked when "
                                         "present).")],
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a store that already holds events.")] = False,
    kafka_offsets: Annotated[bool, typer.Option(
        "--kafka-offsets/--no-kafka-offsets",
        help="Full stack: set the sink group back to the backup's offsets, so the sinks "
             "replay what Kafka acknowledged since (every sink must be stopped).")] = True,
    timeout: Timeout = 3600.0,
) -> None:
    """Restore a backup into the store the settings name: the SQLite file in AUREN_DATA_DIR
    (no service may have it open) or the POSTGRES_URL database. Stop the services first."""
    from auren.ops.backup import restore

    with _backup_errors():
        restored = restore(Settings(), file, force=force, reset_offsets=kafka_offsets,
                           timeout_s=timeout)
    typer.echo(f"restored: {restored.events} events, {restored.fetch_jobs} fetch jobs into "
               f"{restored.store} {restored.target}")
    for note in restored.notes:
        typer.echo(f"note: {note}")


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

