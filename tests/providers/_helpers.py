"""Request builders shared by the provider tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from auren.providers.base import WebhookRequest

# 2026-01-01T00:00:00Z: the clock every verify() in these tests runs at.
NOW = 1_767_225_600
RECEIVED = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def request(body: bytes = b"", headers: Mapping[str, str] | None = None, *,
            method: str = "POST", query: Mapping[str, str] | None = None,
            client_ip: str | None = None) -> WebhookRequest:
    return WebhookRequest(method=method,
                          headers={k.lower(): v for k, v in (headers or {}).items()},
                          query=dict(query or {}), body=body, client_ip=client_ip)


def hmac_hex(key: bytes, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(key, message, getattr(hashlib, digest)).hexdigest()


def hmac_b64(key: bytes, message: bytes, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key, message, getattr(hashlib, digest)).digest()).decode()


def tamper(body: bytes) -> bytes:
    """The same body with its last byte changed."""
    return body[:-1] + bytes([body[-1] ^ 0x01])
