"""Reconciliation by identity: every id a 2xx acknowledged must be in the store exactly once.

Each load step keeps a ledger (``auren.ops.ledger``): the outcome of every request it rendered.
The webhook workload knows the source record ids each request carries and stores all of them
under a user-id prefix of its own, so the store is asked for exactly the run's events (SQLite
embedded, PostgreSQL in the full stack) and compared id by id:

* ``lost``: ids of requests whose 2xx was read that are not in the store;
* ``duplicated``: ids of the run stored more than once;
* ``unexpected``: ids in the store that no request sent (the accounting itself would be wrong);
* requests whose answer was never read (timeouts, resets, wrk's requests in flight when it
  stopped) and requests answered with an error are counted apart, with how many of their ids
  the store holds anyway. They prove nothing either way and never offset a loss.

A store that cannot be read (no data dir, a wrong or empty one, no access) gives the status
``not reconciled``, never "lost 0". In the full stack the sink writes after the 202, so the
store is read until every acknowledged id is there and nothing changed since the last read, or
until ``wait_s`` has passed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from auren.ops import deps
from auren.ops.ledger import Identity, Ledger
from auren.ops.loadgen import StepResult
from auren.ops.target import Target

PASS, FAIL, NOT_RECONCILED, NA = "pass", "fail", "not reconciled", "n/a"
SAMPLE = 5
POLL_S = 1.0
QUIET_S = 5.0


@dataclass
class Reconciliation:
    status: str  # pass | fail | not reconciled | n/a
    store: str = ""
    requests_sent: int = 0
    acknowledged: int = 0  # requests whose 2xx was read
    # The same per service loaded (the Original Bridge writes the store directly, the
    # Enhanced Bridge through Kafka in the full stack).
    acknowledged_by_service: dict[str, int] = field(default_factory=dict)
    acknowledged_ids: int = 0
    lost: int | None = None  # acknowledged ids not in the store (None: not reconciled)
    lost_requests: int | None = None  # acknowledged requests with at least one id missing
    duplicated: int | None = None  # ids of the run stored more than once
    unexpected: int | None = None  # ids stored that no request sent
    unanswered: int = 0  # requests whose answer was never read
    unanswered_stored_ids: int | None = None
    rejected: int = 0  # requests answered with a non-2xx status
    rejected_stored_ids: int | None = None
    lost_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)
    kafka_records: int | None = None
    opted_out: bool = False  # --no-reconcile: not reconciled on purpose, and said so
    detail: str = ""

    @property
    def reconciled(self) -> bool:
        return self.status in (PASS, FAIL)

    @property
    def blocks_pass(self) -> bool:
        """A loss was found, or none could be looked for and the user did not opt out."""
        return self.status == FAIL or (self.status == NOT_RECONCILED and not self.opted_out)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tracked(steps: list[StepResult]) -> list[StepResult]:
    return [s for s in steps if s.workload == "webhooks"]


def _by_identity(steps: list[StepResult]) -> dict[int, tuple[Identity, list[Ledger]]]:
    groups: dict[int, tuple[Identity, list[Ledger]]] = {}
    for step in steps:
        identity = step.ledger.identity
        if identity is not None:
            groups.setdefault(id(identity), (identity, []))[1].append(step.ledger)
    return groups


async def _read(target: Target, namespaces: list[str]) -> dict[str, dict[str, int]]:
    return {ns: await target.store_records(ns) for ns in namespaces}


def _missing(groups: dict[int, tuple[Identity, list[Ledger]]],
             stored: dict[str, dict[str, int]]) -> bool:
    for identity, ledgers in groups.values():
        records = stored[identity.namespace]
        for ledger in ledgers:
            for seq in ledger.acknowledged():
                if any(record not in records for record in identity.ids_of(seq)):
                    return True
    return False


async def read_settled(target: Target, groups: dict[int, tuple[Identity, list[Ledger]]],
                       wait_s: float) -> dict[str, dict[str, int]]:
    """The run's records once every acknowledged id is there and a second read agrees; with
    ids missing, once nothing has changed for ``QUIET_S`` (a sink still writing changes the
    store every read), at most ``wait_s``. Raises ProbeFailed when unreadable."""
    namespaces = sorted({identity.namespace for identity, _ in groups.values()})
    deadline = time.monotonic() + wait_s
    last = await _read(target, namespaces)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        now = await _read(target, namespaces)
        if now != last:
            last, quiet_since = now, time.monotonic()
            continue
        if not _missing(groups, now) or time.monotonic() - quiet_since >= QUIET_S:
            return now
    return last


def skipped(reason: str) -> Reconciliation:
    """The reconciliation a user opted out of: said as such wherever a verdict is shown."""
    return Reconciliation(NOT_RECONCILED, opted_out=True,
                          detail=f"NOT RECONCILED: skipped ({reason}); no loss was measured")


async def reconcile(target: Target, steps: list[StepResult], *, wait_s: float | None = None,
                    offsets_before: int | str | None = None) -> Reconciliation:
    """Compare every request of ``steps`` (webhook workloads) with the store, by id."""
    hooks = _tracked(steps)
    if not hooks:
        return Reconciliation(NA, detail="no webhooks were sent, so there is nothing to "
                                         "reconcile")
    out = Reconciliation(NOT_RECONCILED, store=target.store_label)
    counts = [s.ledger.counts() for s in hooks]
    out.acknowledged = sum(c["acknowledged"] for c in counts)
    for step, count in zip(hooks, counts, strict=True):
        out.acknowledged_by_service[step.service] = (
            out.acknowledged_by_service.get(step.service, 0) + count["acknowledged"])
    out.rejected = sum(c["rejected"] for c in counts)
    out.unanswered = sum(c["unanswered"] for c in counts)
    out.requests_sent = out.acknowledged + out.rejected + out.unanswered
    if any(s.ledger.identity is None for s in hooks):
        out.detail = "a step's workload carried no known ids: nothing can be proven by identity"
        return out
    groups = _by_identity(hooks)
    wait = wait_s if wait_s is not None else (2.0 if target.embedded else 60.0)
    try:
        stored = await read_settled(target, groups, wait)
    except deps.ProbeFailed as exc:
        out.detail = (f"NOT RECONCILED: the store cannot be read ({target.store_label}: {exc}); "
                      "no loss was measured. Give the deployment's --data-dir (embedded) or "
                      "POSTGRES_URL (full stack)")
        return out
    _compare(out, groups, stored)
    await _kafka(out, target, offsets_before)
    return out


def _compare(out: Reconciliation, groups: dict[int, tuple[Identity, list[Ledger]]],
             stored: dict[str, dict[str, int]]) -> None:
    lost = lost_requests = acknowledged_ids = 0
    unanswered_stored = rejected_stored = 0
    seen: set[str] = set()
    for identity, ledgers in groups.values():
        records = stored[identity.namespace]
        for ledger in ledgers:
            for seq, outcome in enumerate(ledger.outcomes):
                if outcome == 0:  # never sent: its ids are "unexpected" if stored
                    continue
                ids = identity.ids_of(seq)
                seen.update(ids)
                if 200 <= outcome < 300:
                    acknowledged_ids += len(ids)
                    missing = [record for record in ids if record not in records]
                    if missing:
                        lost += len(missing)
                        lost_requests += 1
                        out.lost_sample.extend(missing[:SAMPLE - len(out.lost_sample)])
                elif outcome < 0:
                    unanswered_stored += sum(record in records for record in ids)
                else:
                    rejected_stored += sum(record in records for record in ids)
    duplicated = [record for records in stored.values() for record, n in records.items()
                  if n > 1]
    unexpected = sum(1 for records in stored.values() for record in records
                     if record not in seen)
    out.acknowledged_ids = acknowledged_ids
    out.lost, out.lost_requests = lost, lost_requests
    out.duplicated, out.duplicated_sample = len(duplicated), sorted(duplicated)[:SAMPLE]
    out.unexpected = unexpected
    out.unanswered_stored_ids, out.rejected_stored_ids = unanswered_stored, rejected_stored
    problems = []
    if lost:
        where = ("none of them is in " + out.store + ": is it the store of the deployment "
                 "under test?") if lost == acknowledged_ids else f"e.g. {out.lost_sample}"
        problems.append(f"LOST {lost} ids of {lost_requests} acknowledged requests "
                        f"(answered 2xx, not stored; {where})")
    if duplicated:
        problems.append(f"{len(duplicated)} ids stored more than once "
                        f"(e.g. {out.duplicated_sample})")
    if unexpected:
        problems.append(f"{unexpected} ids stored that no request sent")
    aside = (f"; {out.unanswered} requests whose answer was never read ({unanswered_stored} "
             f"of their ids stored anyway) and {out.rejected} answered with an error "
             f"({rejected_stored} of their ids stored) prove nothing and offset nothing")
    if problems:
        out.status = FAIL
        out.detail = "; ".join(problems) + aside
    else:
        out.status = PASS
        out.detail = (f"all {acknowledged_ids} ids of {out.acknowledged} acknowledged requests "
                      f"stored exactly once in {out.store}" + aside)


async def _kafka(out: Reconciliation, target: Target, offsets_before: int | str | None) -> None:
    bootstrap = target.settings.kafka_bootstrap_servers
    if not isinstance(offsets_before, int) or not bootstrap:
        return
    try:
        out.kafka_records = await deps.kafka_offsets(target.settings) - offsets_before
    except deps.ProbeFailed:
        return
    out.detail += f"; Kafka records appended: {out.kafka_records}"
