"""Erasing a person: a durable erasure record, an ordered list of steps (one per store that
holds anything of the person), each idempotent, resumed after a crash, and the erasure ledger
that keeps the person's records out of every store afterwards (append-only logs, late
webhooks, replays).

``ledger`` is the ledger (keyed digests only); ``store`` the erasure records and the ledger's
persistence (SQLite, PostgreSQL, the in-memory twin); ``steps`` the steps; ``engine`` runs
them. The services wire it (``auren.services.erasures``); the CLI is ``auren erase``.
"""
