"""Sample payloads in each vendor's documented shape (``fixtures/``) and each vendor's signing
scheme, written from the vendors' definitions with ``hmac`` directly, never with the code under
test. Shared by the provider tests and the black-box bridge tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"

# The secrets the tests configure for each provider.
SECRETS = {
    "OURA_CLIENT_SECRET": "oura-secret",
    "WHOOP_CLIENT_SECRET": "whoop-secret",
    "TERRA_SIGNING_SECRET": "terra-secret",
    "GARMIN_CLIENT_ID": "garmin-consumer-key",
    "FITBIT_CLIENT_SECRET": "fitbit-secret",
    "POLAR_SIGNATURE_SECRET": "polar-secret",
    "HAE_API_KEYS": "hae_user:sk-hae-key",
    "WITHINGS_ENABLED": "true",
}
HAE_USER = "hae_user"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def thin(name: str) -> Any:
    return fixture("thin_notifications.json")[name]


def _hmac(key: bytes, message: bytes, digest: str = "sha256") -> bytes:
    return hmac.new(key, message, getattr(hashlib, digest)).digest()


def signed(provider: str, body: bytes, now: int) -> dict[str, str]:
    """The headers ``provider`` sends with ``body`` at Unix time ``now``."""
    json_type = {"content-type": "application/json"}
    if provider == "oura":  # hex (Oura writes upper case) of HMAC-SHA256(timestamp + body)
        stamp = str(now)
        mac = _hmac(SECRETS["OURA_CLIENT_SECRET"].encode(), stamp.encode() + body)
        return {**json_type, "x-oura-timestamp": stamp, "x-oura-signature": mac.hex().upper()}
    if provider == "whoop":  # base64 of HMAC-SHA256(milliseconds + body)
        stamp = str(now * 1000)
        mac = _hmac(SECRETS["WHOOP_CLIENT_SECRET"].encode(), stamp.encode() + body)
        return {**json_type, "x-whoop-signature-timestamp": stamp,
                "x-whoop-signature": base64.b64encode(mac).decode()}
    if provider == "terra":  # t=<seconds>,v1=<hex of HMAC-SHA256("{t}.{body}")>
        mac = _hmac(SECRETS["TERRA_SIGNING_SECRET"].encode(), f"{now}.".encode() + body)
        return {**json_type, "terra-signature": f"t={now},v1={mac.hex()}",
                "x-terra-trace-id": f"trace-{now}"}
    if provider == "garmin":  # the consumer key, no signature
        return {**json_type, "garmin-client-id": SECRETS["GARMIN_CLIENT_ID"]}
    if provider == "fitbit":  # base64 of HMAC-SHA1 keyed with "<client secret>&"
        mac = _hmac(SECRETS["FITBIT_CLIENT_SECRET"].encode() + b"&", body, "sha1")
        return {**json_type, "x-fitbit-signature": base64.b64encode(mac).decode()}
    if provider == "polar":  # hex of HMAC-SHA256(body)
        mac = _hmac(SECRETS["POLAR_SIGNATURE_SECRET"].encode(), body)
        headers = {**json_type, "polar-webhook-signature": mac.hex()}
        with contextlib.suppress(ValueError):
            event = json.loads(body).get("event") if body.startswith(b"{") else None
            if isinstance(event, str) and event.isascii() and event.isprintable():
                headers["polar-webhook-event"] = event
        return headers
    if provider == "apple":  # the key the Health Auto Export automation is set up with
        return {**json_type, "api-key": SECRETS["HAE_API_KEYS"].partition(":")[2]}
    if provider == "withings":  # form-encoded, unsigned
        return {"content-type": "application/x-www-form-urlencoded"}
    raise ValueError(provider)
