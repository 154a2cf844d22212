"""The erasure engine over the in-memory twin of its store: steps in order, a failing step
retried with backoff and then failed, a new request resuming a failed erasure from where it
stopped, the same erasure answered twice, a second process resuming after the lease, and the
ledger's screens (whole items only, nobody else's)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from auren.adapters.wire import record_of
from auren.connections.crypto import TokenCipher
from auren.erasure.engine import Eraser, Policy
from auren.erasure.ledger import Ledger
from auren.erasure.steps import LedgerStep, StoreStep, Subject
from auren.erasure.store import MemoryErasures
from auren.errors import StoreUnavailable
from tests.helpers import delivery

CIPHER = TokenCipher([b"k" * 32])


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    """An eraser whose stores are lists, and a step that fails while ``broken``."""

    def __init__(self, store: MemoryErasures | None = None, clock: Clock | None = None) -> None:
        self.store = store or MemoryErasures()
        self.clock = clock or Clock()
        self.ledger = Ledger(CIPHER.pseudonyms)
        self.rows = {"ana": 3, "ben": 2}
        self.broken = 0
        self.calls: list[str] = []

        async def events(subject: Subject) -> int:
            self.calls.append("events")
            return self.rows.pop(subject.user_id, 0)

        async def grant(subject: Subject) -> dict[str, int]:
            self.calls.append("grant")
            if self.broken:
                self.broken -= 1
                raise StoreUnavailable("provider down")
            return {"revoked": 1}

        def plan(subject: Subject) -> list[object]:
            return [LedgerStep(self.store, self.ledger, self.clock),
                    StoreStep("grant:oura", grant), StoreStep("events", events)]

        async def accounts(user_id: str) -> list[tuple[str, str]]:
            return [("oura", f"{user_id}-oura")]

        self.eraser = Eraser(self.store, self.ledger, CIPHER, plan, accounts,  # type: ignore[arg-type]
                             policy=Policy(max_attempts=3, retry_base_s=10, lease_s=30),
                             clock=self.clock)


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_steps_run_in_order_and_the_receipt_tells_the_truth():
    world = World()
    erasure, created = run(world.eraser.start("ana"))
    assert created and erasure.status == "pending"
    assert run(world.eraser.run_due()) == 1
    receipt = run(world.eraser.receipt(erasure.erasure_id))
    assert receipt["status"] == "complete" and receipt["user_id"] == "ana"
    assert [(s["store"], s["status"]) for s in receipt["steps"]] == [
        ("erasure ledger", "complete"), ("grant:oura", "complete"), ("events", "complete")]
    assert receipt["steps"][2]["detail"] == {"deleted": 3}
    assert world.rows == {"ben": 2}
    assert world.ledger.user_erased("ana") and not world.ledger.user_erased("ben")
    assert world.ledger.erased("x", "oura", "ana-oura")
    again, created = run(world.eraser.start("ana"))
    assert not created and again.erasure_id == erasure.erasure_id
    assert run(world.eraser.run_due()) == 0  # complete: nothing runs again
    # The record keeps nothing readable of the person.
    stored = run(world.store.get(erasure.erasure_id))
    assert "ana" not in stored.subject and "ana" not in stored.pseudonym


def test_a_failing_step_is_retried_with_backoff_then_failed_and_a_new_request_resumes():
    world = World()
    world.broken = 5
    erasure, _ = run(world.eraser.start("ana"))
    run(world.eraser.run_due())
    receipt = run(world.eraser.receipt(erasure.erasure_id))
    steps = {s["store"]: s for s in receipt["steps"]}
    assert receipt["status"] == "running"
    assert steps["erasure ledger"]["status"] == "complete"
    assert steps["grant:oura"]["status"] == "pending"
    assert steps["grant:oura"]["error"] == "provider down"
    assert run(world.eraser.run_due()) == 0  # not due before the backoff
    for wait_s in (10, 20):
        world.clock.now += timedelta(seconds=wait_s)
        assert run(world.eraser.run_due()) == 1
    receipt = run(world.eraser.receipt(erasure.erasure_id))
    assert receipt["status"] == "failed"
    assert [s["status"] for s in receipt["steps"]] == ["complete", "failed", "pending"]
    assert world.calls.count("events") == 0 and world.rows["ana"] == 3
    resumed, created = run(world.eraser.start("ana"))
    assert not created and resumed.erasure_id == erasure.erasure_id
    assert resumed.status == "pending"
    world.broken = 0
    run(world.eraser.run_due())
    receipt = run(world.eraser.receipt(erasure.erasure_id))
    assert receipt["status"] == "complete"
    assert world.calls.count("events") == 1 and "ana" not in world.rows


def test_another_process_resumes_an_erasure_once_the_lease_ran_out():
    first = World()
    first.broken = 1
    erasure, _ = run(first.eraser.start("ana"))
    run(first.eraser.run_due())  # failed once: due after the backoff, lease released
    # A process that died holding the lease: the record says so.
    stored = run(first.store.get(erasure.erasure_id))
    stored.lease_owner, stored.lease_until = "dead", "2026-06-01T00:00:40Z"
    stored.due_at = None
    run(first.store.save(stored))
    second = World(first.store, first.clock)
    second.rows = first.rows
    assert run(second.eraser.run_due()) == 0  # the dead process's lease still holds
    first.clock.now += timedelta(seconds=41)
    assert run(second.eraser.run_due()) == 1
    assert run(second.eraser.receipt(erasure.erasure_id))["status"] == "complete"
    assert "ana" not in first.rows


@pytest.mark.parametrize("user", ["ana", "an", "ana:x"])
def test_the_ledger_screens_whole_people_only(user):
    ledger = Ledger(CIPHER.pseudonyms)
    ledger.add([ledger.digest("user:ana")])
    mixed = delivery("d1", user, range(2))
    kept, gone = ledger.screen_delivery(mixed)
    erased = user == "ana"
    assert gone == (2 if erased else 0) and len(kept.events) == (0 if erased else 2)
    record, gone = ledger.screen_record(record_of(mixed))
    assert gone == (2 if erased else 0) and len(record.events) == (0 if erased else 2)
