"""Simulated provider clouds: each provider's OAuth, data API, errors, limits and signed
notifications, served from the synthetic wearers. See docs/simulator.md."""

from auren.sim.api.app import SimConfig, create_app, provider_urls

__all__ = ["SimConfig", "create_app", "provider_urls"]
