"""The ``auren`` command: thin over the library. Options parse, settings build, library runs."""

from __future__ import annotations

import asyncio
import enum
from typing import Annotated
from urllib.parse import urlsplit

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from auren import db_cli, simulator
from auren.infra_cli import infra_app
from auren.observability import configure_logging
from auren.ops import cli as ops_cli
from auren.services.runtime import server_options
from auren.settings import Settings

app = typer.Typer(help="AUREN: verified biometric ingestion, insights and validation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
serve_app = typer.Typer(help="Run a service.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
# `auren infra up | down | status`: the loopback Kafka/PostgreSQL/Redis stack (auren.infra).
app.add_typer(infra_app, name="infra")
# `auren db upgrade` and `auren sink`: the full stack's PostgreSQL side (auren.db_cli).
db_cli.register(app)


class ExitCode(enum.IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    ENVIRONMENT = 3


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


@serve_app.command("bridge")
def serve_bridge(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8889,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Start the Enhanced Biometric Bridge v2."""
    _serve("bridge", host, port, workers)


@serve_app.command("neuros")
def serve_neuros(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Start NEUROS, the chat service over a person's own biometrics."""
    _serve("neuros", host, port, workers)


@serve_app.command("legacy")
def serve_legacy(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8888,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Start the Original Bridge v1 (per-request, no batching), kept for legacy clients."""
    _serve("legacy", host, port, workers)


@serve_app.command("gateway")
def serve_gateway(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 9000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Start the Gateway: /api/neuros/*, /api/bridge/*, /api/legacy/* and the dashboard."""
    _serve("gateway", host, port, workers)


# `auren serve all` and the validation toolkit (auren.ops.cli holds their code).
serve_app.command("all")(ops_cli.serve_all)
ops_cli.register(app)


class SimProvider(enum.StrEnum):
    auren = "auren"
    terra = "terra"
    garmin = "garmin"
    apple = "apple"
    oura = "oura"
    whoop = "whoop"
    fitbit = "fitbit"
    polar = "polar"
    withings = "withings"
    all = "all"


@app.command("simulate")
def simulate(
    to: Annotated[str, typer.Option("--to", help="Base URL of the bridge.")] =
        "http://127.0.0.1:8889",
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated users.")] = 10,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days of history per user.")] = 7,
    provider: Annotated[SimProvider, typer.Option(
        help="Wire format to send; 'all' sends every provider that is configured.")] =
        SimProvider.auren,
    rate: Annotated[float | None, typer.Option(
        min=0.01, help="Constant arrival rate in deliveries/s (open model); default: as fast "
                       "as --concurrency allows.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000,
                                             help="Requests in flight at most.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic histories.")] = 0,
    timeout: Annotated[float, typer.Option(min=0.1, max=120, help="Per-request timeout, s.")] =
        10.0,
    max_duration: Annotated[float, typer.Option(
        min=1, max=86_400, help="Send nothing new after this many seconds.")] = 600.0,
) -> None:
    """Send realistic, signed wearable webhooks for synthetic users to a bridge.

    Secrets come from the same environment variables the bridge reads. Exit code 0 when every
    delivery was answered 2xx, 1 otherwise, 2 for bad usage (such as a provider with no secret).
    """
    err = Console(stderr=True)
    parts = urlsplit(to)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        err.print(f"[red]--to must be an http(s) URL, got {to!r}[/red]")
        raise typer.Exit(ExitCode.USAGE)
    names = list(simulator.PROVIDERS) if provider is SimProvider.all else [provider.value]
    targets, skipped = simulator.resolve_providers(Settings(), names)
    for name, reason in skipped.items():
        err.print(f"[yellow]skipping {name}: {reason}[/yellow]")
    if not targets or (provider is not SimProvider.all and skipped):
        err.print("[red]no provider can be simulated: configure its secret in the environment "
                  "(the same variables the bridge reads)[/red]")
        raise typer.Exit(ExitCode.USAGE)

    histories = simulator.generate_users(users, days, seed)
    deliveries = simulator.render_deliveries(histories, targets)
    summary = asyncio.run(simulator.deliver(
        to, deliveries, concurrency=concurrency, rate=rate, timeout_s=timeout,
        max_duration_s=max_duration, keep_results=False))
    _print_summary(Console(), summary, to)
    raise typer.Exit(ExitCode.OK if summary.all_ok else ExitCode.CHECK_FAILED)


def _print_summary(console: Console, summary: simulator.DeliverySummary, to: str) -> None:
    table = Table(title=f"Simulated deliveries to {to}")
    for column in ("provider", "sent", "2xx", "accepted", "duplicates", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for name, tally in sorted(summary.by_provider.items()):
        latency = summary.latency_ms(name)
        table.add_row(name, str(tally.sent), str(tally.ok), str(tally.accepted),
                      str(tally.duplicates), f"{latency['p50']:.1f}", f"{latency['p99']:.1f}")
    latency = summary.latency_ms()
    table.add_row("[bold]total[/bold]", str(summary.sent), str(summary.succeeded),
                  str(summary.accepted), str(summary.duplicates), f"{latency['p50']:.1f}",
                  f"{latency['p99']:.1f}")
    console.print(table)
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(summary.by_status.items()))
    console.print(f"statuses: {statuses or 'none'}; elapsed {summary.elapsed_s:.2f} s, "
                  f"{summary.sent / summary.elapsed_s if summary.elapsed_s else 0:.0f}/s")
    if summary.errors:
        errors = ", ".join(f"{name}: {n}" for name, n in summary.errors.most_common())
        console.print(f"[red]transport errors: {errors}[/red]")
    if summary.stopped_early:
        console.print("[red]stopped at --max-duration before every delivery was sent[/red]")
    if summary.duplicates:
        console.print("[yellow]items already stored were deduplicated (was this seed sent "
                      "before?); re-deliveries are never stored twice[/yellow]")
    # Thin providers (and Fitbit's empty 204) schedule fetches rather than store events.
    console.print("accepted = events or fetch jobs newly made durable, as the bridge reported")


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=1, max=1000, help="Simulated users.")] = 5,
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of history per user.")] = 30,
) -> None:
    """Run the embedded system end to end: a real bridge, every provider's signed webhooks,
    the data read back and reconciled. Needs nothing but this package."""
    from auren.demo import run_demo  # the demo pulls in the simulator and httpx only when used

    settings = Settings()
    configure_logging("WARNING")
    console = Console()
    with console.status("starting the bridge and sending simulated webhooks ..."):
        result = run_demo(settings, users=users, days=days)
    _print_summary(console, result.summary, "the embedded bridge")
    table = Table(title="Latest readings of the first simulated user (read API)")
    for column in ("metric", "latest", "unit", "at", "events"):
        table.add_column(column)
    for metric, row in result.metrics_of_first_user.items():
        table.add_row(metric, f"{row['value']:.6g}", row["unit"], row["start"][:16],
                      str(row["count"]))
    console.print(table)
    console.print(f"store: {result.stored_events} canonical events and {result.stored_jobs} "
                  f"fetch jobs; the bridge accepted {result.accepted}: "
                  + ("[green]every accepted item is stored exactly once[/green]"
                     if not result.problems else "[red]MISMATCH[/red]"))
    for problem in result.problems:
        console.print(f"[red]- {problem}[/red]")
    console.print(f"data and the bridge's log: {result.data_dir}")
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.CHECK_FAILED)


def main() -> None:  # pragma: no cover - console entry point
    app()
