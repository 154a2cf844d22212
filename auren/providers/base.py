"""What every provider module implements, and the helpers they share. Pure: no I/O.

A provider gets a :class:`WebhookRequest` (raw bytes, lower-cased headers) and:

1. ``handshake(request)`` answers verification handshakes (GET/HEAD, Polar PING) or returns None;
2. ``verify(request, now)`` checks the provider's own signature over the raw bytes, before any
   parsing, and raises :class:`~auren.errors.SignatureInvalid`;
3. ``parse(request, received_at)`` turns the verified body into a
   :class:`~auren.events.Delivery` of canonical
   events or fetch jobs, raising ``MalformedPayload`` (400) or ``InvalidPayload`` (422).

``signed_headers`` produces the headers a real sender would add; the simulator and the load
generator use it. Tests never use it to compute the value they check against.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

import orjson
from pydantic import SecretStr

from auren.errors import MalformedPayload, SignatureInvalid
from auren.events import Delivery
from auren.settings import Settings, secret_values

P = TypeVar("P")


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


class Provider(Protocol):
    name: str

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None: ...

    def verify(self, request: WebhookRequest, now: float) -> None: ...

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery: ...

    def reparse(self, request: WebhookRequest, received_at: datetime,
                user_ids: tuple[str, ...]) -> Delivery:
        """``parse`` of an archived payload, verified when it arrived: ``user_ids`` are the
        users the delivery named then (for a provider that binds the user through the
        credential the archive does not keep)."""
        ...


POST_ONLY: tuple[str, ...] = ("POST",)
# A provider that answers a GET handshake answers HEAD for the same URL too (HTTP semantics).
WITH_GET_HANDSHAKE: tuple[str, ...] = ("GET", "HEAD", "POST")
HEAD_HANDSHAKE: tuple[str, ...] = ("HEAD", "POST")


class WebhookProvider:
    """What a provider class has unless it says otherwise: a webhook URL that answers POST
    only, no handshake, and a constructor ``cls(secrets, **options)`` that ``from_settings``
    calls with the plain values of the ``Settings`` fields the class names."""

    name: str
    # The methods the provider's webhook URL answers; any other is a 405 naming these. Known
    # without a configured instance, so an unconfigured provider is refused by method first.
    methods: ClassVar[tuple[str, ...]] = POST_ONLY
    # What the service's API document says of the URL: the headers every delivery must carry
    # (its signature) and the query parameters of a GET handshake.
    signature_headers: ClassVar[tuple[str, ...]] = ()
    handshake_query: ClassVar[tuple[str, ...]] = ()
    # The Settings field of the provider's secrets (none set: not configured), and each
    # constructor keyword with the Settings field it takes (secrets are revealed).
    secrets_field: ClassVar[str]
    option_fields: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        options = {keyword: _plain(getattr(settings, field))
                   for keyword, field in cls.option_fields.items()}
        return configured(cls, getattr(settings, cls.secrets_field), **options)

    def handshake(self, request: WebhookRequest) -> HandshakeResponse | None:
        return None

    def parse(self, request: WebhookRequest, received_at: datetime) -> Delivery:
        raise NotImplementedError

    def reparse(self, request: WebhookRequest, received_at: datetime,
                user_ids: tuple[str, ...]) -> Delivery:
        """An archived payload is parsed as it was received, by the current code."""
        return self.parse(request, received_at)


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def configured(factory: Callable[..., P], secrets: tuple[SecretStr, ...],
               **options: Any) -> P | None:
    """``factory(secrets, **options)`` with the plain secret values, or None when no secret is
    set: the provider is not configured and its route answers 404."""
    values = secret_values(secrets)
    return factory(values, **options) if values else None


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
