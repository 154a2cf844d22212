"""``auren serve all | health | e2e | loadtest | faults | validate``: thin over ``auren.ops``.

Every toolkit command takes a target (``--neuros/--legacy/--bridge/--gateway URL`` or
``--deployed`` for the ``AUREN_*_URL`` settings) or, with none, starts the embedded system
itself. Output is a human table, or JSON with ``--json``. Exit codes: 0 pass, 1 a check or SLA
failed, 2 bad usage or configuration, 3 the environment broke. Heavy modules (matplotlib, the
load engines) are imported inside the commands so that ``auren serve`` starts fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from auren.ops.procs import EnvironmentBroken

OK, CHECK_FAILED, USAGE, ENVIRONMENT = 0, 1, 2, 3  # auren.cli.ExitCode (not imported: cycle)

STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "n/a": "dim"}

Neuros = Annotated[str | None, typer.Option("--neuros", help="NEUROS base URL.",
                                            show_default=False)]
Legacy = Annotated[str | None, typer.Option("--legacy", help="Original Bridge base URL.",
                                            show_default=False)]
Bridge = Annotated[str | None, typer.Option("--bridge", help="Enhanced Bridge base URL.",
                                            show_default=False)]
Gateway = Annotated[str | None, typer.Option("--gateway", help="Gateway base URL.",
                                             show_default=False)]
Deployed = Annotated[bool, typer.Option(
    "--deployed", help="Run against the AUREN_*_URL settings (defaults: the ports of "
                       "`auren serve all`) instead of starting the embedded system.")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Embedded: where to start the system (default: a temp dir); against a "
                       "deployment: its AUREN_DATA_DIR, to count events in its SQLite file.",
    show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def _target(neuros: str | None, legacy: str | None, bridge: str | None, gateway: str | None,
            deployed: bool, data_dir: Path | None, err: Console) -> Iterator[Any]:
    from auren.ops.target import resolve

    overrides = {"neuros": neuros, "legacy": legacy, "bridge": bridge, "gateway": gateway}
    for name, url in overrides.items():
        if url is not None and not url.startswith(("http://", "https://")):
            err.print(f"[red]--{name} must be an http(s) URL, got {url!r}[/red]")
            raise typer.Exit(USAGE)
    try:
        if not deployed and not any(overrides.values()):
            err.print("[dim]no target given: starting the embedded system ...[/dim]")
        with resolve(overrides=overrides, deployed=deployed, data_dir=data_dir) as target:
            yield target
    except EnvironmentBroken as exc:
        err.print(f"[red]environment: {exc}[/red]")
        raise typer.Exit(ENVIRONMENT) from None


# --- serve all ----------------------------------------------------------------------------------


def serve_all(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Default: AUREN_DATA_DIR (./.auren). Logs go to <dir>/logs.",
        show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=1, max=64,
                                         help="Worker processes per service.")] = 1,
) -> None:
    """Start NEUROS (8000), the Original Bridge (8888), the Enhanced Bridge (8889) and the
    Gateway (9000) as processes; stop them all gracefully on Ctrl-C or SIGTERM."""
    import os

    from auren.ops.procs import DEFAULT_PORTS, ServiceSet, serve_all_forever
    from auren.settings import Settings

    console = Console(stderr=True)
    settings = Settings()
    services = ServiceSet(data_dir or settings.auren_data_dir, dict(os.environ),
                          dict(DEFAULT_PORTS), workers=workers)
    try:
        services.start()
    except EnvironmentBroken as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(ENVIRONMENT) from None
    table = Table(title=f"AUREN ({'embedded' if settings.embedded else 'full stack'})")
    for column in ("service", "url", "pid", "log"):
        table.add_column(column)
    for name, service in services.services.items():
        table.add_row(name, service.url, str(service.pid), str(service.log_path))
    console.print(table)
    console.print(f"dashboard: {services.services['gateway'].url}/  — Ctrl-C stops all four")
    code = serve_all_forever(services)
    if code:
        console.print(f"[red]a service died: {', '.join(services.dead())}; stopped all[/red]")
    raise typer.Exit(code)


# --- health -------------------------------------------------------------------------------------


def _health_table(sweep: Any) -> Table:
    table = Table(title=f"AUREN health sweep — {sweep.mode}")
    for column, justify in (("component", "left"), ("target", "left"), ("status", "left"),
                            ("ms", "right"), ("uptime", "right"), ("detail", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in sweep.rows:
        style = STYLE.get(row.status, "")
        table.add_row(row.component, row.target, f"[{style}]{row.status.upper()}[/{style}]",
                      "-" if row.ms is None else f"{row.ms:.1f}",
                      "-" if row.uptime_s is None else f"{row.uptime_s:.0f} s", row.detail)
    return table


def health(
    neuros: Neuros = None, legacy: Legacy = None, bridge: Bridge = None,
    gateway: Gateway = None, deployed: Deployed = False, data_dir: DataDir = None,
    as_json: JsonOut = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Per-check timeout, s.")] = 5.0,
    watch: Annotated[bool, typer.Option("--watch", help="Repeat the sweep live.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, max=3600,
                                            help="Seconds between sweeps (--watch).")] = 5.0,
    count: Annotated[int, typer.Option(min=0, help="Stop after this many sweeps (--watch); "
                                                   "0: until Ctrl-C.")] = 0,
) -> None:
    """The health sweep: every service, the proxy routes and the data plane; pass/warn/fail
    per row (n/a for what the deployment does not have), response time and uptime."""
    from auren.ops.health import sweep

    err = Console(stderr=True)
    with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target:
        if not watch:
            result = asyncio.run(sweep(target, timeout_s=timeout))
            if as_json:
                _emit_json(result.as_dict())
            else:
                Console().print(_health_table(result))
            raise typer.Exit(OK if result.ok else CHECK_FAILED)
        from rich.live import Live

        done = 0
        last: Any = None
        with contextlib.suppress(KeyboardInterrupt), Live(console=Console(),
                                                          auto_refresh=False) as live:
            while count == 0 or done < count:
                last = asyncio.run(sweep(target, timeout_s=timeout))
                done += 1
                if as_json:
                    _emit_json(last.as_dict())
                else:
                    live.update(_health_table(last), refresh=True)
                if count == 0 or done < count:
                    time.sleep(interval)
        raise typer.Exit(OK if last is None or last.ok else CHECK_FAILED)


# --- e2e ----------------------------------------------------------------------------------------


def _steps_table(title: str, steps: list[Any]) -> Table:
    table = Table(title=title)
    for column, justify in (("step", "left"), ("status", "left"), ("ms", "right"),
                            ("detail", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for step in steps:
        style = STYLE.get(step.status, "")
        table.add_row(step.name, f"[{style}]{step.status.upper()}[/{style}]",
                      "-" if step.ms is None else f"{step.ms:.0f}", step.detail)
    return table


def e2e(
    neuros: Neuros = None, legacy: Legacy = None, bridge: Bridge = None,
    gateway: Gateway = None, deployed: Deployed = False, data_dir: DataDir = None,
    as_json: JsonOut = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=120,
                                           help="Per-request timeout, s.")] = 10.0,
) -> None:
    """The functional chain: NEUROS answers; every configured provider's signed webhook is
    accepted and a tampered one rejected; the store grew by exactly what was accepted; Kafka's
    offsets grew (full stack); NEUROS's next answer reflects the new data.

    Secrets to sign with come from the same environment variables the bridge reads (the
    embedded system generates its own)."""
    from auren.ops.e2e import run_e2e

    err = Console(stderr=True)
    with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target:
        result = asyncio.run(run_e2e(target, timeout_s=timeout))
    if as_json:
        _emit_json(result.as_dict())
    else:
        Console().print(_steps_table(f"AUREN end-to-end — {target.describe()}", result.steps))
    raise typer.Exit(OK if result.ok else CHECK_FAILED)


def register(app: typer.Typer) -> None:
    """Add the toolkit's commands to the ``auren`` app."""
    app.command("health")(health)
    app.command("e2e")(e2e)
