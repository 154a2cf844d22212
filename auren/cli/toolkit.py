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
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from auren.cli.exit_codes import ExitCode
from auren.ops.procs import EnvironmentBroken

# The exit codes (auren.cli.exit_codes) under the short names the commands below use.
OK: int = ExitCode.OK
CHECK_FAILED: int = ExitCode.CHECK_FAILED
USAGE: int = ExitCode.USAGE
ENVIRONMENT: int = ExitCode.ENVIRONMENT

STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "n/a": "dim",
         "not reconciled": "red"}

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
# `auren faults --mode` and `auren validate --stack`.
Drills = Annotated[str, typer.Option(
    "--mode",
    help="Drills, comma-separated: kill (SIGKILL, then restart) and pause (SIGSTOP) of each "
         "dependency started by `auren infra`; slow (latency over the breaker's slow-call "
         "bound), lossy (connection resets) and partition (nothing passes) through the fault "
         "proxy; upstream (the gateway's link to the bridge slower than its timeout); `both` = "
         "kill,pause; `all`.")]
Stack = Annotated[str, typer.Option(
    "--stack",
    help="With no target: embedded (SQLite, the default) or full: `auren infra` brings Kafka, "
         "PostgreSQL and Redis up in a private directory on free ports (--data-dir to name it "
         "and keep it), with the fault proxy in front of them and of the services; the "
         "services and the sink start against it; everything is torn down at the end, also "
         "on Ctrl-C or failure.")]


def _console() -> Console:
    """stdout; wide when it is not a terminal (tables in CI logs and pipes stay readable)."""
    console = Console()
    return console if console.is_terminal else Console(width=180)


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
            raise typer.Exit(ExitCode.USAGE)
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
    code = OK
    try:
        services.start()
        table = Table(title=f"AUREN ({'embedded' if settings.embedded else 'full stack'})")
        for column in ("service", "url", "pid", "log"):
            table.add_column(column)
        for name, service in services.services.items():
            table.add_row(name, service.url if service.port else "-", str(service.pid),
                          str(service.log_path))
        console.print(table)
        console.print(f"operations console: {services.services['gateway'].url}/  — Ctrl-C "
                      "stops them all")
        if not settings.gateway_console_users and not settings.auren_api_keys:
            console.print("[dim]no console login is configured: set GATEWAY_CONSOLE_USERS "
                          "(auren console hash-password) or AUREN_API_KEYS[/dim]")
        code = serve_all_forever(services)
        if code:
            console.print(f"[red]a service died: {', '.join(services.dead())}; stopping "
                          "all[/red]")
    except EnvironmentBroken as exc:
        console.print(f"[red]{exc}[/red]")
        code = ENVIRONMENT
    except KeyboardInterrupt:
        pass  # Ctrl-C before the signal handlers were in place: the same graceful stop
    finally:
        services.stop()
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
    public: Annotated[str | None, typer.Option(
        "--public", show_default=False,
        help="The public base URL in front of the gateway (a Vercel deployment of "
             "deploy/vercel.json, or the TLS proxy's API host): its /api/neuros/* and "
             "/api/bridge/* routes are probed. Default: AUREN_PUBLIC_GATEWAY_URL.")] = None,
) -> None:
    """The health sweep: every service, the proxy routes (the gateway's, and a public
    deployment's) and the data plane; pass/warn/fail per row (n/a for what the deployment
    does not have), response time and uptime."""
    from auren.ops.health import sweep

    err = Console(stderr=True)
    if public is not None and not public.startswith(("http://", "https://")):
        err.print(f"[red]--public must be an http(s) URL, got {public!r}[/red]")
        raise typer.Exit(USAGE)
    with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target:
        if not watch:
            result = asyncio.run(sweep(target, timeout_s=timeout, public_url=public))
            if as_json:
                _emit_json(result.as_dict())
            else:
                _console().print(_health_table(result))
            raise typer.Exit(OK if result.ok else CHECK_FAILED)
        from rich.live import Live

        done = 0
        last: Any = None
        with contextlib.suppress(KeyboardInterrupt), Live(console=Console(),
                                                          auto_refresh=False) as live:
            while count == 0 or done < count:
                last = asyncio.run(sweep(target, timeout_s=timeout, public_url=public))
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
        _console().print(_steps_table(f"AUREN end-to-end — {target.describe()}", result.steps))
    raise typer.Exit(OK if result.ok else CHECK_FAILED)


# --- loadtest -----------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def step_table(title: str, steps: list[Any], row: Any = None) -> Table:
    from auren.ops.sla import verdict

    table = Table(title=title)
    for column in ("step", "engine", "target/s", "achieved/s", "p50", "p95", "p99", "p99.9",
                   "max ms", "errors", "503", "CPU% peak", "RSS MB", "ERROR logs", "verdict"):
        table.add_column(column, justify="left" if column in ("step", "engine", "verdict")
                         else "right")
    for step in steps:
        lat = step.latency_ms
        cpu = sum(v["cpu_peak_pct"] for v in step.server.values()) if step.server else None
        rss = sum(v["rss_peak_mb"] for v in step.server.values()) if step.server else None
        if step.invalid:
            mark = "[yellow]INVALID[/yellow]"
        elif row is not None:
            status = verdict(row, lat, step.error_rate, step.invalid).status
            mark = f"[{STYLE[status]}]{status.upper()}[/{STYLE[status]}]"
        else:
            mark = "-"
        table.add_row(
            step.label, f"{step.engine}/{step.model}",
            "-" if step.target_rate is None else f"{step.target_rate:.0f}",
            f"{step.achieved_rate:.0f}", *(f"{lat.get(k, 0):.1f}" for k in
                                          ("p50", "p95", "p99", "p99.9", "max")),
            f"{step.error_rate:.2%}", str(step.shed_503), _mb(cpu), _mb(rss),
            str(sum(step.error_lines.values())), mark)
    return table


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Any]:
    """A rich progress bar per step on stderr; a no-op callback when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bars:
        def update(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=1.0)
            bars.update(tasks[label], completed=fraction)

        yield update


def _levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("--ramp takes comma-separated numbers, e.g. 50,100,200") from None
    if not levels or any(v <= 0 for v in levels) or levels != sorted(levels):
        raise typer.BadParameter("--ramp levels must be positive and increasing")
    return levels


NoReconcile = Annotated[bool, typer.Option(
    "--no-reconcile", help="Do not compare the webhooks with the store (when it cannot be read "
                           "from here); the verdict then says that no loss was measured.")]


def _print_reconciliation(console: Console, recon: dict[str, Any]) -> None:
    style = STYLE.get(recon["status"], "yellow")
    console.print(f"reconciliation: [{style}]{recon['status'].upper()}[/{style}] "
                  f"{recon['detail']}")


def loadtest(
    neuros: Neuros = None, legacy: Legacy = None, bridge: Bridge = None,
    gateway: Gateway = None, deployed: Deployed = False, data_dir: DataDir = None,
    as_json: JsonOut = False,
    endpoint: Annotated[str, typer.Option(
        help="webhooks (unique signed, to the bridge), chat (NEUROS) or health.")] = "webhooks",
    service: Annotated[str | None, typer.Option(
        help="Which service to load (default: bridge for webhooks and health, neuros for "
             "chat).", show_default=False)] = None,
    model: Annotated[str, typer.Option(help="closed (fixed connections) or open (constant "
                                            "arrival rate, latency from intended send).")] =
        "closed",
    connections: Annotated[int, typer.Option("--connections", "-c", min=1, max=10_000,
                                             help="Connections (closed), or the most on the "
                                                  "wire (open).")] = 100,
    rate: Annotated[float, typer.Option(min=0.1, max=1_000_000,
                                        help="Requests/s (open model).")] = 200.0,
    duration: Annotated[float, typer.Option("--duration", "-d", min=0.5, max=240,
                                            help="Seconds per step (signatures expire "
                                                 "after 300 s).")] = 30.0,
    ramp_levels: Annotated[str | None, typer.Option(
        "--ramp", help="Progressive test: comma-separated levels (connections, or req/s with "
                       "--model open); the breaking point is bisected.",
        show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="auto (wrk for closed >= 100 connections when "
                                             "installed), builtin or wrk.")] = "auto",
    sla_file: Annotated[Path | None, typer.Option("--sla", help="SLA YAML (default: the "
                                                                "validation plan's table).",
                                                  show_default=False)] = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=120,
                                           help="Per-request timeout, s.")] = 10.0,
    no_reconcile: NoReconcile = False,
    compare: Annotated[str | None, typer.Option(
        "--compare", help="legacy,bridge: drive the Original and the Enhanced Bridge with the "
                          "same signed webhooks and connections, back to back: throughput, "
                          "p50/p99, errors, CPU, memory, the ratios, and the highest "
                          "concurrency of each that meets the webhook SLA (-c, -d and --ramp "
                          "apply; default ramp 25,50,100,200,400,800).",
        show_default=False)] = None,
    runs: Annotated[int, typer.Option(min=1, max=20, help="--compare: rounds; the figures "
                                                          "are their medians.")] = 1,
) -> None:
    """Closed- or open-model load with HDR percentiles, server CPU/RSS, ERROR log lines and a
    reconciliation by identity of every webhook against the store: lost (acknowledged ids not
    stored) and duplicated must be 0, and a store that cannot be read fails the run."""
    from auren.ops import loadtest as lt
    from auren.ops import sla

    err = Console(stderr=True)
    if compare is not None:
        _compare(compare, runs, connections, duration, ramp_levels, engine, sla_file,
                 (neuros, legacy, bridge, gateway, deployed, data_dir), as_json, err)
        return
    if endpoint not in lt.ENDPOINTS or model not in ("closed", "open") or \
            engine not in ("auto", "builtin", "wrk"):
        err.print("[red]--endpoint webhooks|chat|health, --model closed|open, "
                  "--engine auto|builtin|wrk[/red]")
        raise typer.Exit(ExitCode.USAGE)
    if engine == "wrk" and (model == "open" or not shutil.which("wrk")):
        err.print("[red]--engine wrk needs wrk installed and the closed model[/red]")
        raise typer.Exit(ExitCode.USAGE)
    try:
        rows = sla.load(sla_file)
        levels = _levels(ramp_levels) if ramp_levels else None
    except (sla.SLAConfigError, typer.BadParameter) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(ExitCode.USAGE) from None
    plan = lt.Plan(endpoint, service, model, connections, rate, duration, levels, engine,
                   timeout, reconcile=not no_reconcile)
    with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target, \
            progress_bars(not as_json and sys.stderr.isatty()) as progress:
        try:
            outcome = lt.run(target, plan, rows, progress)
        except lt.NoSecret as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(ExitCode.USAGE) from None
    if as_json:
        _emit_json(outcome.as_dict())
    else:
        console = _console()
        console.print(step_table(f"AUREN load test — {outcome.target} — "
                                 f"{outcome.row.describe()}", outcome.steps, outcome.row))
        for step in outcome.steps:
            if step.invalid:
                console.print(f"[yellow]{step.label}: INVALID — {step.invalid_reason}[/yellow]")
        if outcome.ramp is not None:
            console.print(f"breaking point: {outcome.ramp.conclusion}")
        _print_reconciliation(console, outcome.reconciliation.as_dict())
    raise typer.Exit(outcome.exit_code)


def _compare(pair_text: str, runs: int, connections: int, duration: float,
             ramp_levels: str | None, engine: str, sla_file: Path | None,
             where: tuple[str | None, str | None, str | None, str | None, bool, Path | None],
             as_json: bool, err: Console) -> None:
    """``auren loadtest --compare legacy,bridge``."""
    from auren.ops import compare as cmp
    from auren.ops import loadtest as lt
    from auren.ops import sla

    try:
        pair = cmp.parse_pair(pair_text)
        rows = sla.load(sla_file)
        levels = tuple(_levels(ramp_levels)) if ramp_levels else cmp.DEFAULT_LEVELS
    except (ValueError, sla.SLAConfigError, typer.BadParameter) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(ExitCode.USAGE) from None
    if engine not in ("auto", "builtin", "wrk") or (engine == "wrk" and not shutil.which("wrk")):
        err.print("[red]--engine auto|builtin|wrk (wrk must be installed)[/red]")
        raise typer.Exit(ExitCode.USAGE)
    plan = cmp.Plan(connections, duration, levels, min(duration, 5.0), runs, engine)

    def log(message: str) -> None:
        err.print(f"[dim]{message}[/dim]")

    with _target(*where, err) as target, \
            progress_bars(not as_json and sys.stderr.isatty()) as progress:
        try:
            result = cmp.run(target, plan, sla.webhook_row(rows), pair=pair,
                             progress=progress, log=log)
        except (lt.NoSecret, ValueError) as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(ExitCode.USAGE) from None
    summary = result.as_dict()
    if as_json:
        _emit_json({**summary, "steps": [s.as_dict() for s in result.steps]})
    else:
        _print_comparison(summary)
    recon = result.reconciliation
    raise typer.Exit(CHECK_FAILED if recon is not None and recon.blocks_pass else OK)


def _print_comparison(summary: dict[str, Any]) -> None:
    console = _console()
    titles = summary["titles"]
    table = Table(title=f"{titles[summary['baseline']]} vs {titles[summary['contender']]} — "
                        f"{summary['mode']}, {summary['connections']} connections, median of "
                        f"{summary['runs']} round(s)")
    for column in ("metric", titles[summary["baseline"]], titles[summary["contender"]],
                   "ratio"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    from auren.ops.compare import table_rows

    for row in table_rows(summary):
        table.add_row(*row)
    console.print(table)
    console.print(summary["verdict"])
    for text in summary["differences"]:
        console.print(f"  - {text}")
    if summary["reconciliation"] is not None:
        _print_reconciliation(console, summary["reconciliation"])


# --- faults -------------------------------------------------------------------------------------



def faults(
    neuros: Neuros = None, legacy: Legacy = None, bridge: Bridge = None,
    gateway: Gateway = None, deployed: Deployed = False, data_dir: DataDir = None,
    as_json: JsonOut = False, mode: Drills = "all",
    fault_s: Annotated[float, typer.Option(min=1, max=300,
                                           help="How long each fault lasts, s.")] = 8.0,
    rate: Annotated[float, typer.Option(min=1, max=10_000,
                                        help="Webhooks/s during each fault.")] = 40.0,
    no_reconcile: NoReconcile = False,
) -> None:
    """Circuit-breaker verification: a malformed burst gets only 4xx and opens no breaker;
    each drill fails a dependency (or the gateway's upstream link) under load, the breaker
    opens, requests are accepted or shed with 503 + Retry-After (504 at the gateway), it
    recovers, and every webhook acknowledged meanwhile is stored (by identity). Faults are
    always undone, also on Ctrl-C."""
    from auren.ops import faults as fault_ops

    err = Console(stderr=True)
    try:
        drills = fault_ops.parse_drills(mode)
    except ValueError as exc:
        err.print(f"[red]--mode: {exc}[/red]")
        raise typer.Exit(ExitCode.USAGE) from None
    with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target:
        result = fault_ops.FaultsResult()
        result.checks.append(asyncio.run(fault_ops.malformed_burst(target)))
        dependency = fault_ops.dependency_faults(target, drills=drills, fault_s=fault_s,
                                                 rate=rate)
        result.checks.extend(dependency.checks)
        result.steps.extend(dependency.steps)
        loss = fault_ops.loss_check(target, result.steps, enabled=not no_reconcile)
        if loss is not None:
            result.checks.append(loss)
    if as_json:
        _emit_json(result.as_dict())
    else:
        console = _console()
        table = Table(title=f"AUREN faults — {target.describe()}")
        for column in ("check", "status", "detail"):
            table.add_column(column)
        for check in result.checks:
            style = STYLE.get(check.status, "")
            table.add_row(check.name, f"[{style}]{check.status.upper()}[/{style}]",
                          check.detail)
        console.print(table)
    raise typer.Exit(OK if result.ok else CHECK_FAILED)


# --- validate -----------------------------------------------------------------------------------



def validate(
    neuros: Neuros = None, legacy: Legacy = None, bridge: Bridge = None,
    gateway: Gateway = None, deployed: Deployed = False, data_dir: DataDir = None,
    as_json: JsonOut = False, stack: Stack = "embedded",
    quick: Annotated[bool, typer.Option("--quick", help="Short phases (a few minutes in "
                                                        "all).")] = False,
    sla_file: Annotated[Path | None, typer.Option("--sla", help="SLA YAML (default: the "
                                                                "validation plan's table).",
                                                  show_default=False)] = None,
    ramp_levels: Annotated[str | None, typer.Option(
        "--ramp", help="Connections of the progressive test (default 50,100,200,500; "
                       "--quick 25,100,400).", show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="auto, builtin or wrk (closed model).")] = "auto",
    reports: Annotated[Path, typer.Option("--reports", help="Where report directories go.")] =
        Path("reports"),
    no_faults: Annotated[bool, typer.Option("--no-faults", help="Skip the faults phase.")] =
        False,
    no_reconcile: NoReconcile = False,
    no_compare: Annotated[bool, typer.Option(
        "--no-compare", help="Skip the Original-against-Enhanced-Bridge comparison.")] = False,
) -> None:
    """Every phase of the validation plan in order — health, e2e, SLA baselines, stress at
    100 connections, the progressive ramp and its breaking point, faults and drills,
    reconciliation by identity — and one report directory reports/<UTC timestamp>/
    (report.md, report.html, report.json, PNGs). It cannot PASS unless every acknowledged
    webhook was found in the store (or --no-reconcile, which the verdict then says).
    """
    from auren.ops import sla
    from auren.ops import validate as validation
    from auren.ops.faults import sigterm_unwinds

    err = Console(stderr=True)
    if engine not in ("auto", "builtin", "wrk") or stack not in ("embedded", "full"):
        err.print("[red]--engine auto|builtin|wrk, --stack embedded|full[/red]")
        raise typer.Exit(ExitCode.USAGE)
    if stack == "full" and (deployed or any((neuros, legacy, bridge, gateway))):
        err.print("[red]--stack full starts its own system: give no target URLs[/red]")
        raise typer.Exit(ExitCode.USAGE)
    try:
        rows = sla.load(sla_file)
        levels = tuple(_levels(ramp_levels)) if ramp_levels else None
    except (sla.SLAConfigError, typer.BadParameter) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(ExitCode.USAGE) from None
    plan = validation.Plan.make(quick=quick, rows=rows, ramp=levels, engine=engine,
                                faults=not no_faults, reconcile=not no_reconcile,
                                compare=not no_compare)
    directory = validation.report_dir(reports)

    def log(message: str) -> None:
        err.print(f"[dim]{message}[/dim]")

    with sigterm_unwinds(), _system(stack, neuros, legacy, bridge, gateway, deployed, data_dir,
                                    err, log) as target:
        if not target.settings.standard_webhook_secret:
            err.print("[red]the load phases sign webhooks with STANDARD_WEBHOOK_SECRET: set "
                      "it to the bridge's secret[/red]")
            raise typer.Exit(ExitCode.USAGE)
        with progress_bars(not as_json and sys.stderr.isatty()) as progress:
            run = validation.run_validation(target, plan, log=log, progress=progress)
        if stack == "full":
            from auren.ops.fullstack import keep_logs

            kept = keep_logs(target, directory)
            run["environment"]["logs"] = f"{kept} (copied before the stack was torn down)"
        paths = validation.write_report(run, directory)
    if as_json:
        _emit_json({"verdict": run["verdict"], "verdict_note": run["verdict_note"],
                    "report": {k: str(v) for k, v in paths.items()},
                    "validation": run["validation"], "performance": run["performance"],
                    "recommendations": run["recommendations"]})
    else:
        _print_validation(run, paths)
    code = {"PASS": OK, "FAIL": CHECK_FAILED, "NOT RECONCILED": CHECK_FAILED,
            "INVALID": ENVIRONMENT}[run["verdict"]]
    raise typer.Exit(code)


@contextlib.contextmanager
def _system(stack: str, neuros: str | None, legacy: str | None, bridge: str | None,
            gateway: str | None, deployed: bool, data_dir: Path | None, err: Console,
            log: Any) -> Iterator[Any]:
    if stack == "embedded":
        with _target(neuros, legacy, bridge, gateway, deployed, data_dir, err) as target:
            yield target
        return
    from auren.ops.fullstack import full_stack_system

    try:
        with full_stack_system(data_dir, log=log) as target:
            yield target
    except EnvironmentBroken as exc:
        err.print(f"[red]environment: {exc}[/red]")
        raise typer.Exit(ENVIRONMENT) from None


def _print_validation(run: dict[str, Any], paths: dict[str, Path]) -> None:
    console = _console()
    table = Table(title="System Validation Report")
    for column in ("area", "status", "detail"):
        table.add_column(column)
    for row in run["validation"]:
        style = STYLE.get(row["status"], "")
        table.add_row(row["area"], f"[{style}]{row['status'].upper()}[/{style}]", row["detail"])
    console.print(table)
    perf = run["performance"]
    at = perf["at_100"]
    peak = perf["peak"]
    metrics = Table(title="Performance Metrics")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")

    def num(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:.1f}{unit}"

    metrics.add_row("max concurrent webhooks handled",
                    f"{perf['max_concurrent_webhooks'] or '-'} {perf['max_concurrent_note']}")
    metrics.add_row(f"response time at {at['connections']} concurrent",
                    f"mean {num(at['mean'], ' ms')}, p95 {num(at['p95'], ' ms')}, "
                    f"p99 {num(at['p99'], ' ms')}")
    metrics.add_row(f"error rate at peak ({peak['label']})",
                    "-" if peak["error_rate"] is None else f"{peak['error_rate']:.2%}")
    metrics.add_row("CPU at peak (server processes, % of a core)",
                    num(peak["cpu_peak_pct"], " %"))
    metrics.add_row("memory at peak (RSS)", num(peak["rss_peak_mb"], " MB"))
    metrics.add_row("events lost (by identity)", "not reconciled" if perf["events_lost"] is None
                    else str(perf["events_lost"]))
    console.print(metrics)
    for verdict in run["sla"]:
        style = STYLE.get(verdict["status"], "yellow")
        row = verdict["row"]
        console.print(f"SLA {row['method']} {row['path']}: p{row['percentile']:g} "
                      f"{verdict['observed_ms']:.1f} ms (< {row['latency_ms']:g}), errors "
                      f"{verdict['error_rate']:.3%} (< {row['error_rate']:.3%}): "
                      f"[{style}]{verdict['status'].upper()}[/{style}]")
    console.print(f"breaking point: {run['ramp']['conclusion']}")
    if run.get("comparison"):
        console.print(f"the 100x claim: {run['comparison']['verdict']}")
    _print_reconciliation(console, run["reconciliation"])
    console.print("recommendations:")
    for text in run["recommendations"]:
        console.print(f"  - {text.replace('**', '')}")
    style = {"PASS": "green", "FAIL": "red", "NOT RECONCILED": "red"}.get(run["verdict"],
                                                                        "yellow")
    note = f" — {run['verdict_note']}" if run.get("verdict_note") else ""
    console.print(f"verdict: [{style}]{run['verdict']}[/{style}]{note}")
    console.print(f"report: {paths['html']}  (also report.md, report.json and the charts "
                  f"in {paths['html'].parent})")


# --- faultproxy ---------------------------------------------------------------------------------


def faultproxy(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Control API port (loopback).")] =
        8474,
    routes: Annotated[list[str] | None, typer.Option(
        "--route", help="NAME=LISTEN_PORT=UPSTREAM_HOST:PORT, repeatable: listen on "
                        "127.0.0.1:LISTEN_PORT and forward to the upstream.",
        show_default=False)] = None,
) -> None:
    """The fault proxy (Toxiproxy's model: latency, jitter, bandwidth, slicing, timeouts, reset
    peer, disabled routes) in front of dependencies or services, driven by its JSON control API
    on 127.0.0.1:PORT; `auren faults` uses it. Runs until SIGTERM or Ctrl-C."""
    import signal as signals

    from auren.observability import configure_logging
    from auren.ops import faultproxy as fp

    err = Console(stderr=True)
    try:
        parsed = [fp.parse_route(text) for text in routes or []]
    except fp.FaultProxyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(ExitCode.USAGE) from None
    if not parsed:
        err.print("[red]give at least one --route[/red]")
        raise typer.Exit(ExitCode.USAGE)
    configure_logging("INFO")
    # SIGTERM ends it like Ctrl-C: uvicorn's handler stops the control API, then the routes.
    signals.signal(signals.SIGTERM, signals.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fp.serve(port, parsed))
