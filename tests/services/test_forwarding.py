"""Who the client is behind proxies, and which headers a proxy passes on (pure rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auren.services.forwarding import (
    TrustedProxies,
    end_to_end,
    forwarded_chain,
    host_of,
    is_loopback,
    resolve_client,
)

GATEWAY = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
NOBODY = TrustedProxies()


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), *((b"x-forwarded-for", v.encode()) for v in values)]


def test_trusted_proxies_match_addresses_and_blocks() -> None:
    assert "127.0.0.1" in GATEWAY and "10.200.3.4" in GATEWAY
    assert "::ffff:10.1.1.1" in GATEWAY  # a dual-stack listener's view of an IPv4 peer
    assert "127.0.0.2" not in GATEWAY and "::1" not in GATEWAY
    assert "not an address" not in GATEWAY and None not in GATEWAY
    assert not NOBODY and "127.0.0.1" not in NOBODY


@pytest.mark.parametrize(("entry", "host"), [
    ("203.0.113.5", "203.0.113.5"), (" 203.0.113.5:4711 ", "203.0.113.5"),
    ("2001:db8::1", "2001:db8::1"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("::ffff:198.51.100.7", "198.51.100.7"), ("unknown", None), ("", None),
    ("example.com", None), ("1.2.3.4.5", None), ("[::1", None), ("9" * 200, None),
])
def test_one_forwarded_for_entry(entry: str, host: str | None) -> None:
    assert host_of(entry) == host


def test_without_forwarding_headers_the_client_is_the_peer() -> None:
    assert resolve_client(("198.51.100.7", 5000), xff(), GATEWAY) == ("198.51.100.7", 5000)
    assert resolve_client(None, xff("1.2.3.4"), GATEWAY) is None


def test_an_untrusted_peer_cannot_name_another_client() -> None:
    # A remote peer that sends the header is itself the client.
    assert resolve_client(("198.51.100.7", 5000), xff("203.0.113.5"), NOBODY) == (
        "198.51.100.7", 5000)
    # A loopback peer relaying for someone else is an undeclared local proxy: unknown, never
    # the loopback address (the read API's local mode) nor the address it names.
    assert resolve_client(("127.0.0.1", 5000), xff("203.0.113.5"), NOBODY) is None
    assert resolve_client(("::1", 5000), [(b"forwarded", b"for=1.2.3.4")], NOBODY) is None


def test_a_trusted_peer_is_read_from_the_right() -> None:
    peer = ("127.0.0.1", 5000)
    # Each proxy appends what it saw: entries left of the first untrusted one are claims.
    assert resolve_client(peer, xff("6.6.6.6, 203.0.113.5"), GATEWAY) == ("203.0.113.5", 0)
    assert resolve_client(peer, xff("203.0.113.5", "10.1.2.3"), GATEWAY) == ("203.0.113.5", 0)
    assert resolve_client(peer, xff("203.0.113.5:1234, 10.1.2.3"), GATEWAY) == (
        "203.0.113.5", 0)
    # Everyone on the path is a trusted proxy: the request began at the leftmost.
    assert resolve_client(peer, xff("10.9.9.9, 10.1.2.3"), GATEWAY) == ("10.9.9.9", 0)


def test_a_broken_chain_leaves_the_client_unknown() -> None:
    peer = ("127.0.0.1", 5000)
    assert resolve_client(peer, xff("unknown"), GATEWAY) is None
    assert resolve_client(peer, xff("203.0.113.5, garbage, 10.1.2.3"), GATEWAY) is None
    assert resolve_client(peer, [(b"forwarded", b"for=203.0.113.5")], GATEWAY) is None
    assert resolve_client(peer, xff(""), GATEWAY) is None


@given(st.lists(st.tuples(st.sampled_from([b"x-forwarded-for", b"forwarded", b"x-other"]),
                          st.binary(max_size=80)), max_size=6),
       st.sampled_from(["127.0.0.1", "10.0.0.1", "198.51.100.7", "::1"]),
       st.booleans())
def test_resolution_never_fails_and_never_invents(headers: list[tuple[bytes, bytes]],
                                                  peer_host: str, trust: bool) -> None:
    trusted = GATEWAY if trust else NOBODY
    peer = (peer_host, 1)
    client = resolve_client(peer, headers, trusted)
    entries = [host_of(e) for n, v in headers if n == b"x-forwarded-for"
               for e in v.decode("latin-1").split(",")]
    assert client is None or client == peer or client[0] in entries
    if client is not None and client != peer:
        assert peer_host in trusted  # only a trusted peer can name another client
    if client is None:
        assert peer_host in trusted or is_loopback(peer_host)


def test_hop_by_hop_headers_and_those_connection_names_are_dropped() -> None:
    headers = [(b"Connection", b"keep-alive, X-Secret , Upgrade"), (b"Keep-Alive", b"5"),
               (b"X-Secret", b"1"), (b"Upgrade", b"h2c"), (b"TE", b"trailers"),
               (b"Transfer-Encoding", b"chunked"), (b"Proxy-Authorization", b"Basic x"),
               (b"Proxy-Connection", b"keep-alive"), (b"Trailer", b"x"),
               (b"Content-Type", b"application/json"), (b"X-Kept", b"caf\xc3\xa9"),
               (b"Date", b"now")]
    assert end_to_end(headers, frozenset({b"date"})) == [
        (b"content-type", b"application/json"), (b"x-kept", b"caf\xc3\xa9")]


def test_forwarded_chain_appends_or_restarts() -> None:
    headers = xff("203.0.113.5", "10.1.2.3")
    # From a trusted proxy the chain goes on with the peer appended.
    assert forwarded_chain(("10.0.0.9", 1), ("203.0.113.5", 0), headers, GATEWAY) == (
        b"203.0.113.5, 10.1.2.3, 10.0.0.9")
    # From anyone else the chain starts at the peer: what it claimed is not passed on.
    assert forwarded_chain(("198.51.100.7", 1), ("198.51.100.7", 1), headers, NOBODY) == (
        b"198.51.100.7")
    # An undeclared local proxy: the client is unknown, and the next hop must not take the
    # loopback peer for the client.
    assert forwarded_chain(("127.0.0.1", 1), None, headers, NOBODY) == b"unknown, 127.0.0.1"
    assert resolve_client(("127.0.0.1", 2), xff("unknown, 127.0.0.1"),
                          TrustedProxies(["127.0.0.1"])) is None
    assert forwarded_chain(None, None, headers, GATEWAY) == b"unknown"
