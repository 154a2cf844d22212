"""AUREN: verified biometric webhook ingestion, grounded insights and a validation toolkit."""

__version__ = "0.1.0"
