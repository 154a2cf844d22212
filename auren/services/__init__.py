"""One ASGI app per service, the sink, the composition root and the kernel they share.

``bridge`` (Enhanced Bridge v2), ``legacy_bridge`` (Original Bridge v1), ``neuros`` and
``gateway`` are the four HTTP services; ``sink`` is the full stack's Kafka-to-PostgreSQL
consumer. ``dataplane`` is the composition root: it builds every service's dependencies from
settings, embedded or full stack. ``kernel`` holds what every app shares (problem+json, capped
body reading, the health document, JSON responses); ``auth`` the read API's credentials and
``runtime`` the process tuning of a long-running server.
"""
