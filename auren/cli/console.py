"""``auren console hash-password``: a login line for ``GATEWAY_CONSOLE_USERS``."""

from __future__ import annotations

from typing import Annotated

import typer

from auren.cli.exit_codes import ExitCode

console_app = typer.Typer(help="The operations console (the gateway's `/`).",
                          no_args_is_help=True)


@console_app.command("hash-password")
def hash_password(
    name: Annotated[str, typer.Argument(help="Login name (A-Z a-z 0-9 _ . @ -).")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (may also start "
                                           "validations and chat as a user).")] = "viewer",
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True,
        help="Asked for when not given (never put it in shell history).")] = "",
) -> None:
    """Print ``name:role:<Argon2id hash>``, one entry of GATEWAY_CONSOLE_USERS."""
    from auren.services.console.auth import hash_password as argon2_hash
    from auren.services.console.auth import parse_accounts

    if len(password) < 8:
        typer.echo("a console password needs at least 8 characters", err=True)
        raise typer.Exit(ExitCode.USAGE)
    line = f"{name}:{role}:{argon2_hash(password)}"
    try:
        parse_accounts(line)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(line)
