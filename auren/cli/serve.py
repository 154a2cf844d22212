"""``auren serve bridge | neuros | legacy | gateway``: one service under uvicorn.

``auren serve all`` (every service as a process) is the toolkit's (:mod:`auren.cli.toolkit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
import uvicorn

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


def _serve(service: str, host: str, port: int | None, workers: int) -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    factory, default_port = _FACTORIES[service]
    uvicorn.run(factory, factory=True,
                **server_options(settings, host=host, port=port or default_port, workers=workers))



Host = Annotated[str, typer.Option(help="Interface to bind.")]
Workers = Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")]


def _command(service: str, default_port: int, doc: str) -> Callable[..., None]:
    def command(host: Host = "127.0.0.1",
                port: Annotated[int, typer.Option(help="TCP port.")] = default_port,
                workers: Workers = 1) -> None:
        _serve(service, host, port, workers)

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
