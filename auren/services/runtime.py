"""Process-wide tuning for a long-running service, applied once at start-up (in the lifespan).

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
import sys

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
