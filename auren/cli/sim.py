"""``auren simulate``, ``auren demo`` and ``auren sim providers``: synthetic wearers' signed
webhooks and the simulated provider clouds, thin over :mod:`auren.sim`."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated
from urllib.parse import urlsplit

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from auren.cli.exit_codes import ExitCode
from auren.observability import configure_logging
from auren.settings import Settings
from auren.sim.render import PROVIDERS, render_deliveries, resolve_providers
from auren.sim.send import DeliverySummary, deliver
from auren.sim.wearers import generate_users

# "auren|terra|...|all": the simulator's providers, listed once (auren.sim.render.PROVIDERS).
_PROVIDER_CHOICES = "|".join([*PROVIDERS, "all"])


def _check_provider(value: str) -> str:
    if value != "all" and value not in PROVIDERS:
        raise typer.BadParameter(f"{value!r} is not one of {_PROVIDER_CHOICES}")
    return value


def simulate(
    to: Annotated[str, typer.Option("--to", help="Base URL of the bridge.")] =
        "http://127.0.0.1:8889",
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated users.")] = 10,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days of history per user.")] = 7,
    provider: Annotated[str, typer.Option(
        metavar=_PROVIDER_CHOICES, callback=_check_provider,
        help="Wire format to send; 'all' sends every provider that is configured.")] = "auren",
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
    names = list(PROVIDERS) if provider == "all" else [provider]
    targets, skipped = resolve_providers(Settings(), names)
    for name, reason in skipped.items():
        err.print(f"[yellow]skipping {name}: {reason}[/yellow]")
    if not targets or (provider != "all" and skipped):
        err.print("[red]no provider can be simulated: configure its secret in the environment "
                  "(the same variables the bridge reads)[/red]")
        raise typer.Exit(ExitCode.USAGE)

    histories = generate_users(users, days, seed)
    deliveries = render_deliveries(histories, targets)
    summary = asyncio.run(deliver(
        to, deliveries, concurrency=concurrency, rate=rate, timeout_s=timeout,
        max_duration_s=max_duration, keep_results=False))
    _print_summary(Console(), summary, to)
    raise typer.Exit(ExitCode.OK if summary.all_ok else ExitCode.CHECK_FAILED)


def _print_summary(console: Console, summary: DeliverySummary, to: str) -> None:
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


def demo(
    users: Annotated[int, typer.Option(min=1, max=50, help="Simulated people.")] = 3,
    days: Annotated[int, typer.Option(min=1, max=90, help="Days of history each has (and "
                                                          "AUREN backfills).")] = 14,
) -> None:
    """Simulated people connect every wearable (Oura, WHOOP, Fitbit, Polar, Withings, Garmin,
    Terra) through the provider API simulator; AUREN fetches their history and a new day, and
    NEUROS answers from it. Real processes, embedded: needs nothing but this package."""
    from auren.sim.demo import run_demo  # starts processes: loaded only when it runs

    settings = Settings()
    configure_logging("WARNING")
    console = Console()
    with console.status("connecting simulated people to every provider, fetching ..."):
        result = run_demo(settings, users=users, days=days)
    table = Table(title="Events AUREN fetched (and Terra pushed), per person and provider")
    table.add_column("person")
    providers = sorted({p for counts in result.events.values() for p, _ in counts})
    for provider in providers:
        table.add_column(provider, justify="right")
    for person, counts in result.events.items():
        table.add_row(person, *(" / ".join(f"{counts[(provider, kind)]} {kind}"
                                           for kind in ("backfill", "fetch", "push")
                                           if counts[(provider, kind)]) or "-"
                                for provider in providers))
    console.print(table)
    for person, answers in result.answers.items():
        for question, reply in answers:
            console.print(f"[bold]{person}[/bold]: {question}\n  NEUROS: {reply}")
    states = ", ".join(f"{state} {n}" for state, n in sorted(result.jobs.items()))
    console.print(f"fetch jobs: {states or 'none'}")
    if result.ok:
        console.print("[green]every account connected, every job done, every provider "
                      "delivered, no event stored twice[/green]")
    for problem in result.problems:
        console.print(f"[red]- {problem}[/red]")
    console.print(f"data and the logs: {result.data_dir}")
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.CHECK_FAILED)


def sim_providers(
    host: Annotated[str, typer.Option(help="Interface to bind (the admin API has no "
                                           "authentication: keep it on the loopback).")] =
        "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8890,
    bridge: Annotated[str | None, typer.Option(
        help="Base URL of the bridge that receives notifications (POST "
             "{bridge}/webhooks/{provider}); none: notifications are recorded, not sent.")] =
        None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic wearers.")] = 0,
    users: Annotated[int, typer.Option(min=1, max=10_000, help="Simulated wearers.")] = 20,
    days: Annotated[int, typer.Option(min=0, max=3650,
                                      help="Days of history visible at start.")] = 60,
    future_days: Annotated[int, typer.Option(
        min=0, max=3650, help="Days that `advance` can still reveal.")] = 30,
    end_date: Annotated[str | None, typer.Option(
        help="Last visible day at start, YYYY-MM-DD (default: two days ago, UTC).")] = None,
) -> None:
    """Serve Oura, WHOOP, Fitbit, Polar, Withings, Garmin and Terra's APIs from synthetic
    wearers: OAuth, data, errors, limits, faults and signed notifications (docs/simulator.md).

    Provider secrets and client credentials are read from the same environment as the bridge.
    """
    # Imported here: every other `auren` command would otherwise pay for loading the app.
    from auren.sim.api.app import SimConfig, create_app, provider_urls

    settings = Settings()
    configure_logging(settings.log_level)
    try:
        last = date.fromisoformat(end_date) if end_date else None
    except ValueError:
        raise typer.BadParameter("--end-date must be YYYY-MM-DD") from None
    if days + future_days < 1:
        raise typer.BadParameter("--days plus --future-days must be at least 1")
    config = SimConfig(seed=seed, users=users, history_days=days, future_days=future_days,
                       end_date=last, bridge_url=bridge)
    app = create_app(config, settings)
    console = Console(stderr=True)
    base = f"http://{host}:{port}"
    console.print(f"provider API simulator on {base} (admin: {base}/_sim/config)")
    for name, url in provider_urls(base).items():
        console.print(f"  {name}={url}")
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=int(settings.shutdown_timeout_s))
