"""Readers and checks the provider modules share. Pure: no I/O.

Field readers raise ``ValueError`` (a ``MeasurementError`` where the reason is known) with a
message that names the field; each provider turns it into ``InvalidPayload`` (or an
``item_error`` naming the item) at the one place it knows the path, or, for full-data
multi-metric providers, skips that measurement and reports it (:meth:`EventBatch.measure`).
Nothing here raises anything else for any input, which is what lets the property tests feed
arbitrary bytes and headers to every provider.

Identifiers follow the one rule of :func:`auren.events.identifier`; ids that a fetcher will put
into a provider's URL follow the stricter :func:`ident` (letters, digits and ``._:@-``), a
subset of it. Instants are checked against the receiving clock with
:func:`auren.events.check_instant`.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

from auren.errors import InvalidPayload, SignatureInvalid
from auren.events import (
    INVALID_ITEM,
    INVALID_TIME,
    INVALID_VALUE,
    OVER_LIMIT,
    PUSH,
    CanonicalEvent,
    MeasurementError,
    Skipped,
    check_instant,
    identifier,
    make_event,
    parse_time,
)
from auren.providers.base import WebhookRequest, parse_epoch

T = TypeVar("T")

MAX_TEXT = 256
MAX_URL = 2048
# Ids end up in fetch URLs (``/v2/usercollection/{data_type}/{object_id}``), so only characters
# that cannot change a URL's path or query are accepted.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,255}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Epoch seconds outside 1970..2200 cannot even be an instant to check; rejecting them keeps
# datetime arithmetic far from its overflow limits. The plausible range is checked after.
_MAX_EPOCH = 7_258_118_400
MAX_DURATION_S = 7 * 86_400
# Distinct (name, reason) pairs one delivery reports as skipped; the rest are folded into one.
MAX_SKIPPED_KINDS = 64


def encode(text: str) -> bytes:
    """UTF-8 bytes of any ``str``, lone surrogates included, so that encoding never raises."""
    return text.encode("utf-8", "surrogatepass")


def query_secret(request: WebhookRequest, name: str, expected: bytes | None) -> bool | None:
    """For a GET/HEAD handshake: whether query parameter ``name`` equals ``expected`` (compared
    in constant time; False when either is missing). None for any other method: no handshake."""
    if request.method not in ("GET", "HEAD"):
        return None
    value = request.query.get(name)
    return (expected is not None and value is not None
            and hmac.compare_digest(encode(value), expected))


def is_ident(value: str) -> bool:
    return _IDENT.fullmatch(value) is not None


def text(obj: Mapping[str, Any], key: str) -> str:
    """A printable string of 1..256 characters."""
    value = obj.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT or not value.isprintable():
        raise ValueError(f"{key} must be a printable string of 1 to {MAX_TEXT} characters")
    return value


def any_id(obj: Mapping[str, Any], key: str) -> str:
    """An identifier under the one rule; integers are accepted and turned into text."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return identifier(value, key)


def namespaced(provider: str, user: str) -> str:
    """The AUREN user id of a provider's user before account linking: ``provider:user``."""
    return identifier(f"{provider}:{user}", "user id")


def ident(obj: Mapping[str, Any], key: str) -> str:
    """A URL-safe identifier; integers are accepted and turned into text."""
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
    raise MeasurementError(f"{key} must be a date YYYY-MM-DD", INVALID_TIME)


def plausible_day(day: str, now: datetime, what: str) -> str:
    """A ``YYYY-MM-DD`` whose midnight (UTC) lies in the plausible range of instants."""
    check_instant(datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC), now,
                  what)
    return day


def timestamp(obj: Mapping[str, Any], key: str) -> datetime:
    """An ISO 8601 timestamp with an offset, in UTC (only its form: see check_instant)."""
    value = obj.get(key)
    try:
        if isinstance(value, str):
            return parse_time(value)
    except (ValueError, OverflowError):
        pass
    raise MeasurementError(f"{key} must be an ISO 8601 timestamp with a time zone",
                           INVALID_TIME)


def optional(reader: Callable[[Mapping[str, Any], str], T], obj: Mapping[str, Any],
             key: str) -> T | None:
    """``reader``'s value, or None when the field is absent or null."""
    return None if obj.get(key) is None else reader(obj, key)


def epoch(value: Any, what: str) -> datetime:
    """Unix seconds (a JSON number) as a UTC datetime."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= _MAX_EPOCH):
        raise MeasurementError(f"{what} must be Unix seconds", INVALID_TIME)
    return datetime.fromtimestamp(value, UTC)


def duration(value: Any, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S):
        raise MeasurementError(
            f"{what} must be a number of seconds between 0 and {MAX_DURATION_S}", INVALID_VALUE)
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


def https_url(value: Any, what: str, *, domain: str | None = None,
              host: str | None = None) -> str:
    """An https URL on the default port: on ``host`` exactly, or on ``domain`` or one of its
    subdomains, when given.

    A fetcher will later send a user's credentials to it, so a URL elsewhere is refused here.
    """
    if (not isinstance(value, str) or not 1 <= len(value) <= MAX_URL or not value.isascii()
            or not value.isprintable()):
        raise ValueError(f"{what} must be a URL of at most {MAX_URL} ASCII characters")
    try:
        parts = urlsplit(value)
        found = parts.hostname
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if (parts.scheme != "https" or not found or parts.username or parts.password
            or port not in (None, 443)):
        raise ValueError(f"{what} must be an https URL on the default port")
    if host is not None and found != host.lower():
        raise ValueError(f"{what} must point to {host}")
    if domain is not None and found != domain and not found.endswith("." + domain):
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
    """Whose measurements these are, and when and how they arrived: what every event of an
    item shares.

    Both ids are checked against the identifier rule once here, not again for every event.
    Records fetched from a provider's API carry their provenance (``fetch``, ``backfill``) and
    the fetch time, which is also their ``received_at``.
    """

    provider: str
    user_id: str
    provider_user_id: str
    received_at: datetime
    provenance: str = PUSH
    fetched_at: datetime | None = None

    def __post_init__(self) -> None:
        identifier(self.user_id, "user id")
        identifier(self.provider_user_id, "provider user id")

    def event(self, metric: str, value: Any, unit: str, *, field: str, start: datetime,
              end: datetime | None = None, record: str | None = None) -> CanonicalEvent:
        try:
            return make_event(provider=self.provider, user_id=self.user_id,
                              provider_user_id=self.provider_user_id, metric=metric, value=value,
                              unit=unit, start=start, end=end, source_record_id=record,
                              received_at=self.received_at, provenance=self.provenance,
                              fetched_at=self.fetched_at)
        except MeasurementError as exc:
            raise MeasurementError(f"{field}: {exc}", exc.reason) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise MeasurementError(f"{field}: {exc}", INVALID_VALUE) from None


@dataclass(slots=True)
class EventBatch:
    """The events of one delivery, capped while they are built rather than after, and the
    measurements skipped on the way (full-data multi-metric providers only).

    Summaries and intraday samples are capped apart: more summaries than ``limit`` refuse the
    delivery (422), while samples past ``sample_limit`` are skipped and reported
    (``over_limit``), so that a day of 15-second heart rate never costs the day's summaries.
    """

    limit: int
    sample_limit: int = 0
    events: list[CanonicalEvent] = field(default_factory=list)
    samples: list[CanonicalEvent] = field(default_factory=list)
    _skipped: dict[tuple[str, str], Skipped] = field(default_factory=dict)

    def add(self, event: CanonicalEvent) -> None:
        if len(self.events) >= self.limit:
            raise InvalidPayload(f"the delivery holds more than {self.limit} measurements")
        self.events.append(event)

    def measure(self, subject: Subject, name: str, metric: str, value: Any, unit: str, *,
                field: str, start: datetime, end: datetime | None = None,
                record: str | None = None, sample: bool = False) -> bool:
        """Add the measurement, or skip and report it under ``name`` if it is invalid.

        Returns whether it was stored. Going over the delivery's cap of summaries is still a
        422: that is the delivery being too large, not one bad measurement.
        """
        if sample and len(self.samples) >= self.sample_limit:
            self.skip(name, OVER_LIMIT, f"more than {self.sample_limit} intraday samples in "
                                        "one delivery")
            return False
        try:
            event = subject.event(metric, value, unit, field=field, start=start, end=end,
                                  record=record)
        except MeasurementError as exc:
            self.skip(name, exc.reason, str(exc))
            return False
        if sample:
            self.samples.append(event)
        else:
            self.add(event)
        return True

    @property
    def all_events(self) -> list[CanonicalEvent]:
        return self.events + self.samples if self.samples else self.events

    def skip(self, name: str, reason: str, detail: str, count: int = 1) -> None:
        """Report ``count`` measurements called ``name`` that were not stored, and why."""
        # The sender's own words, shortened; JSON encoding escapes whatever else they hold.
        name, detail = name[:128], detail[:300]
        key = (name, reason)
        entry = self._skipped.get(key)
        if entry is None and len(self._skipped) >= MAX_SKIPPED_KINDS:
            key = ("(more)", reason)
            entry = self._skipped.get(key)
            name = "(more)"
        if entry is None:
            self._skipped[key] = Skipped(name, reason, count, detail)
        else:
            entry.count += count

    @property
    def skipped(self) -> list[Skipped]:
        return list(self._skipped.values())

    @property
    def skipped_count(self) -> int:
        return sum(entry.count for entry in self._skipped.values())

    def __len__(self) -> int:
        return len(self.events) + len(self.samples)


def reason_of(exc: ValueError) -> str:
    """The skip reason of a reader's error: its own, else an invalid item."""
    return exc.reason if isinstance(exc, MeasurementError) else INVALID_ITEM


# --- records fetched from a provider's API ------------------------------------------------------

# (dotted path in a record, metric, unit)
Field = tuple[str, str, str]
# Fetched records are bounded by what one job pages through, not by a webhook body.
MAX_FETCHED_EVENTS = 200_000


def fetched_batch() -> EventBatch:
    """The batch a fetch job's records go into (samples share the summaries' generous cap)."""
    return EventBatch(MAX_FETCHED_EVENTS, MAX_FETCHED_EVENTS)


def add_fields(batch: EventBatch, subject: Subject, item: Mapping[str, Any],
               fields: tuple[Field, ...], *, name: str, start: datetime,
               end: datetime | None, record: str | None) -> None:
    """Each field of ``item`` that is present becomes an event; an invalid one is skipped and
    reported under ``name.path``, the others are kept."""
    for path, metric, unit in fields:
        where = f"{name}.{path}"
        try:
            value = dig(dict(item), path)
        except ValueError as exc:
            batch.skip(where, INVALID_ITEM, str(exc))
            continue
        if value is not None:
            batch.measure(subject, where, metric, value, unit, field=path, start=start, end=end,
                          record=record)


def local_time(value: Any, offset_min: int, what: str) -> datetime:
    """A wall-clock time as some providers write it (``2026-03-01T23:12:00.000``, no offset),
    placed with the person's UTC offset; a time that carries its own offset keeps it."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40 or not value.isascii():
        raise MeasurementError(f"{what} must be an ISO 8601 time", INVALID_TIME)
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise MeasurementError(f"{what} must be an ISO 8601 time", INVALID_TIME) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    return moment.astimezone(UTC)


def local_day(day: str, offset_min: int) -> tuple[datetime, datetime]:
    """The person's calendar ``day`` (YYYY-MM-DD) as a UTC time frame, midnight to midnight."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(),
                             timezone(timedelta(minutes=offset_min))).astimezone(UTC)
    return start, start + timedelta(days=1)


def each_item(docs: Any, name: str, batch: EventBatch, add: Callable[[Any], object]) -> None:
    """``add(doc)`` for every document of a list answer; one that cannot be read is skipped and
    reported under ``name``, the others are kept."""
    if not isinstance(docs, list):
        batch.skip(name, INVALID_ITEM, f"{name} must be an array")
        return
    for index, doc in enumerate(docs):
        try:
            add(doc)
        except ValueError as exc:
            batch.skip(name, reason_of(exc), f"{name}[{index}]: {exc}")
