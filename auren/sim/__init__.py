"""Simulated wearables and the provider clouds behind them, for tests, demos and benchmarks."""
