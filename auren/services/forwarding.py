"""Who the client is, and which headers may cross a proxy. Pure functions, no I/O.

A peer's ``X-Forwarded-For`` is believed only when the peer is a configured proxy
(``TRUSTED_PROXIES``). Then the client is the nearest address of the chain, read from the
right, that is not a trusted proxy itself (each proxy appends the address it saw, so only the
entries to the right of an untrusted one are facts). From any other peer the header is ignored
and the client is the peer, with one exception: a loopback peer that relays for someone else is
a proxy on this host that nobody declared, and the client behind it is unknown (``None``).
Without that rule a local proxy would make every remote client look like a local user to the
read API's loopback-only mode, and like any address it wished to the Withings allow-list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = tuple[str, int]
Headers = Sequence[tuple[bytes, bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_XFF = b"x-forwarded-for"
# Headers by which a proxy says it is relaying for someone else.
_RELAY = frozenset({_XFF, b"forwarded"})
# What a proxy tells the next hop about the client; only passed on from a trusted peer.
FORWARDING_HEADERS = frozenset({_XFF, b"forwarded", b"x-forwarded-host", b"x-forwarded-proto",
                                b"x-forwarded-port", b"x-forwarded-prefix", b"x-real-ip"})
# RFC 9110 §7.6.1: headers of the connection, not of the message, never forwarded; plus those
# the Connection header names. ``proxy-connection`` is not standard but still sent by clients.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                        b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"})
UNKNOWN = "unknown"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The peers whose forwarding headers are believed (addresses and CIDR blocks)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, host: object) -> bool:
        if not self._networks or not isinstance(host, str):
            return False
        address = _address(host)
        return address is not None and any(address in net for net in self._networks)


def is_loopback(host: str | None) -> bool:
    address = _address(host) if host else None
    return address is not None and address.is_loopback


def host_of(entry: str) -> str | None:
    """The address of one ``X-Forwarded-For`` entry (``a.b.c.d``, ``a.b.c.d:port``, ``::1``,
    ``[::1]:port``), normalised; None for anything else (``unknown``, names, garbage)."""
    entry = entry.strip()
    if entry.startswith("["):
        end = entry.find("]")
        entry = entry[1:end] if end > 0 else ""
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    address = _address(entry) if 0 < len(entry) <= 64 else None
    return str(address) if address is not None else None


def forwarded_for(headers: Headers) -> list[str]:
    """Every entry of every ``X-Forwarded-For`` header, in order."""
    entries: list[str] = []
    for name, value in headers:
        if name == _XFF:
            entries.extend(value.decode("latin-1").split(","))
    return entries


def relays(headers: Headers) -> bool:
    return any(name in _RELAY for name, _ in headers)


def resolve_client(peer: Address | None, headers: Headers,
                   trusted: TrustedProxies) -> Address | None:
    """The client of a request that arrived from ``peer`` with these (lower-cased) headers."""
    if peer is None or not relays(headers):
        return peer
    if peer[0] not in trusted:
        return None if is_loopback(peer[0]) else peer
    entries = forwarded_for(headers)
    if not entries:
        return None  # a trusted proxy relaying without saying for whom (RFC 7239 is not read)
    hosts = [host_of(entry) for entry in entries]
    for host in reversed(hosts):
        if host is None:
            return None  # the chain is broken where the client should be: unknown
        if host not in trusted:
            return (host, 0)
    # Every hop is a trusted proxy: the leftmost one is where the request began.
    return (hosts[0], 0) if hosts[0] is not None else None


def end_to_end(headers: Iterable[tuple[bytes, bytes]],
               drop: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    """``headers`` without the hop-by-hop ones, those the ``Connection`` header names, and the
    names in ``drop`` (all lower-case)."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {token.strip().lower() for name, value in pairs if name == b"connection"
             for token in value.split(b",")}
    return [(name, value) for name, value in pairs
            if name not in HOP_BY_HOP and name not in named and name not in drop]


def forwarded_chain(peer: Address | None, client: Address | None, headers: Headers,
                    trusted: TrustedProxies) -> bytes:
    """The ``X-Forwarded-For`` a proxy sends on: the chain it was given, when its peer is
    trusted, with the peer appended; otherwise the peer alone, after ``unknown`` when the
    client behind that peer is unknown (so no next hop can mistake the peer for the client)."""
    if peer is None:
        return UNKNOWN.encode()
    own = peer[0].encode("latin-1")
    if peer[0] in trusted:
        prior = [value.strip() for name, value in headers if name == _XFF and value.strip()]
        return b", ".join([*prior, own])
    if client is None:
        return UNKNOWN.encode() + b", " + own
    return own
