"""``auren export`` and ``auren audit``: thin over ``auren.services.export``, on the stores
the settings name (the SQLite file of ``AUREN_DATA_DIR``, or ``POSTGRES_URL``). Both are
recorded in the audit log as ``cli:<login name>``."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.events import is_identifier, parse_time
from auren.settings import Settings

T = TypeVar("T")


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric user)
        return "cli:unknown"


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except (AurenError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc


def export_command(
    user: Annotated[str, typer.Option("--user", help="The person's AUREN user id.")],
    form: Annotated[str, typer.Option("--format", help="ndjson (everything, schema "
                                      "auren-export v1) or csv (the events).")] = "ndjson",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Everything held about a person, streamed: NDJSON (a header line, the person, consents,
    connections without tokens, coverage, NEUROS's conversations, events, an end line with the
    counts) or the events as CSV."""
    from auren.services.export import FORMATS, export_to

    if form not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if not is_identifier(user):
        raise typer.BadParameter("--user must be 1 to 256 printable characters")
    settings = Settings()
    if output is None:
        _run(export_to(settings, user, form, sys.stdout.buffer.write, actor=_actor()))
        sys.stdout.flush()
        return
    with output.open("wb") as out:
        _run(export_to(settings, user, form, out.write, actor=_actor()))


def audit_command(
    user: Annotated[str | None, typer.Option("--user", help="Only this person's records.")] =
        None,
    action: Annotated[str | None, typer.Option(help="Only this action (read, export, erase, "
                                               "connect, ...).")] = None,
    since: Annotated[str | None, typer.Option(help="From this instant (RFC 3339).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] =
        False,
) -> None:
    """The audit log, oldest first: who read, exported, erased or changed whose data, when,
    from where and with what outcome (never the values)."""
    from auren.privacy.base import ACTIONS, AuditQuery
    from auren.services.export import audit_records

    if action is not None and action not in ACTIONS:
        raise typer.BadParameter(f"--action must be one of {', '.join(ACTIONS)}")
    try:
        moment = parse_time(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter("--since must be an RFC 3339 instant with an offset") from exc
    records = _run(audit_records(Settings(), AuditQuery(user_id=user, action=action,
                                                        since=moment, limit=limit),
                                 actor=_actor()))
    if as_json:
        for record in records:
            typer.echo(orjson.dumps(record.as_dict()).decode())
        return
    table = Table(title="audit log")
    for column in ("seq", "at", "actor", "action", "user", "route", "client", "outcome"):
        table.add_column(column)
    for r in records:
        table.add_row(str(r.seq), r.at.isoformat(), r.actor, r.action, r.user_id or "-",
                      r.route, r.client or "-", str(r.outcome))
    Console().print(table)
