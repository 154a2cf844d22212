"""Readers and checks the provider modules share. Pure: no I/O.

Field readers raise ``ValueError`` with a message that names the field; each provider turns it
into ``InvalidPayload`` (or an ``item_error`` naming the item) at the one place it knows the
path. Nothing here raises anything else for any input, which is what lets the property tests
feed arbitrary bytes and headers to every provider.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import CanonicalEvent, make_event, parse_time
from auren.providers.base import parse_epoch

T = TypeVar("T")

MAX_TEXT = 256
MAX_URL = 2048
# Ids end up in fetch URLs (``/v2/usercollection/{data_type}/{object_id}``), so only characters
# that cannot change a URL's path or query are accepted.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,255}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Epoch seconds outside 1970..2200 are not a wearable's clock; rejecting them also keeps
# datetime arithmetic far from its overflow limits.
_MAX_EPOCH = 7_258_118_400
MAX_DURATION_S = 7 * 86_400


def encode(text: str) -> bytes:
    """UTF-8 bytes of any ``str``, lone surrogates included, so that encoding never raises."""
    return text.encode("utf-8", "surrogatepass")


def is_ident(value: str) -> bool:
    return _IDENT.fullmatch(value) is not None


def text(obj: Mapping[str, Any], key: str) -> str:
    """A printable string of 1..256 characters."""
    value = obj.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT or not value.isprintable():
        raise ValueError(f"{key} must be a printable string of 1 to {MAX_TEXT} characters")
    return value


def ident(obj: Mapping[str, Any], key: str) -> str:
    """An identifier; integers are accepted and turned into text."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(f"{key} must be an identifier of letters, digits and ._:@- (at most 256)")
    return value


def calendar_date(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(f"{key} must be a date YYYY-MM-DD")


def timestamp(obj: Mapping[str, Any], key: str) -> datetime:
    """An ISO 8601 timestamp with an offset, in UTC."""
    value = obj.get(key)
    try:
        if isinstance(value, str):
            return parse_time(value)
    except (ValueError, OverflowError):
        pass
    raise ValueError(f"{key} must be an ISO 8601 timestamp with a time zone")


def optional(reader: Callable[[Mapping[str, Any], str], T], obj: Mapping[str, Any],
             key: str) -> T | None:
    """``reader``'s value, or None when the field is absent or null."""
    return None if obj.get(key) is None else reader(obj, key)


def epoch(value: Any, what: str) -> datetime:
    """Unix seconds (a JSON number) as a UTC datetime."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= _MAX_EPOCH):
        raise ValueError(f"{what} must be Unix seconds")
    return datetime.fromtimestamp(value, UTC)


def duration(value: Any, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S):
        raise ValueError(f"{what} must be a number of seconds between 0 and {MAX_DURATION_S}")
    return float(value)


def array(value: Any, what: str, limit: int, *, required: bool = True) -> list[Any]:
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} must be an array")
    if len(value) > limit:
        raise ValueError(f"{what} has {len(value)} items; at most {limit} are accepted")
    return value


def dig(obj: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, None where the path stops early."""
    node: Any = obj
    walked: list[str] = []
    for key in path.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise ValueError(f"{'.'.join(walked)} must be an object")
        node = node.get(key)
        walked.append(key)
    return node


def https_url(value: Any, what: str, *, domain: str | None = None) -> str:
    """An https URL, optionally on ``domain`` or one of its subdomains.

    A fetcher will later send a user's credentials to it, so a URL elsewhere is refused here.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_URL or not value.isprintable():
        raise ValueError(f"{what} must be a URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if parts.scheme != "https" or not host or parts.username or parts.password:
        raise ValueError(f"{what} must be an https URL")
    if domain is not None and host != domain and not host.endswith("." + domain):
        raise ValueError(f"{what} must point to {domain}")
    return value


def header_time(text: str, header: str) -> float:
    """A timestamp header in Unix seconds, Unix milliseconds or ISO 8601, as Unix seconds.

    Raises:
        SignatureInvalid: anything else; a timestamp is part of what is signed.
    """
    text = text.strip()
    if text.isascii() and text.isdigit():
        seconds = parse_epoch(text)
        # No wearable clock is near 1e12 s (year 33658); above it the value is milliseconds.
        return seconds / 1000.0 if seconds > 1e12 else seconds
    try:
        return parse_time(text).timestamp()
    except (ValueError, TypeError, OverflowError):
        raise SignatureInvalid(f"{header} is neither Unix time nor ISO 8601") from None


def ip_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                   ...]:
    """Parse an allow-list of addresses and CIDR blocks; a bad entry is a start-up error."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def ip_allowed(client_ip: str | None,
               networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not client_ip or len(client_ip) > 64:
        return False
    try:
        address = ipaddress.ip_address(client_ip.strip())
    except ValueError:
        return False
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose measurements these are, and when they arrived: what every event of an item shares."""

    provider: str
    user_id: str
    provider_user_id: str
    received_at: datetime

    def event(self, metric: str, value: Any, unit: str, *, field: str, start: datetime,
              end: datetime | None = None, record: str | None = None) -> CanonicalEvent:
        try:
            return make_event(provider=self.provider, user_id=self.user_id,
                              provider_user_id=self.provider_user_id, metric=metric, value=value,
                              unit=unit, start=start, end=end, source_record_id=record,
                              received_at=self.received_at)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{field}: {exc}") from None


@dataclass(slots=True)
class EventBatch:
    """The events of one delivery, capped while they are built rather than after."""

    limit: int
    events: list[CanonicalEvent] = field(default_factory=list)

    def add(self, event: CanonicalEvent) -> None:
        if len(self.events) >= self.limit:
            raise InvalidPayload(f"the delivery holds more than {self.limit} measurements")
        self.events.append(event)

    def __len__(self) -> int:
        return len(self.events)
