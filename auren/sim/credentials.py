"""Fresh provider secrets for a system started here (``auren demo``, the toolkit's embedded
system): the sender and the bridge get the same ones through the environment, and the key
the bridge encrypts tokens with."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping

# Every provider setting, with how to make a fresh random value for it.
SECRET_GENERATORS: dict[str, Callable[[], str]] = {
    "STANDARD_WEBHOOK_SECRET": lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32))
    .decode(),
    "OURA_CLIENT_SECRET": lambda: secrets.token_hex(24),
    "OURA_VERIFICATION_TOKEN": lambda: secrets.token_hex(12),
    "WHOOP_CLIENT_SECRET": lambda: secrets.token_hex(24),
    "TERRA_SIGNING_SECRET": lambda: secrets.token_hex(24),
    "GARMIN_CLIENT_ID": lambda: secrets.token_hex(16),
    "FITBIT_CLIENT_SECRET": lambda: secrets.token_hex(24),
    "FITBIT_VERIFY_CODE": lambda: secrets.token_hex(8),
    "POLAR_SIGNATURE_SECRET": lambda: secrets.token_hex(24),
    "WITHINGS_ENABLED": lambda: "true",
    "HAE_API_KEYS": lambda: "sk-" + secrets.token_hex(20),
    # The key the OAuth tokens are encrypted with (required beside a full stack).
    "AUREN_ENCRYPTION_KEY": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
}


def fresh_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A fresh secret for every provider setting ``env`` leaves unset."""
    return {name: make() for name, make in SECRET_GENERATORS.items() if not env.get(name)}
