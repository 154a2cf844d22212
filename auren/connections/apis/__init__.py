"""One module per provider API the fetcher and the connect flow use (see ``base``)."""

from __future__ import annotations

from auren.connections.apis.base import JobRun, ProviderApi
from auren.connections.apis.fitbit import FitbitApi
from auren.connections.apis.garmin import GarminApi
from auren.connections.apis.oura import OuraApi
from auren.connections.apis.polar import PolarApi
from auren.connections.apis.terra import TerraApi
from auren.connections.apis.whoop import WhoopApi
from auren.connections.apis.withings import WithingsApi
from auren.settings import Settings

API_CLASSES: dict[str, type[ProviderApi]] = {
    "oura": OuraApi, "whoop": WhoopApi, "fitbit": FitbitApi, "polar": PolarApi,
    "withings": WithingsApi, "garmin": GarminApi, "terra": TerraApi}


def build_apis(settings: Settings) -> dict[str, ProviderApi]:
    """Every provider's API, configured or not (``configured`` says which can connect)."""
    return {name: cls(settings) for name, cls in API_CLASSES.items()}


__all__ = ["API_CLASSES", "JobRun", "ProviderApi", "build_apis"]
