"""The validation report: ``report.json``, ``report.md``, a self-contained ``report.html``, PNGs.

Everything is rendered from the one JSON document (``run``), so the three formats can never
disagree. Charts are matplotlib (Agg backend: no display needed) saved as PNG beside the report
and embedded in the HTML as base64 data URIs; the HTML is a jinja2 template with autoescape on,
no external asset and no network access. A small inline script counts the charts that decoded
(``data-charts-rendered`` on ``<body>``), which the screenshot test reads.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

CHARTS = ("latency_vs_concurrency", "throughput_vs_concurrency", "resources_over_time",
          "sla_baselines", "bridges_compared")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buffer.getvalue()


def _load_steps(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The ramp's closed-model steps by concurrency (bisection steps land in between)."""
    steps = list((run.get("ramp") or {}).get("steps", []))
    return sorted((s for s in steps if s["model"] == "closed"), key=lambda s: s["connections"])


def charts(run: dict[str, Any]) -> dict[str, bytes]:
    """Each chart's PNG bytes; a chart without data is drawn with a note saying so."""
    plt = _plt()
    out: dict[str, bytes] = {}
    steps = _load_steps(run)
    levels = [s["connections"] for s in steps]

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if steps:
        for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^"), ("p99.9", "-v")):
            ax.plot(levels, [s["latency_ms"].get(key, 0) for s in steps], style, label=key)
        stress = run.get("stress")
        if stress:
            ax.plot([stress["connections"]] * 2,
                    [stress["latency_ms"].get("p50", 0), stress["latency_ms"].get("p99", 0)],
                    "k_", markersize=14, label="stress p50/p99")
        limit = (run.get("webhook_sla") or {}).get("latency_ms")
        if limit:
            ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"SLA {limit:g} ms")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no load steps", ha="center", transform=ax.transAxes)
    ax.set_xlabel("concurrent connections (closed model)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Webhook latency percentiles against concurrency")
    ax.grid(True, alpha=0.3)
    out["latency_vs_concurrency"] = _save(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if steps:
        ax.plot(levels, [s["achieved_rate"] for s in steps], "-o", color="tab:blue",
                label="achieved req/s")
        stress = run.get("stress")
        if stress:
            ax.plot([stress["connections"]], [stress["achieved_rate"]], "kD", label="stress")
        ax.set_ylabel("requests/s", color="tab:blue")
        twin = ax.twinx()
        twin.plot(levels, [100 * s["error_rate"] for s in steps], "--x", color="tab:red",
                  label="errors %")
        twin.set_ylabel("errors, %", color="tab:red")
        for step in steps:
            if step["invalid"]:
                ax.annotate("invalid", (step["connections"], step["achieved_rate"]),
                            fontsize=7, color="orange")
    else:
        ax.text(0.5, 0.5, "no load steps", ha="center", transform=ax.transAxes)
    ax.set_xlabel("concurrent connections (closed model)")
    ax.set_title("Webhook throughput and errors against concurrency")
    ax.grid(True, alpha=0.3)
    out["throughput_vs_concurrency"] = _save(fig)

    fig, (cpu_ax, rss_ax) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    samples = (run.get("samples") or {}).get("samples", [])
    services = sorted({s["service"] for s in samples})
    for service in services:
        rows = [s for s in samples if s["service"] == service]
        cpu_ax.plot([r["t"] for r in rows], [r["cpu_pct"] for r in rows], label=service)
        rss_ax.plot([r["t"] for r in rows], [r["rss_mb"] for r in rows], label=service)
    for mark in (run.get("samples") or {}).get("marks", []):
        for ax in (cpu_ax, rss_ax):
            ax.axvline(mark["t"], color="grey", linewidth=0.5, alpha=0.5)
    if not samples:
        cpu_ax.text(0.5, 0.5, "no samples (no local server pids)", ha="center",
                    transform=cpu_ax.transAxes)
    cpu_ax.set_ylabel("CPU, % of a core")
    rss_ax.set_ylabel("RSS, MB")
    rss_ax.set_xlabel("seconds since the load phases started (grey: step starts)")
    cpu_ax.set_title("Server processes: CPU and memory over time")
    if services:
        cpu_ax.legend(fontsize=8, ncol=4)
    cpu_ax.grid(True, alpha=0.3)
    rss_ax.grid(True, alpha=0.3)
    out["resources_over_time"] = _save(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    verdicts = run.get("sla", [])
    if verdicts:
        names = [f"{v['row']['method']} {v['row']['path']}" for v in verdicts]
        used = [100 * v["observed_ms"] / v["row"]["latency_ms"] for v in verdicts]
        colors = ["tab:green" if v["status"] == "pass" else "tab:orange"
                  if v["status"] == "invalid" else "tab:red" for v in verdicts]
        ax.barh(names, used, color=colors)
        ax.axvline(100, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("observed percentile as % of the SLA limit (100 = at the limit)")
    else:
        ax.text(0.5, 0.5, "no SLA baselines", ha="center", transform=ax.transAxes)
    ax.set_title("SLA baselines: latency used of each limit")
    out["sla_baselines"] = _save(fig)
    out["bridges_compared"] = _comparison_chart(plt, run.get("comparison"))
    return out


def _comparison_chart(plt: Any, comparison: dict[str, Any] | None) -> bytes:
    """The Original against the Enhanced Bridge: throughput, p99 and the SLA ceiling."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    if not comparison:
        for ax in axes:
            ax.axis("off")
        axes[1].text(0.5, 0.5, "no comparison was run", ha="center", transform=axes[1].transAxes)
        return _save(fig)
    order = (comparison["baseline"], comparison["contender"])
    names = [comparison["titles"][s] for s in order]
    medians = comparison["medians"]
    colours = ["tab:gray", "tab:blue"]
    for ax, key, title in ((axes[0], "throughput", "webhooks/s"),
                           (axes[1], "p99_ms", "p99 latency, ms"),
                           (axes[2], "max_ok_connections", "max connections within SLA")):
        values = [medians[s].get(key) or 0 for s in order]
        bars = ax.bar(names, values, color=colours)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    ratio = comparison["ratios"].get("throughput")
    fig.suptitle(f"Original vs Enhanced Bridge, {comparison['connections']} connections: "
                 f"{'n/a' if ratio is None else f'{ratio:g}x'} the throughput", fontsize=10)
    fig.tight_layout()
    return _save(fig)


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_MD_ENV = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,  # noqa: S701 - Markdown, not HTML
                             trim_blocks=True, lstrip_blocks=True)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _inline_md(text: str) -> markupsafe.Markup:
    """``**bold**`` and ``code`` of a recommendation as HTML, everything else escaped."""
    escaped = str(markupsafe.escape(text))
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    escaped = re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
    return markupsafe.Markup(escaped)  # noqa: S704 - built from escaped text only


_ENV.filters["inline_md"] = _inline_md

for _env in (_ENV, _MD_ENV):
    _env.filters["fmt"] = _fmt
    _env.filters["pct"] = _pct
    _env.filters["upper_status"] = lambda s: str(s).upper()


def write(run: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write the report files into ``directory``; returns their paths by kind."""
    from auren.ops import templates
    from auren.ops.compare import table_rows

    if run.get("comparison"):
        run["comparison"]["rows"] = table_rows(run["comparison"])

    directory.mkdir(parents=True, exist_ok=True)
    images = charts(run)
    paths: dict[str, Path] = {}
    for name, data in images.items():
        path = directory / f"{name}.png"
        path.write_bytes(data)
        paths[name] = path
    embedded = {name: "data:image/png;base64," + base64.b64encode(data).decode()
                for name, data in images.items()}
    paths["json"] = directory / "report.json"
    paths["json"].write_text(json.dumps(run, indent=2, default=str) + "\n")
    paths["md"] = directory / "report.md"
    paths["md"].write_text(_MD_ENV.from_string(templates.MARKDOWN).render(
        run=run, images={n: f"{n}.png" for n in images}))
    paths["html"] = directory / "report.html"
    paths["html"].write_text(_ENV.from_string(templates.HTML).render(run=run, images=embedded))
    return paths
