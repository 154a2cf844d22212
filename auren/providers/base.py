"""What every provider module implements, and the helpers they share. Pure: no I/O.

A provider gets a :class:`WebhookRequest` (raw bytes, lower-cased headers) and:

1. ``handshake(request)`` answers verification handshakes (GET/HEAD, Polar PING) or returns None;
2. ``verify(request, now)`` checks the provider's own signature over the raw bytes, before any
   parsing, and raises :class:`~auren.errors.SignatureInvalid`;
3. ``parse(request, received_at)`` turns the verified body into a :class:`Delivery` of canonical
   events or fetch jobs, raising ``MalformedPayload`` (400) or ``InvalidPayload`` (422).

``signed_headers`` produces the headers a real sender would add; the simulator and the load
generator use it. Tests never use it to compute the value they check against.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from auren.errors import MalformedPayload, SignatureInvalid
from auren.events import CanonicalEvent, FetchJob, Skipped


# Not frozen, like CanonicalEvent: one is built per webhook on the hot path, and a frozen
# dataclass sets every field through object.__setattr__. Treat as immutable.
@dataclass(slots=True)
class WebhookRequest:
    method: str
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    body: bytes
    client_ip: str | None = None

    def header(self, *names: str) -> str | None:
        for name in names:
            value = self.headers.get(name)
            if value is not None:
                return value
        return None


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body


@dataclass(slots=True)
class Delivery:
    """One verified, parsed webhook: what must become durable before the answer."""

    provider: str
    # Identifies this delivery across the provider's retries (webhook-id, trace id, or a body
    # digest when the provider gives none).
    delivery_key: str
    events: list[CanonicalEvent] = field(default_factory=list)
    fetch_jobs: list[FetchJob] = field(default_factory=list)
    # Items the provider sent that AUREN has no metric for (counted, not stored).
    ignored: int = 0
    # Measurements AUREN keeps but that were invalid in this delivery (skipped, the rest
    # stored): full-data multi-metric providers only; the others refuse the whole delivery.
    skipped: list[Skipped] = field(default_factory=list)
    # The status a successful first delivery answers (Fitbit wants 204).
    success_status: int = 202


class Provider(Protocol):
    name: str

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None: ...

    def verify(self, request: WebhookRequest, now: float) -> None: ...

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery: ...


# --- shared helpers ----------------------------------------------------------------------------


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def any_matches(candidates: Iterable[bytes], presented: Iterable[bytes]) -> bool:
    """Constant-time comparison of every presented signature against every candidate.

    All pairs are compared (no early exit on a match) so timing says nothing about which
    secret or which signature matched.
    """
    matched = False
    presented = list(presented)
    for candidate in candidates:
        for value in presented:
            matched |= hmac.compare_digest(candidate, value)
    return matched


def b64decode_strict(text: str) -> bytes | None:
    # binascii's strict mode: only the alphabet, correct padding, nothing after it; a tenth of
    # the cost of base64.b64decode(validate=True), which checks the alphabet with a regex.
    try:
        return binascii.a2b_base64(text.strip(), strict_mode=True)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        return None


def hexdecode(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        return None


def parse_epoch(text: str | None, *, milliseconds: bool = False) -> float:
    """A header timestamp as Unix seconds; anything else is a signature failure (401)."""
    if text is None:
        raise SignatureInvalid("missing timestamp header")
    text = text.strip()
    # isdigit() alone admits "²" and other Unicode digits that int() rejects or reads oddly.
    if not (text.isascii() and text.isdigit()) or len(text) > 16:
        raise SignatureInvalid("timestamp header is not an integer")
    value = int(text)
    return value / 1000.0 if milliseconds else float(value)


def check_tolerance(timestamp: float, now: float, tolerance_s: float) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise SignatureInvalid("timestamp outside the allowed window")


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc.msg}") from None


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def require_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} must be a JSON object")
    return value


def require_str(obj: Mapping[str, Any], key: str, what: str, *, max_len: int = 256) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise MalformedPayload(f"{what}.{key} must be a non-empty string of at most {max_len}")
    return value
