"""How every service's server starts, and process-wide tuning for a long-running service.

``server_options`` are the uvicorn options all four services (and ``bench/``'s baseline app)
run with: the connection guard of :mod:`auren.services.connections` as the HTTP protocol (the
header, body and idle bounds, lingering close, the client address from trusted proxies only),
uvicorn's own proxy-header handling off (it would believe ``X-Forwarded-For`` from any loopback
peer, and read ``FORWARDED_ALLOW_IPS`` behind the settings' back), one ``server`` header that
does not advertise the implementation. Building them also raises the process's soft limit of
open files to its hard limit (inherited by worker processes): every connection is a file
descriptor, and the common default soft limit of 1,024 is reached by a thousand idle clients
long before any bound above closes them.

``tune_runtime_for_serving`` is applied once at start-up (in the lifespan).

Every webhook allocates a few hundred short-lived containers; with CPython's default gen-0
threshold (700) the cyclic collector ran several times per request batch and showed up as a
fifth of the bridge's CPU in profiles. ``gc.freeze`` moves everything that exists after start-up
(modules, the app, its routes) to a permanent generation that collections never walk again, and
a larger gen-0 threshold makes collections rarer; memory stays bounded because reference
counting still frees almost everything immediately. The GIL switch interval is shortened for
the helper threads that hand results back to the loop (see ``tune_runtime_for_serving``).
"""

from __future__ import annotations

import gc
import logging
import resource
import sys
from pathlib import Path
from typing import Any

from auren.services.connections import ConnectionLimits, GuardedProtocolFactory
from auren.settings import Settings

log = logging.getLogger("auren.runtime")

GEN0_THRESHOLD = 20_000
SWITCH_INTERVAL_S = 0.001


def tune_runtime_for_serving() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    # A helper thread that finished its work without the GIL (a SQLite COMMIT with its fsync)
    # waits for the busy event loop to hand the GIL over, up to the switch interval (5 ms by
    # default), while every webhook of that batch waits for it. 1 ms keeps that wait short
    # at the price of a few more GIL hand-overs, which only happen when a thread asks.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def server_options(settings: Settings, *, host: str, port: int, workers: int = 1,
                   tls: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """The uvicorn options every service runs with (see the module's docstring). ``bench/``
    serves its baseline app with exactly these, so that a throughput ratio compares
    applications, not server settings.

    HTTPS when a certificate and key are given (``tls``, else ``AUREN_SSL_CERTFILE`` and
    ``AUREN_SSL_KEYFILE``): uvicorn's server context, whose floor is TLS 1.2 (Python's
    default for a server), with the connection guard working as on plain HTTP.
    """
    raise_open_file_limit()
    if tls is None and settings.auren_ssl_certfile and settings.auren_ssl_keyfile:
        tls = (settings.auren_ssl_certfile, settings.auren_ssl_keyfile)
    ssl: dict[str, Any] = {}
    if tls is not None:
        certfile, keyfile = tls
        for path in tls:
            if not path.is_file():
                raise ValueError(f"TLS: {path} is not a readable file")
        ssl = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    return {**ssl,
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": GuardedProtocolFactory(ConnectionLimits.from_settings(settings)),
        "ws": "none",  # no service speaks WebSocket: an upgrade request is plain HTTP to it
        "timeout_keep_alive": settings.http_keepalive_timeout_s,
        "proxy_headers": False,
        "server_header": False,
        "headers": [("server", "auren")],
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s),
    }


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    # An unlimited hard limit (not on Linux) still has a ceiling the kernel enforces.
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("open-file limit stays at %d", soft)
    return soft
