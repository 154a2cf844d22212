"""NEUROS: grounded answers about a person's own biometrics.

``engine`` computes facts (pure), ``intents`` reads the question (pure), ``compose`` phrases the
facts deterministically, ``llm`` may rephrase them under a number check (``grounding``),
``safety`` defers medical questions, ``memory`` keeps conversations (SQLite embedded,
PostgreSQL in the full stack), ``summaries`` shares daily series through Redis, and ``chat``
wires one turn together. The HTTP service is ``auren.services.neuros``.
"""
