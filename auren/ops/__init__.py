"""The validation toolkit: every phase of the validation plan as a command, and one report.

``health`` (the sweep), ``e2e`` (the functional chain), ``loadgen``/``wrk``/``loadtest``
(closed and open model, ramp and breaking point), ``ledger``/``reconcile`` (what became of
every request, and the store asked for exactly the ids acknowledged), ``faults`` (malformed
bursts, breaker verification and drills), ``faultproxy``/``placement`` (the TCP fault proxy and
where it sits), ``sla`` (thresholds), ``report`` (Markdown, HTML, JSON, PNG) and ``validate``
(all of them in order). ``procs`` starts the embedded system, ``fullstack`` the full stack for
``validate --stack full``; the commands are
``auren.cli.toolkit``. ``backup`` backs the store up and restores it (``auren db backup``,
``auren db restore``).
"""
