"""The ``auren`` command: thin typer commands over the library, mounted in one place.

``app`` mounts them all; ``serve`` runs one service, ``sim`` simulates wearers, ``toolkit`` is
the validation toolkit, ``infra`` the loopback stack and ``db`` the full stack's PostgreSQL
side. ``exit_codes`` defines the exit codes every command uses.
"""

from auren.cli.app import app, main

__all__ = ["app", "main"]
