"""``auren sim providers``: the provider API simulator as a server process."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from auren.observability import configure_logging
from auren.settings import Settings


def providers(
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
