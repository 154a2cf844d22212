"""``auren docs generate``: write (or, with ``--check``, compare) the generated documents.

Registered on the main command with one line in ``auren.cli``. Today it writes the Grafana
dashboards (``deploy/grafana/dashboards/``); every generated file is checked in, and a test
fails when one differs from what the code generates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The same numbers as auren.cli.ExitCode (not imported: auren.cli imports this module).
_OK, _CHECK_FAILED = 0, 1

DASHBOARD_DIR = Path("deploy") / "grafana" / "dashboards"

docs_app = typer.Typer(help="Documents generated from the code and checked in.",
                       no_args_is_help=True)


def generated(root: Path) -> dict[Path, str]:
    """Every generated file under ``root`` (the repository) and the content it must have."""
    # Loaded by this command only: every other `auren` command starts without the SDK.
    from auren.docsgen import dashboards

    return {root / DASHBOARD_DIR / f"{name}.json": dashboards.render(name)
            for name in dashboards.DASHBOARDS}


@docs_app.command("generate")
def generate_command(
    root: Annotated[Path, typer.Option(help="The repository to write into.",
                                       file_okay=False)] = Path("."),
    check: Annotated[bool, typer.Option(
        help="Write nothing; exit 1 when a checked-in file differs from what the code "
             "generates (or is missing).")] = False,
) -> None:
    """Generate the Grafana dashboards (deploy/grafana/dashboards/*.json)."""
    stale = []
    for path, content in generated(root).items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for path in stale:
        typer.echo(f"{'differs' if check else 'wrote'}: {path}")
    if check and stale:
        typer.echo("run `auren docs generate` and commit the result", err=True)
        raise typer.Exit(_CHECK_FAILED)
    if not stale:
        typer.echo("every generated file is up to date")
    raise typer.Exit(_OK)
