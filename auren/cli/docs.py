"""``auren docs generate``: write (or, with ``--check``, compare) the generated documents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auren.cli.exit_codes import ExitCode
from auren.docsgen.generate import stale_files

docs_app = typer.Typer(help="Documents generated from the code and checked in.",
                       no_args_is_help=True)


@docs_app.command("generate")
def generate_command(
    root: Annotated[Path, typer.Option(help="The repository to write into.",
                                       file_okay=False)] = Path("."),
    check: Annotated[bool, typer.Option(
        help="Write nothing; exit 1 when a checked-in file differs from what the code "
             "generates (or is missing).")] = False,
) -> None:
    """Generate the Grafana dashboards (deploy/grafana/dashboards/*.json), the service
    documents (docs/services/*.yaml) and their OpenAPI documents (docs/openapi/*.json)."""
    stale = stale_files(root, write=not check)
    for path in stale:
        typer.echo(f"{'differs' if check else 'wrote'}: {path}")
    if check and stale:
        typer.echo("run `auren docs generate` and commit the result", err=True)
        raise typer.Exit(ExitCode.CHECK_FAILED)
    if not stale:
        typer.echo("every generated file is up to date")
    raise typer.Exit(ExitCode.OK)
