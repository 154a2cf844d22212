"""The I/O boundary: small Protocols, the implementations behind them and their in-memory twins.

``base`` holds the Protocols: ``EventStore`` is the durable truth (``sqlite`` embedded,
``postgres`` in the full stack) and its unique key on ``event_id`` deduplicates exactly;
``wal`` keeps the SQLite file's write-ahead log bounded and scrubs it after an erasure;
``DurableLog`` is where a webhook becomes durable; ``EventBus`` is the full stack's log
(``kafka``, carrying ``wire`` records); ``Cache`` is only a fast path (``redis_cache``, or in
process). ``memory`` ships the twins tests run against, and ``breaker`` the circuit breaker
every adapter of a remote dependency sits behind.
"""
