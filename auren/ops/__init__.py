"""The validation toolkit: every phase of the validation plan as a command, and one report.

``health`` (the sweep), ``e2e`` (the functional chain), ``loadgen``/``loadtest`` (closed and
open model, ramp and breaking point, reconciliation), ``faults`` (malformed bursts and breaker
verification), ``sla`` (thresholds), ``report`` (Markdown, HTML, JSON, PNG) and ``validate``
(all of them in order). ``procs`` starts the embedded system; the commands are
``auren.cli.toolkit``.
"""
