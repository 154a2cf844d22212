"""``auren reprocess``: archived raw payloads parsed again by the current code (thin over
:mod:`auren.services.reprocessing`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer

from auren.cli.exit_codes import ExitCode
from auren.errors import AurenError
from auren.events import parse_time
from auren.observability import configure_logging
from auren.providers import PROVIDER_CLASSES
from auren.settings import Settings


def _since(text: str) -> datetime:
    try:
        if len(text) == 10:  # a date: its first instant in UTC
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        return parse_time(text)
    except ValueError:
        raise typer.BadParameter("a date (2026-01-31) or an RFC 3339 instant") from None


def reprocess_command(
    since: Annotated[str, typer.Option(help="Payloads received since this date (UTC) or "
                                            "RFC 3339 instant.")],
    provider: Annotated[str | None, typer.Option(help="Only this provider's payloads.")] = None,
    user: Annotated[str | None, typer.Option(help="Only payloads naming this user, and only "
                                                  "their events.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Re-parse archived raw payloads (ARCHIVE_RAW_PAYLOADS) with the current normalization
    code and store the result through the durable path, provenance `reprocess`: events not
    stored are added, stored ones with another value are corrected in place (same event id),
    the rest stay. Idempotent: a second run stores nothing. Exit 1 when a payload could not
    be opened or parsed."""
    moment = _since(since)
    if provider is not None and provider not in PROVIDER_CLASSES:
        raise typer.BadParameter(f"unknown provider {provider!r}", param_hint="--provider")
    settings = Settings()
    configure_logging(settings.log_level)
    from auren.services.reprocessing import run_reprocess

    try:
        report, spooled = asyncio.run(run_reprocess(settings, since=moment, provider=provider,
                                                    user_id=user))
    except (AurenError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
    if as_json:
        typer.echo(orjson.dumps({**report.as_dict(), "spooled": spooled}).decode())
    else:
        what = "added or corrected" if settings.kafka_bootstrap_servers is None else "published"
        typer.echo(f"payloads {report.payloads}, deliveries {report.deliveries} "
                   f"({report.repeated} already reprocessed), events {report.events}, "
                   f"{what} {report.stored}")
        for name, count in report.unconfigured.items():
            typer.echo(f"skipped {count} payload(s) of {name}: provider not configured")
        for failure in report.failed:
            typer.echo(f"failed {failure['provider']}:{failure['delivery_key']}: "
                       f"{failure['reason']}")
        if spooled:
            typer.echo(f"{spooled} delivery(ies) wait in the spool under AUREN_DATA_DIR: a "
                       "bridge sharing that directory replays them")
    if report.failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)
