"""The Grafana dashboards of ``deploy/grafana/dashboards/``, built in code.

Panels are built with Grafana's foundation SDK (its typed builders produce the dashboard JSON
model Grafana itself defines), one function per dashboard: overview, bridge per provider, data
plane (Kafka lag, spool, breakers, PostgreSQL, Redis) and NEUROS. :func:`generate` writes one
JSON file per dashboard, which Grafana's file provisioning reads (``deploy/grafana/
provisioning/``). The SLA panels draw the validation plan's thresholds from ``auren.ops.sla``
and read the series the recording rules of ``deploy/prometheus/rules/`` compute.

``tests/docsgen/test_dashboards.py`` regenerates the files and fails on any difference, and
fails when a panel queries a metric no AUREN service exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeSeriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

from auren.ops import sla

# The data source deploy/grafana/provisioning/datasources/ creates, referred to by its uid.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="auren-prometheus")
TAGS = ["auren"]
_HEIGHT = 8
_REFRESH = "30s"

Query = tuple[str, str]  # (PromQL, legend)


class _Ids:
    """Panel ids, unique within a dashboard, in the order panels are added."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> int:
        self._next += 1
        return self._next


def _targets(queries: Sequence[Query]) -> list[Dataquery]:
    return [Dataquery().expr(expr).legend_format(legend).range().ref_id(chr(ord("A") + i))
            for i, (expr, legend) in enumerate(queries)]


def _thresholds(limit: float | None) -> ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if limit is not None:
        steps.append(Threshold(value=limit, color="red"))
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def timeseries(ids: _Ids, title: str, description: str, unit: str, queries: Sequence[Query],
               *, limit: float | None = None, span: int = 12) -> TimeSeriesPanel:
    """A time series panel; ``limit`` draws a dashed red line at an SLA threshold."""
    panel = (TimeSeriesPanel().id(ids()).title(title).description(description)
             .datasource(DATASOURCE).unit(unit).span(span).height(_HEIGHT)
             .line_width(1).fill_opacity(10).thresholds(_thresholds(limit))
             .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM).show_legend(True)))
    if limit is not None:
        panel = panel.thresholds_style(
            GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def stat(ids: _Ids, title: str, description: str, queries: Sequence[Query], *,
         mapping: dict[str, tuple[str, str]] | None = None, limit: float | None = None,
         span: int = 12, unit: str = "short") -> StatPanel:
    """One big number per series (its last value); ``mapping`` names and colours values."""
    panel = (StatPanel().id(ids()).title(title).description(description)
             .datasource(DATASOURCE).unit(unit).span(span).height(_HEIGHT // 2)
             .graph_mode(BigValueGraphMode.NONE).color_mode(BigValueColorMode.BACKGROUND)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(_thresholds(limit)).no_value("0"))
    if mapping:
        panel = panel.mappings([ValueMap(options={
            value: ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(sorted(mapping.items()))})])
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def _row(ids: _Ids, title: str) -> Row:
    return Row(title).id(ids())


def _board(uid: str, title: str, description: str) -> Dashboard:
    return (Dashboard(title).uid(uid).description(description).tags(TAGS)
            .refresh(_REFRESH).time("now-6h", "now").timezone("utc")
            .tooltip(DashboardCursorSync.CROSSHAIR).readonly())


def _sla_row(workload: str) -> sla.SLARow:
    (row,) = [r for r in sla.load(None) if r.workload == workload]
    return row


def sla_latency(ids: _Ids, what: str, row: sla.SLARow, record: str,
                note: str) -> TimeSeriesPanel:
    """An SLA row's latency percentile (the ``<record>:p95_5m`` recording rule), with the
    row's bound drawn."""
    series = f"{record}:p95_5m"
    return timeseries(ids, f"{what} p{row.percentile:g} (SLA < {row.latency_ms:g} ms)",
                      f"Recorded by {series} {note}.", "s", [(series, "{{job}}")],
                      limit=row.latency_ms / 1000)


def sla_errors(ids: _Ids, what: str, row: sla.SLARow, record: str,
               description: str) -> TimeSeriesPanel:
    """An SLA row's 5xx ratio (the ``<record>:ratio_rate5m`` recording rule), with its bound."""
    return timeseries(ids, f"{what} 5xx ratio (SLA < {row.error_rate:.1%})", description,
                      "percentunit", [(f"{record}:ratio_rate5m", "{{job}}")],
                      limit=row.error_rate)


_UP = {"0": ("DOWN", "red"), "1": ("UP", "green")}
_BREAKER = {"0": ("closed", "green"), "1": ("half-open", "orange"), "2": ("open", "red")}


def overview() -> Dashboard:
    ids = _Ids()
    webhooks, chat = _sla_row("webhooks"), _sla_row("chat")
    return (
        _board("auren-overview", "AUREN overview",
               "Is every service up, and is each SLA row of the validation plan held?")
        .with_row(_row(ids, "Services"))
        .with_panel(stat(ids, "Up", "Whether Prometheus can scrape each service's /metrics.",
                         [('up{job=~"auren-.+"}', "{{job}}")], mapping=_UP, span=16))
        .with_panel(stat(ids, "Firing alerts", "AUREN alerts firing now, by severity "
                                               "(docs/runbooks.md says what to do).",
                         [('count by (severity) '
                           '(ALERTS{alertstate="firing", alertname=~"Auren.+"})',
                           "{{severity}}")], limit=1, span=8))
        .with_row(_row(ids, "SLA (the validation plan's table)"))
        .with_panel(sla_latency(ids, "Webhook", webhooks, "job:auren_webhook_latency_seconds",
                                "over 5 minutes"))
        .with_panel(sla_errors(ids, "Webhook", webhooks, "job:auren_webhook_errors",
                               "5xx answers over all webhook answers; 401s of bad signatures "
                               "are not errors."))
        .with_panel(sla_latency(ids, "Chat", chat, "job:auren_chat_latency_seconds",
                                "(POST /chat)"))
        .with_panel(sla_errors(ids, "Chat", chat, "job:auren_chat_errors",
                               "5xx answers over all chat answers; 429 (rate limited) is not "
                               "an error."))
        .with_row(_row(ids, "Traffic"))
        .with_panel(timeseries(ids, "Webhooks per second", "Both bridges, every answer.",
                               "reqps", [("job:auren_webhook_requests:rate5m", "{{job}}")]))
        .with_panel(timeseries(ids, "Events stored per second",
                               "Canonical events and fetch jobs newly made durable.", "ops",
                               [("sum by (job) (rate(auren_events_stored_total[5m]))",
                                 "{{job}}")]))
        .with_panel(timeseries(ids, "Chats per second", "NEUROS, every answer.", "reqps",
                               [("job:auren_chat_requests:rate5m", "{{job}}")]))
        .with_panel(timeseries(
            ids, "Gateway requests per second", "By upstream and status; 502/504 are "
                                                "upstreams the gateway could not reach in time.",
            "reqps", [("sum by (upstream, status) (rate(auren_gateway_requests_total[5m]))",
                       "{{upstream}} {{status}}")]))
    )


def bridge() -> Dashboard:
    ids = _Ids()
    webhooks = _sla_row("webhooks")
    selector = 'job="$job", provider=~"$provider"'
    job = (QueryVariable("job").label("Bridge").datasource(DATASOURCE)
           .query("label_values(auren_webhook_requests_total, job)")
           .refresh(VariableRefresh.ON_DASHBOARD_LOAD).sort(VariableSort.ALPHABETICAL_ASC))
    provider = (QueryVariable("provider").label("Provider").datasource(DATASOURCE)
                .query('label_values(auren_webhook_requests_total{job="$job"}, provider)')
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True))

    def quantile(q: float) -> Query:
        return (f"histogram_quantile({q:g}, sum by (provider, le) "
                f"(rate(auren_webhook_latency_seconds_bucket{{{selector}}}[5m])))",
                "{{provider}}")

    return (
        _board("auren-bridge", "AUREN bridge",
               "Webhooks per provider: answers, latency, what was stored, admission and the "
               "group commit. Choose the Enhanced (auren-bridge) or Original (auren-legacy) "
               "bridge above.")
        .with_variable(job).with_variable(provider)
        .with_row(_row(ids, "Answers per provider"))
        .with_panel(timeseries(ids, "Webhooks per second by status", "Every answer.",
                               "reqps",
                               [(f"sum by (provider, status) "
                                 f"(rate(auren_webhook_requests_total{{{selector}}}[5m]))",
                                 "{{provider}} {{status}}")], span=24))
        .with_panel(timeseries(ids, f"p95 latency (SLA < {webhooks.latency_ms:g} ms)",
                               "From the first byte read to the answer.", "s",
                               [quantile(0.95)], limit=webhooks.latency_ms / 1000))
        .with_panel(timeseries(ids, "p99 latency", "From the first byte read to the answer.",
                               "s", [quantile(0.99)]))
        .with_panel(timeseries(ids, "Events stored per second",
                               "Canonical events and fetch jobs newly made durable.", "ops",
                               [(f"sum by (provider) "
                                 f"(rate(auren_events_stored_total{{{selector}}}[5m]))",
                                 "{{provider}}")], span=8))
        .with_panel(timeseries(ids, "Duplicates per second",
                               "Re-deliveries and items already stored (answered 200).", "ops",
                               [(f"sum by (provider) "
                                 f"(rate(auren_duplicates_total{{{selector}}}[5m]))",
                                 "{{provider}}")], span=8))
        .with_panel(timeseries(ids, "Signature failures per second",
                               "Rejected with 401 before anything was parsed.", "reqps",
                               [(f"sum by (provider) "
                                 f"(rate(auren_signature_failures_total{{{selector}}}[5m]))",
                                 "{{provider}}")], span=8))
        .with_row(_row(ids, "Admission and group commit"))
        .with_panel(timeseries(ids, "Webhooks in flight and waiting",
                               "Holding an admission slot, and waiting for one "
                               "(MAX_CONCURRENT_WEBHOOKS, MAX_QUEUED_WEBHOOKS).", "short",
                               [('sum(auren_webhooks_in_flight{job="$job"})', "in flight"),
                                ('sum(auren_webhooks_waiting{job="$job"})', "waiting")],
                               span=8))
        .with_panel(timeseries(ids, "Shed with 503 per second",
                               "Admission full for ADMISSION_WAIT_S.", "reqps",
                               [('sum(rate(auren_admission_rejected_total{job="$job"}[5m]))',
                                 "shed")], span=8))
        .with_panel(timeseries(ids, "Group commit time p95",
                               "Making one batch durable (store commit, or Kafka's "
                               "acknowledgement).", "s",
                               [('histogram_quantile(0.95, sum by (le) '
                                 '(rate(auren_commit_seconds_bucket{job="$job"}[5m])))', "p95")],
                               span=8))
        .with_panel(timeseries(ids, "Deliveries and events per group commit (median)",
                               "How many webhooks share one durable write.", "short",
                               [('histogram_quantile(0.5, sum by (le) (rate('
                                 'auren_commit_batch_deliveries_bucket{job="$job"}[5m])))',
                                 "deliveries"),
                                ('histogram_quantile(0.5, sum by (le) (rate('
                                 'auren_commit_batch_events_bucket{job="$job"}[5m])))',
                                 "events")], span=24))
    )


def data_plane() -> Dashboard:
    ids = _Ids()
    return (
        _board("auren-data-plane", "AUREN data plane",
               "The full stack: Kafka and the sinks' lag, the bridges' spool, the circuit "
               "breakers, PostgreSQL and Redis.")
        .with_row(_row(ids, "Kafka and the sink"))
        .with_panel(timeseries(ids, "Consumer lag",
                               "Records the sinks are behind the newest offsets.", "short",
                               [("sum(auren_sink_consumer_lag)", "total"),
                                ("sum by (instance) (auren_sink_consumer_lag)",
                                 "{{instance}}")]))
        .with_panel(timeseries(ids, "Committed to PostgreSQL per second",
                               "Records (deliveries), events and fetch jobs the sinks wrote.",
                               "ops",
                               [("sum(rate(auren_sink_records_total[5m]))", "records"),
                                ("sum(rate(auren_sink_events_total[5m]))", "events"),
                                ("sum(rate(auren_sink_jobs_total[5m]))", "fetch jobs")]))
        .with_panel(timeseries(ids, "Sink retries and skipped records",
                               "Failed PostgreSQL attempts of a batch; poison records.",
                               "short",
                               [("sum by (instance) (increase(auren_sink_retries_total[5m]))",
                                 "retries {{instance}}"),
                                ("sum by (instance) (increase(auren_sink_skipped_total[5m]))",
                                 "skipped {{instance}}")], span=8))
        .with_panel(timeseries(ids, "Since the last committed batch",
                               "Grows while there is nothing to consume.", "s",
                               [("auren_sink_last_batch_age_seconds", "{{instance}}")],
                               span=8))
        .with_panel(timeseries(ids, "Producer queue and delivery failures",
                               "Records in the bridges' producers not yet reported on, and "
                               "records Kafka did not acknowledge, by error.", "short",
                               [("sum by (instance) (auren_bus_queue_depth)",
                                 "queued {{instance}}"),
                                ("sum by (error) "
                                 "(increase(auren_bus_delivery_failures_total[5m]))",
                                 "failed {{error}}")], span=8))
        .with_row(_row(ids, "Spool (deliveries acknowledged while Kafka did not take them)"))
        .with_panel(timeseries(ids, "Deliveries in the spool", "Per bridge process; "
                                                               "replayed in order.", "short",
                               [("sum by (instance) (auren_spool_records)", "{{instance}}")],
                               span=8))
        .with_panel(timeseries(ids, "Spool size", "Bounded by SPOOL_MAX_BYTES per process.",
                               "bytes",
                               [("sum by (instance) (auren_spool_bytes)", "{{instance}}")],
                               span=8))
        .with_panel(timeseries(ids, "Spooled and replayed per second", "", "ops",
                               [("sum(rate(auren_spool_written_total[5m]))", "written"),
                                ("sum(rate(auren_spool_replayed_total[5m]))", "replayed")],
                               span=8))
        .with_row(_row(ids, "Circuit breakers"))
        .with_panel(timeseries(ids, "Breaker state", "0 closed, 1 half-open, 2 open.", "short",
                               [("auren_breaker_state", "{{job}} {{breaker}}")], limit=1))
        .with_panel(timeseries(ids, "Breaker transitions (15 min)",
                               "State changes by breaker and new state.", "short",
                               [("sum by (breaker, to) "
                                 "(increase(auren_breaker_transitions_total[15m]))",
                                 "{{breaker}} to {{to}}")]))
        .with_panel(timeseries(ids, "Slow calls and stalls per second",
                               "Calls past the slow-call threshold; stall-rule openings.",
                               "ops",
                               [("sum by (breaker) (rate(auren_breaker_slow_calls_total[5m]))",
                                 "slow {{breaker}}"),
                                ("sum by (breaker) (rate(auren_breaker_stalls_total[5m]))",
                                 "stalls {{breaker}}")], span=8))
        .with_panel(timeseries(ids, "Calls in flight", "Calls to the dependency in progress.",
                               "short",
                               [("sum by (breaker) (auren_breaker_calls_in_flight)",
                                 "{{breaker}}")], span=8))
        .with_panel(timeseries(ids, "Refused by an open breaker per second", "", "ops",
                               [("sum by (breaker) (rate(auren_breaker_rejected_total[5m]))",
                                 "{{breaker}}")], span=8))
        .with_row(_row(ids, "PostgreSQL and Redis"))
        .with_panel(timeseries(ids, "PostgreSQL breaker state by process",
                               "0 closed, 1 half-open, 2 open.", "short",
                               [('auren_breaker_state{breaker="postgres"}',
                                 "{{job}} {{instance}}")], limit=1, span=8))
        .with_panel(timeseries(ids, "PostgreSQL slow calls and calls in flight",
                               "Operations past POSTGRES_SLOW_CALL_S; operations running.",
                               "short",
                               [('sum by (job) (rate(auren_breaker_slow_calls_total'
                                 '{breaker="postgres"}[5m]))', "slow/s {{job}}"),
                                ('sum by (job) (auren_breaker_calls_in_flight'
                                 '{breaker="postgres"})', "in flight {{job}}")], span=8))
        .with_panel(timeseries(ids, "Sink transactions per second",
                               "One PostgreSQL transaction per committed batch.", "ops",
                               [("sum(rate(auren_sink_batches_total[5m]))", "batches")],
                               span=8))
        .with_panel(timeseries(ids, "Redis errors per second",
                               "Failed round trips; Redis is a fast path only.", "ops",
                               [("sum by (job) (rate(auren_redis_errors_total[5m]))",
                                 "{{job}}")]))
        .with_panel(timeseries(ids, "Redis breaker state", "0 closed, 1 half-open, 2 open.",
                               "short", [('auren_breaker_state{breaker="redis"}',
                                          "{{job}} {{instance}}")], limit=1))
    )


def neuros() -> Dashboard:
    ids = _Ids()
    chat = _sla_row("chat")

    def quantile(q: float) -> Query:
        return (f"histogram_quantile({q:g}, sum by (endpoint, le) "
                f"(rate(auren_neuros_chat_latency_seconds_bucket[5m])))",
                f"p{q * 100:g} {{{{endpoint}}}}")

    return (
        _board("auren-neuros", "AUREN NEUROS",
               "Chats: answers by intent and status, latency, the LLM phase, rate limits and "
               "the daily-series cache.")
        .with_row(_row(ids, "Chats"))
        .with_panel(timeseries(ids, "Answered chats per second by intent", "", "reqps",
                               [('sum by (intent) '
                                 '(rate(auren_neuros_chat_requests_total{status="200"}[5m]))',
                                 "{{intent}}")]))
        .with_panel(timeseries(ids, "Chats per second by status",
                               "4xx are the caller's (429: over the per-user rate).", "reqps",
                               [("sum by (status) (rate(auren_neuros_chat_requests_total[5m]))",
                                 "{{status}}")]))
        .with_panel(timeseries(ids, f"Latency (SLA p{chat.percentile:g} < "
                                    f"{chat.latency_ms:g} ms)",
                               "POST /chat and the streamed variant.", "s",
                               [quantile(0.5), quantile(0.95)], limit=chat.latency_ms / 1000))
        .with_panel(timeseries(ids, "Rate limited per second",
                               "Refused by NEUROS_RATE_PER_MINUTE.", "reqps",
                               [("sum(rate(auren_neuros_rate_limited_total[5m]))", "429")]))
        .with_row(_row(ids, "LLM and cache"))
        .with_panel(timeseries(ids, "LLM phrasing by outcome",
                               "Anything but ok fell back to the builtin phrasing.", "ops",
                               [("sum by (outcome) (rate(auren_neuros_llm_calls_total[5m]))",
                                 "{{outcome}}")], span=8))
        .with_panel(timeseries(ids, "LLM phase p95", "Bounded by NEUROS_LLM_TIMEOUT_S.", "s",
                               [("histogram_quantile(0.95, sum by (le) "
                                 "(rate(auren_neuros_llm_latency_seconds_bucket[5m])))",
                                 "p95")], span=8))
        .with_panel(timeseries(ids, "Daily-series cache hit ratio",
                               "In process first, then Redis for what the process missed.",
                               "percentunit",
                               [('sum by (level) (rate(auren_neuros_cache_lookups_total'
                                 '{result="hit"}[5m])) / sum by (level) '
                                 '(rate(auren_neuros_cache_lookups_total[5m]))', "{{level}}")],
                               span=8))
    )


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "auren-overview": overview,
    "auren-bridge": bridge,
    "auren-data-plane": data_plane,
    "auren-neuros": neuros,
}


def render(name: str) -> str:
    """A dashboard's JSON exactly as checked in: sorted keys, two spaces, a final newline."""
    model = DASHBOARDS[name]().build()
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def generate(directory: Path) -> list[Path]:
    """Write every dashboard to ``directory/<uid>.json``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        path = directory / f"{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written


def panel_queries(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' panels included."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels") or [])

    for panel in panels(document.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield str(panel.get("title", "")), str(target["expr"])
