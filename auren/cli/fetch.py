"""``auren fetcher`` and ``auren jobs list|retry``: thin over ``auren.services.fetcher``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.observability import configure_logging
from auren.settings import Settings

T = TypeVar("T")
jobs_app = typer.Typer(help="Fetch jobs: list them (dead letters with their reason) and "
                            "retry them.", no_args_is_help=True)


def fetcher_command(
    once: Annotated[bool, typer.Option(
        help="Exit when no job has been due for --idle-exit seconds instead of running until "
             "SIGTERM.")] = False,
    idle_exit: Annotated[float, typer.Option(min=0.1, max=3600,
                                             help="With --once: idle seconds that end it.")] = 5.0,
) -> None:
    """Run the fetcher: thin providers' notifications (fetch jobs) become events, fetched with
    each person's token. Embedded: jobs from the SQLite file (the bridge also runs a fetcher
    unless FETCHER_IN_BRIDGE=false). Full stack: a consumer group on the notifications topic
    and jobs claimed from PostgreSQL. SIGTERM lets the jobs in hand finish."""
    from auren.services.fetcher import run_fetcher  # the provider clients load only here

    settings = Settings()
    configure_logging(settings.log_level)
    try:
        finished = asyncio.run(run_fetcher(settings, idle_exit_s=idle_exit if once else None))
    except (AurenError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    if once:
        typer.echo(f"{finished} job run(s) finished")


@jobs_app.command("list")
def list_jobs(
    state: Annotated[str | None, typer.Option(
        help="pending, running, done, dead, blocked or cancelled (default: all).")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] =
        False,
) -> None:
    """Fetch jobs, newest first, with their attempts and last error."""
    from auren.connections.base import JOB_STATES
    from auren.services.fetcher import job_admin

    if state is not None and state not in JOB_STATES:
        raise typer.BadParameter(f"--state must be one of {', '.join(JOB_STATES)}")

    async def run() -> list[dict[str, object]]:
        async with job_admin(Settings()) as jobs:
            return [r.as_dict() for r in await jobs.listing(state, provider, limit)]

    rows = _run(run())
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    table = Table(title=f"fetch jobs{f' ({state})' if state else ''}")
    for column in ("job", "provider", "kind", "state", "attempts", "updated", "last error"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["job_id"])[:13], str(row["provider"]), str(row["kind"]),
                      str(row["state"]), str(row["attempts"]), str(row["updated_at"] or "-"),
                      str(row["last_error"] or ""))
    Console().print(table)


@jobs_app.command("retry")
def retry_jobs(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Jobs to retry.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead job.")] = False,
    provider: Annotated[str | None, typer.Option(help="With --all-dead: only this provider's."
                                                 )] = None,
) -> None:
    """Make jobs pending again with their attempts reset: the ones named, or every dead one
    (a running fetcher picks them up at its next poll)."""
    from datetime import UTC, datetime

    from auren.services.fetcher import job_admin

    if bool(job_ids) == all_dead:
        raise typer.BadParameter("name job ids or give --all-dead (not both)")

    async def run() -> int:
        async with job_admin(Settings()) as jobs:
            return await jobs.retry(None if all_dead else list(job_ids or ()),
                                    datetime.now(UTC), provider=provider)

    count = _run(run())
    typer.echo(f"{count} job(s) pending again")
    raise typer.Exit(ExitCode.OK if count else ExitCode.CHECK_FAILED)


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except AurenError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
