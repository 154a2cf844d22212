"""jinja2 templates of the validation report (HTML autoescaped; Markdown plain)."""

from __future__ import annotations

MARKDOWN = """\
# {{ run.title }}

Generated {{ run.generated_at }} against **{{ run.target }}**{% if run.quick %} (quick run){% endif %}.
Overall verdict: **{{ run.verdict }}**{% if run.verdict_note %} — {{ run.verdict_note }}{% endif %}.

## System Validation Report

| area | status | detail |
|---|---|---|
{% for row in run.validation %}
| {{ row.area }} | **{{ row.status | upper_status }}** | {{ row.detail }} |
{% endfor %}

## Performance Metrics

| metric | value |
|---|---|
| Max concurrent webhooks handled (within the webhook SLA) | {{ run.performance.max_concurrent_webhooks | fmt }} {{ run.performance.max_concurrent_note }} |
| Average response time at {{ run.performance.at_100.connections }} concurrent | {{ run.performance.at_100.mean | fmt }} ms (p95 {{ run.performance.at_100.p95 | fmt }} ms, p99 {{ run.performance.at_100.p99 | fmt }} ms) |
| Error rate at peak load ({{ run.performance.peak.label }}) | {{ run.performance.peak.error_rate | pct }} |
| CPU usage at peak (server processes, % of one core; {{ run.environment.cpu_count }} cores) | {{ run.performance.peak.cpu_peak_pct | fmt }} % |
| Memory usage at peak (server processes, RSS) | {{ run.performance.peak.rss_peak_mb | fmt }} MB |
{% set probe = run.performance.health_under_load or {} %}| /health while stressed ({{ run.performance.at_100.connections }} concurrent, every 0.1 s) | {% if probe.count %}p50 {{ probe.p50 | fmt }} ms, p99 {{ probe.p99 | fmt }} ms (bound {{ run.performance.health_under_load_bound_ms | fmt }} ms), {{ probe.failures }} of {{ probe.count }} not 200{% else %}n/a (no probe answered){% endif %} |
{% set cost = run.performance.cpu_per_webhook %}| CPU per webhook at {{ run.performance.at_100.connections }} concurrent | {% if cost %}bridge {{ cost.bridge_ms | fmt(3) }} ms; every service process sampled ({{ cost.services | join(", ") }}) {{ cost.stack_ms | fmt(3) }} ms{% else %}n/a (no CPU sample){% endif %} |
| Events lost (acknowledged ids not stored, by identity) | **{{ run.performance.events_lost if run.performance.events_lost is not none else "not reconciled" }}** |
| Events stored more than once | {{ run.performance.events_duplicated if run.performance.events_duplicated is not none else "not reconciled" }} |
| ERROR lines logged during load | {{ run.performance.error_log_lines }} |

Breaking point: {{ run.ramp.conclusion if run.ramp else "no ramp was run" }}.

Reconciliation: **{{ run.reconciliation.status | upper_status }}** — {{ run.reconciliation.detail }}

![latency]({{ images.latency_vs_concurrency }})
![throughput]({{ images.throughput_vs_concurrency }})
![resources]({{ images.resources_over_time }})
![sla]({{ images.sla_baselines }})

### SLA baselines (open model, latency from the intended send time)

| endpoint | threshold | observed | errors | rate | status |
|---|---|---|---|---|---|
{% for v in run.sla %}
| {{ v.row.method }} {{ v.row.path }} ({{ v.row.service }}) | p{{ '%g' % v.row.percentile }} < {{ '%g' % v.row.latency_ms }} ms, errors < {{ v.row.error_rate | pct(3) }} | {{ v.observed_ms | fmt }} ms | {{ v.error_rate | pct(3) }} | {{ '%g' % v.row.rate }}/s | **{{ v.status | upper_status }}**{% if v.invalid_reason %} ({{ v.invalid_reason }}){% endif %} |
{% endfor %}

### Load steps

| step | engine | achieved/s | p50 | p95 | p99 | p99.9 | max | errors | 503 | bridge CPU peak | RSS peak | ERROR lines | note |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{% for s in run.load_steps %}
| {{ s.label }} | {{ s.engine }}/{{ s.model }} | {{ s.achieved_rate | fmt(0) }} | {{ s.latency_ms.p50 | fmt }} | {{ s.latency_ms.p95 | fmt }} | {{ s.latency_ms.p99 | fmt }} | {{ s.latency_ms['p99.9'] | fmt }} | {{ s.latency_ms.max | fmt }} | {{ s.error_rate | pct }} | {{ s.statuses.get('503', 0) }} | {{ (s.server.get('bridge') or {}).get('cpu_peak_pct') | fmt }} % | {{ (s.server.get('bridge') or {}).get('rss_peak_mb') | fmt }} MB | {{ s.error_lines.values() | sum }} | {{ 'INVALID: ' ~ s.invalid_reason if s.invalid else '' }} |
{% endfor %}

{% if run.comparison %}
## The "100x" claim: Original Bridge against Enhanced Bridge

{{ run.comparison.verdict }}

| metric | {{ run.comparison.titles[run.comparison.baseline] }} | {{ run.comparison.titles[run.comparison.contender] }} | ratio |
|---|---|---|---|
{% for row in run.comparison.rows %}
| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} | {{ row[3] }} |
{% endfor %}

Same signed workload, {{ run.comparison.connections }} connections, the same machine, back to back ({{ run.comparison.mode }}). What explains the difference:

{% for text in run.comparison.differences %}
- {{ text }}
{% endfor %}

![bridges compared]({{ images.bridges_compared }})
{% endif %}

{% if run.faults %}
### Faults

| check | status | detail |
|---|---|---|
{% for c in run.faults.checks %}
| {{ c.name }} | **{{ c.status | upper_status }}** | {{ c.detail }} |
{% endfor %}
{% endif %}

## Recommendations

{% for r in run.recommendations %}
- {{ r }}
{% else %}
- No rule fired: nothing in the measurements calls for a change.
{% endfor %}

## Environment

| | |
|---|---|
{% for key, value in run.environment.items() %}
| {{ key }} | {{ value }} |
{% endfor %}
"""

HTML = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ run.title }}</title>
<style>
 body { font-family: system-ui, -apple-system, sans-serif; margin: 2em auto; max-width: 1100px;
        color: #1f2328; padding: 0 1em; }
 h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
 table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
 th, td { border: 1px solid #d0d7de; padding: .35em .7em; text-align: left; vertical-align: top; }
 th { background: #f6f8fa; }
 .pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
 .warn, .invalid { color: #9a6700; font-weight: bold; } .na { color: #656d76; }
 .not-reconciled { color: #cf222e; font-weight: bold; }
 .verdict { font-size: 1.3em; }
 .charts img { max-width: 100%; border: 1px solid #d0d7de; margin: .5em 0; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body data-charts-rendered="0">
<h1>{{ run.title }}</h1>
<p>Generated {{ run.generated_at }} against <strong>{{ run.target }}</strong>{% if run.quick %} (quick run){% endif %}.
<span class="verdict">Overall verdict:
<span class="{{ run.verdict | lower | replace(' ', '-') }}" id="verdict">{{ run.verdict }}</span></span>
{% if run.verdict_note %}<br><span id="verdict-note">{{ run.verdict_note }}</span>{% endif %}</p>

<h2>System Validation Report</h2>
<table id="validation">
<tr><th>area</th><th>status</th><th>detail</th></tr>
{% for row in run.validation %}
<tr><td>{{ row.area }}</td><td class="{{ row.status | replace('/', '') }}">{{ row.status | upper_status }}</td><td>{{ row.detail }}</td></tr>
{% endfor %}
</table>

<h2>Performance Metrics</h2>
<table id="performance">
<tr><th>metric</th><th>value</th></tr>
<tr><td>Max concurrent webhooks handled (within the webhook SLA)</td><td class="num">{{ run.performance.max_concurrent_webhooks | fmt }} {{ run.performance.max_concurrent_note }}</td></tr>
<tr><td>Average response time at {{ run.performance.at_100.connections }} concurrent</td><td class="num">{{ run.performance.at_100.mean | fmt }} ms (p95 {{ run.performance.at_100.p95 | fmt }} ms, p99 {{ run.performance.at_100.p99 | fmt }} ms)</td></tr>
<tr><td>Error rate at peak load ({{ run.performance.peak.label }})</td><td class="num">{{ run.performance.peak.error_rate | pct }}</td></tr>
<tr><td>CPU usage at peak (server processes, % of one core; {{ run.environment.cpu_count }} cores)</td><td class="num">{{ run.performance.peak.cpu_peak_pct | fmt }} %</td></tr>
<tr><td>Memory usage at peak (server processes, RSS)</td><td class="num">{{ run.performance.peak.rss_peak_mb | fmt }} MB</td></tr>
{% set probe = run.performance.health_under_load or {} %}<tr><td>/health while stressed ({{ run.performance.at_100.connections }} concurrent, every 0.1 s)</td><td class="num">{% if probe.count %}p50 {{ probe.p50 | fmt }} ms, p99 {{ probe.p99 | fmt }} ms (bound {{ run.performance.health_under_load_bound_ms | fmt }} ms), {{ probe.failures }} of {{ probe.count }} not 200{% else %}n/a (no probe answered){% endif %}</td></tr>
{% set cost = run.performance.cpu_per_webhook %}<tr><td>CPU per webhook at {{ run.performance.at_100.connections }} concurrent</td><td class="num">{% if cost %}bridge {{ cost.bridge_ms | fmt(3) }} ms; every service process sampled ({{ cost.services | join(", ") }}) {{ cost.stack_ms | fmt(3) }} ms{% else %}n/a (no CPU sample){% endif %}</td></tr>
{% if run.performance.events_lost is none %}
<tr><td>Events lost (acknowledged ids not stored, by identity)</td><td class="num not-reconciled" id="events-lost">not reconciled</td></tr>
{% else %}
<tr><td>Events lost (acknowledged ids not stored, by identity)</td><td class="num {{ 'pass' if run.performance.events_lost == 0 else 'fail' }}" id="events-lost">{{ run.performance.events_lost }}</td></tr>
{% endif %}
<tr><td>Events stored more than once</td><td class="num">{{ run.performance.events_duplicated if run.performance.events_duplicated is not none else "not reconciled" }}</td></tr>
<tr><td>ERROR lines logged during load</td><td class="num">{{ run.performance.error_log_lines }}</td></tr>
</table>
<p>Breaking point: {{ run.ramp.conclusion if run.ramp else "no ramp was run" }}.</p>
<p id="reconciliation">Reconciliation: <span class="{{ run.reconciliation.status | replace('/', '') | replace(' ', '-') }}">{{ run.reconciliation.status | upper_status }}</span> — {{ run.reconciliation.detail }}</p>

<div class="charts">
{% for name, uri in images.items() %}
<img alt="{{ name }}" id="chart-{{ name }}" src="{{ uri }}">
{% endfor %}
</div>

<h2>SLA baselines</h2>
<p>Open model: requests sent at a constant rate, latency measured from the intended send time.</p>
<table id="sla">
<tr><th>endpoint</th><th>threshold</th><th>observed</th><th>errors</th><th>rate</th><th>status</th></tr>
{% for v in run.sla %}
<tr><td>{{ v.row.method }} {{ v.row.path }} ({{ v.row.service }})</td>
<td>p{{ '%g' % v.row.percentile }} &lt; {{ '%g' % v.row.latency_ms }} ms, errors &lt; {{ v.row.error_rate | pct(3) }}</td>
<td class="num">{{ v.observed_ms | fmt }} ms</td><td class="num">{{ v.error_rate | pct(3) }}</td>
<td class="num">{{ '%g' % v.row.rate }}/s</td>
<td class="{{ v.status }}">{{ v.status | upper_status }}{% if v.invalid_reason %} ({{ v.invalid_reason }}){% endif %}</td></tr>
{% endfor %}
</table>

<h2>Load steps</h2>
<table id="steps">
<tr><th>step</th><th>engine</th><th>achieved/s</th><th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>max ms</th><th>errors</th><th>503</th><th>bridge CPU peak</th><th>RSS peak</th><th>ERROR lines</th><th>note</th></tr>
{% for s in run.load_steps %}
<tr><td>{{ s.label }}</td><td>{{ s.engine }}/{{ s.model }}</td><td class="num">{{ s.achieved_rate | fmt(0) }}</td>
<td class="num">{{ s.latency_ms.p50 | fmt }}</td><td class="num">{{ s.latency_ms.p95 | fmt }}</td>
<td class="num">{{ s.latency_ms.p99 | fmt }}</td><td class="num">{{ s.latency_ms['p99.9'] | fmt }}</td>
<td class="num">{{ s.latency_ms.max | fmt }}</td><td class="num">{{ s.error_rate | pct }}</td>
<td class="num">{{ s.statuses.get('503', 0) }}</td>
<td class="num">{{ (s.server.get('bridge') or {}).get('cpu_peak_pct') | fmt }} %</td>
<td class="num">{{ (s.server.get('bridge') or {}).get('rss_peak_mb') | fmt }} MB</td>
<td class="num">{{ s.error_lines.values() | sum }}</td>
<td class="{{ 'invalid' if s.invalid else '' }}">{{ 'INVALID: ' ~ s.invalid_reason if s.invalid else '' }}</td></tr>
{% endfor %}
</table>

<h2>Health sweep and end-to-end chain</h2>
<table id="health">
<tr><th>component</th><th>status</th><th>ms</th><th>uptime</th><th>detail</th></tr>
{% for r in run.health.rows %}
<tr><td>{{ r.component }}</td><td class="{{ r.status | replace('/', '') }}">{{ r.status | upper_status }}</td>
<td class="num">{{ r.ms | fmt }}</td><td class="num">{{ r.uptime_s | fmt(0) }}</td><td>{{ r.detail }}</td></tr>
{% endfor %}
</table>
<table id="e2e">
<tr><th>step</th><th>status</th><th>detail</th></tr>
{% for s in run.e2e.steps %}
<tr><td>{{ s.name }}</td><td class="{{ s.status | replace('/', '') }}">{{ s.status | upper_status }}</td><td>{{ s.detail }}</td></tr>
{% endfor %}
</table>

{% if run.comparison %}
<h2 id="claim">The "100x" claim: Original Bridge against Enhanced Bridge</h2>
<p id="claim-verdict">{{ run.comparison.verdict }}</p>
<table id="comparison">
<tr><th>metric</th><th>{{ run.comparison.titles[run.comparison.baseline] }}</th><th>{{ run.comparison.titles[run.comparison.contender] }}</th><th>ratio</th></tr>
{% for row in run.comparison.rows %}
<tr><td>{{ row[0] }}</td><td class="num">{{ row[1] }}</td><td class="num">{{ row[2] }}</td><td class="num">{{ row[3] }}</td></tr>
{% endfor %}
</table>
<p>Same signed workload, {{ run.comparison.connections }} connections, the same machine, back to back ({{ run.comparison.mode }}). What explains the difference:</p>
<ul id="differences">
{% for text in run.comparison.differences %}
<li>{{ text | inline_md }}</li>
{% endfor %}
</ul>
{% endif %}

{% if run.faults %}
<h2>Faults</h2>
<table id="faults">
<tr><th>check</th><th>status</th><th>detail</th></tr>
{% for c in run.faults.checks %}
<tr><td>{{ c.name }}</td><td class="{{ c.status | replace('/', '') }}">{{ c.status | upper_status }}</td><td>{{ c.detail }}</td></tr>
{% endfor %}
</table>
{% endif %}

<h2>Recommendations</h2>
<ul id="recommendations">
{% for r in run.recommendations %}
<li>{{ r | inline_md }}</li>
{% else %}
<li>No rule fired: nothing in the measurements calls for a change.</li>
{% endfor %}
</ul>

<h2>Environment</h2>
<table id="environment">
{% for key, value in run.environment.items() %}
<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}
</table>
<script>
// Counts the charts that decoded, for the headless-browser test (no effect on the page).
window.addEventListener("load", function () {
  var ok = 0;
  document.querySelectorAll(".charts img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; }
  });
  document.body.setAttribute("data-charts-rendered", String(ok));
});
</script>
</body>
</html>
"""
