"""One module per provider: verify and parse, pure, no I/O.

``build_providers`` is called once at start-up; a provider whose secret is not configured is
absent from the result, and the bridge answers 404 ``provider not configured`` for it.
"""

from __future__ import annotations

from typing import Protocol

from auren.providers.apple import AppleHealthProvider
from auren.providers.base import Provider
from auren.providers.fitbit import FitbitProvider
from auren.providers.garmin import GarminProvider
from auren.providers.native import NativeProvider
from auren.providers.oura import OuraProvider
from auren.providers.polar import PolarProvider
from auren.providers.terra import TerraProvider
from auren.providers.whoop import WhoopProvider
from auren.providers.withings import WithingsProvider
from auren.settings import Settings


class ProviderClass(Protocol):
    """A provider module's class: builds the provider from settings, or None if unconfigured,
    and names the methods its webhook URL answers (configured or not)."""

    # Read-only: each class states them as class attributes.
    @property
    def name(self) -> str: ...

    @property
    def methods(self) -> tuple[str, ...]: ...

    @property
    def signature_headers(self) -> tuple[str, ...]: ...

    @property
    def handshake_query(self) -> tuple[str, ...]: ...

    def from_settings(self, settings: Settings) -> Provider | None: ...


# Path segment → provider module class. Every known provider is listed, configured or not.
PROVIDER_CLASSES: dict[str, ProviderClass] = {
    "auren": NativeProvider,
    "oura": OuraProvider,
    "whoop": WhoopProvider,
    "terra": TerraProvider,
    "garmin": GarminProvider,
    "fitbit": FitbitProvider,
    "polar": PolarProvider,
    "withings": WithingsProvider,
    "apple": AppleHealthProvider,
}


def build_providers(settings: Settings) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, cls in PROVIDER_CLASSES.items():
        provider = cls.from_settings(settings)
        if provider is not None:
            providers[name] = provider
    return providers
