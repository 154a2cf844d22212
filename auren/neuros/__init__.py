"""NEUROS: grounded answers about a person's own biometrics.

``engine`` computes facts (pure), ``intents`` reads the question (pure), ``compose`` phrases the
facts deterministically, ``llm`` may rephrase them under a number check, ``safety`` defers
medical questions, ``memory`` keeps conversations and ``chat`` wires one turn together.
"""
