"""What became of every request a load step rendered, by identity.

A load engine takes requests from its workload in render order; the n-th one rendered is
request ``n`` (its *sequence number*). The ledger keeps one outcome per sequence number: the
HTTP status of the answer that was read, or why there is none. A workload that knows which ids
each request carries (the webhook workload: the source record id of every event) is its
:class:`Identity`, and the reconciliation asks the store for exactly those ids
(``auren.ops.reconcile``): an id acknowledged by a 2xx that was read must be stored once; an id
whose answer was never read proves nothing either way and is reported apart, never set off
against a loss.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# Outcomes besides an HTTP status (100..599).
NOT_SENT = 0  # rendered but never written: the step ended first, or no connection was made
UNANSWERED = -1  # written (at least in part), no answer read: timeout, reset, cut off at the end


@runtime_checkable
class Identity(Protocol):
    """A workload whose requests carry ids that the store keeps."""

    @property
    def namespace(self) -> str:
        """The user-id prefix every event of this workload is stored under."""

    def ids_of(self, seq: int) -> Sequence[str]:
        """The source record ids request ``seq`` carries."""


@dataclass
class Ledger:
    """One outcome per rendered request, indexed by sequence number (compact: 2 bytes each)."""

    identity: Identity | None = None
    outcomes: array[int] = field(default_factory=lambda: array("h"))

    def rendered(self, n: int = 1) -> int:
        """``n`` more requests were rendered; returns the sequence number of the first."""
        first = len(self.outcomes)
        self.outcomes.extend([NOT_SENT] * n)
        return first

    def sent(self, seq: int) -> None:
        self.outcomes[seq] = UNANSWERED

    def answered(self, seq: int, status: int) -> None:
        self.outcomes[seq] = status

    def not_sent(self, seq: int) -> None:
        self.outcomes[seq] = NOT_SENT

    def acknowledged(self) -> Iterator[int]:
        """Sequence numbers of requests answered 2xx (an answer that was read)."""
        return (seq for seq, outcome in enumerate(self.outcomes) if 200 <= outcome < 300)

    def counts(self) -> dict[str, int]:
        out = {"rendered": len(self.outcomes), "acknowledged": 0, "rejected": 0,
               "unanswered": 0, "not_sent": 0}
        for outcome in self.outcomes:
            if 200 <= outcome < 300:
                out["acknowledged"] += 1
            elif outcome >= 100:
                out["rejected"] += 1
            elif outcome == UNANSWERED:
                out["unanswered"] += 1
            else:
                out["not_sent"] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"identity": self.identity is not None, **self.counts()}
