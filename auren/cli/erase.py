"""``auren erase --user ID``: thin over ``auren.services.erasures``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.observability import configure_logging
from auren.settings import Settings


def erase_command(
    user: Annotated[str, typer.Option("--user", help="The user id of the person to erase.")],
    timeout: Annotated[float, typer.Option(min=1, max=86_400,
                                           help="Seconds to wait for the erasure to finish."
                                           )] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="The receipt as JSON.")] = False,
) -> None:
    """Erase everything AUREN holds of a person (the stores of the configured deployment, the
    grants at their providers), wait for it to finish and print the receipt. Safe to run
    again: the same erasure is answered (a failed one is resumed). Exit 0 when complete, 1
    when failed or not finished in time."""
    from auren.services.erasures import erase_and_wait  # the stores' clients load only here

    settings = Settings()
    configure_logging(settings.log_level)
    try:
        receipt = asyncio.run(erase_and_wait(settings, user, timeout))
    except (AurenError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    if as_json:
        typer.echo(orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(receipt)
    raise typer.Exit(ExitCode.OK if receipt["status"] == "complete" else ExitCode.CHECK_FAILED)


def _print(receipt: dict[str, Any]) -> None:
    table = Table(title=f"erasure {receipt['erasure_id']} of {receipt['user_id']}: "
                        f"{receipt['status']}")
    for column in ("store", "status", "at", "detail"):
        table.add_column(column)
    for step in receipt["steps"]:
        detail = step.get("error") or orjson.dumps(step.get("detail") or {}).decode()
        table.add_row(step["store"], step["status"], step["at"] or "-", detail)
    Console().print(table)
