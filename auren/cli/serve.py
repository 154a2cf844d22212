"""``auren serve bridge | neuros | legacy | gateway``: one service under uvicorn.

``auren serve all`` (every service as a process) is the toolkit's (:mod:`auren.cli.toolkit`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from auren.cli.exit_codes import ExitCode
from auren.observability import configure_logging
from auren.services.runtime import server_options
from auren.settings import Settings

serve_app = typer.Typer(help="Run a service.", no_args_is_help=True)

_FACTORIES = {
    "bridge": ("auren.services.bridge:create_app", 8889),
    "neuros": ("auren.services.neuros:create_app", 8000),
    "legacy": ("auren.services.legacy_bridge:create_app", 8888),
    "gateway": ("auren.services.gateway:create_app", 9000),
}


def _serve(service: str, host: str, port: int | None, workers: int,
           tls: tuple[Path, Path] | None) -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    factory, default_port = _FACTORIES[service]
    try:
        options = server_options(settings, host=host, port=port or default_port,
                                 workers=workers, tls=tls)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    uvicorn.run(factory, factory=True, **options)


Host = Annotated[str, typer.Option(help="Interface to bind.")]
Workers = Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")]
CertFile = Annotated[Path | None, typer.Option(
    "--ssl-certfile", dir_okay=False, show_default=False,
    help="Serve HTTPS with this certificate (PEM, chain included); with --ssl-keyfile. "
         "Default: AUREN_SSL_CERTFILE.")]
KeyFile = Annotated[Path | None, typer.Option(
    "--ssl-keyfile", dir_okay=False, show_default=False,
    help="The certificate's private key (PEM). Default: AUREN_SSL_KEYFILE.")]


def _command(service: str, default_port: int, doc: str) -> Callable[..., None]:
    def command(host: Host = "127.0.0.1",
                port: Annotated[int, typer.Option(help="TCP port.")] = default_port,
                workers: Workers = 1, ssl_certfile: CertFile = None,
                ssl_keyfile: KeyFile = None) -> None:
        if (ssl_certfile is None) != (ssl_keyfile is None):
            typer.echo("error: --ssl-certfile and --ssl-keyfile go together", err=True)
            raise typer.Exit(ExitCode.USAGE)
        tls = (ssl_certfile, ssl_keyfile) if ssl_certfile and ssl_keyfile else None
        _serve(service, host, port, workers, tls)

    command.__doc__ = doc
    return command


_DOCS = {
    "bridge": "Start the Enhanced Biometric Bridge v2.",
    "neuros": "Start NEUROS, the chat service over a person's own biometrics.",
    "legacy": "Start the Original Bridge v1 (per-request, no batching), kept for legacy clients.",
    "gateway": "Start the Gateway: /api/neuros/*, /api/bridge/*, /api/legacy/* and the dashboard.",
}
for _service, (_, _port) in _FACTORIES.items():
    serve_app.command(_service)(_command(_service, _port, _DOCS[_service]))
