"""Erasing a person on the embedded bridge (a real process over HTTP, with the provider API
simulator as the providers' clouds): data in every store, the bridge killed (SIGKILL) in the
middle of the erasure and started again, and afterwards nothing of the person anywhere (API,
raw SQLite files), their grants revoked at the providers, a late webhook answered 2xx and not
stored, and everyone else's data untouched."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from auren.neuros.memory import Message
from auren.neuros.memory.sqlite import SQLiteConversations
from tests.connections.kit import end_date, environment
from tests.helpers import free_port, run_server
from tests.services.erasure_kit import (
    AUTH_ENV,
    FAST_ERASURE,
    SERVICE,
    Person,
    betrayed,
    connect,
    event_count,
    files_under,
    late_webhook,
    metric_value,
    push_events,
    token,
    wait_jobs_idle,
    wait_receipt,
)
from tests.sim.api.kit import run_sim

pytestmark = pytest.mark.timeout(400)

ANA = Person("ana-erasure-7q", 61.2371, "zebra marathon plan of ana")
BEN = Person("ben-erasure-4z", 57.9183, "quiet lighthouse notes of ben")
# Simulated wearers: each person's Oura and WHOOP accounts.
WEARERS = {ANA.user_id: (3, 4), BEN.user_id: (5, 6)}


def converse(sqlite_path: Path, person: Person) -> None:
    """A NEUROS conversation of the person, written through NEUROS's own store."""

    async def run() -> None:
        store = SQLiteConversations(sqlite_path)
        await store.open()
        try:
            await store.append(person.user_id, f"{person.user_id}-talk", [
                Message("user", person.words), Message("assistant", f"noted: {person.words}")])
        finally:
            await store.close()

    asyncio.run(run())


def conversations(sqlite_path: Path, person: Person) -> int:
    async def run() -> int:
        store = SQLiteConversations(sqlite_path)
        await store.open()
        try:
            return len(await store.conversations(person.user_id, 10))
        finally:
            await store.close()

    return asyncio.run(run())


def grants_of(sim_admin: object, wearer: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = sim_admin("GET", "/_sim/grants")  # type: ignore[operator]
    return [g for g in found if str(g["user"]).endswith(f"{wearer:04d}")]


def test_an_erasure_killed_midway_resumes_and_leaves_nothing_of_the_person(tmp_path):
    sim_port, port = free_port(), free_port()
    env = environment(sim_port, port, **AUTH_ENV, **FAST_ERASURE)
    with run_sim(tmp_path, bridge=f"http://127.0.0.1:{port}", env=env, port=sim_port,
                 end=end_date(), users=8) as sim:
        with run_server("bridge", tmp_path, env=env, port=port) as bridge:
            url = bridge.base_url
            sqlite_path = bridge.data_dir / "auren.sqlite3"
            for person in (ANA, BEN):
                oura_wearer, whoop_wearer = WEARERS[person.user_id]
                for provider, wearer in (("oura", oura_wearer), ("whoop", whoop_wearer)):
                    answer = connect(url, provider, person.user_id, wearer)
                    person.provider_user_ids.append(answer["provider_user_id"])
                push_events(url, person)
                converse(sqlite_path, person)
            wait_jobs_idle(url)
            bens_events = event_count(url, BEN.user_id)
            assert event_count(url, ANA.user_id) > 3 and bens_events > 3

            # WHOOP fails ANA's revocation until the fault is cleared: the erasure stops there.
            sim.fault(kind="server_error", provider="whoop", user=str(WEARERS[ANA.user_id][1]),
                      count=None)
            refused = httpx.delete(f"{url}/api/v1/users/{ANA.user_id}",
                                   headers=token(BEN.user_id), timeout=30)
            assert refused.status_code == 403, refused.text
            started = httpx.delete(f"{url}/api/v1/users/{ANA.user_id}",
                                   headers=token(ANA.user_id), timeout=30)
            assert started.status_code == 202, started.text
            erasure_id = started.json()["erasure_id"]
            again = httpx.delete(f"{url}/api/v1/users/{ANA.user_id}", headers=SERVICE,
                                 timeout=30)
            assert again.status_code == 202 and again.json()["erasure_id"] == erasure_id

            receipt = wait_receipt(url, erasure_id, until=("running",))
            deadline_steps = {s["store"]: s for s in receipt["steps"]}
            while not deadline_steps["grant:whoop"].get("error"):
                receipt = wait_receipt(url, erasure_id, until=("running",))
                deadline_steps = {s["store"]: s for s in receipt["steps"]}
            assert receipt["user_id"] == ANA.user_id
            assert deadline_steps["erasure ledger"]["status"] == "complete"
            assert deadline_steps["grant:oura"]["status"] == "complete"
            assert deadline_steps["events"]["status"] == "pending"
            # Killed in the middle of it.
            bridge.process.kill()
            bridge.process.wait(10)
        sim.admin("DELETE", "/_sim/faults")

        with run_server("bridge", tmp_path, env=env, port=port) as bridge:
            url = bridge.base_url
            receipt = wait_receipt(url, erasure_id)
            assert receipt["status"] == "complete", receipt
            stores = [s["store"] for s in receipt["steps"]]
            assert stores == ["erasure ledger", "grant:oura", "grant:whoop", "events",
                              "fetch jobs", "connections and tokens", "conversations",
                              "raw payloads", "consents", "audit log", "database files"]
            assert all(s["status"] == "complete" and s["at"] for s in receipt["steps"])
            steps = {s["store"]: s for s in receipt["steps"]}
            assert steps["events"]["detail"]["deleted"] > 3
            assert steps["grant:whoop"]["detail"]["revoked"] == 1
            assert steps["conversations"]["detail"] == {"conversations": 1, "messages": 2}

            # Nothing through the API...
            assert event_count(url, ANA.user_id) == 0
            assert httpx.get(f"{url}/api/v1/users/{ANA.user_id}", headers=SERVICE,
                             timeout=30).status_code == 404
            assert conversations(bridge.data_dir / "auren.sqlite3", ANA) == 0
            # ... the id is never a person again ...
            assert httpx.post(f"{url}/api/v1/users", json={"user_id": ANA.user_id},
                              headers=SERVICE, timeout=30).status_code == 409
            # ... the grants revoked at both providers, ANA's only ...
            for wearer in WEARERS[ANA.user_id]:
                assert grants_of(sim.admin, wearer) and all(
                    g["revoked"] for g in grants_of(sim.admin, wearer))
            for wearer in WEARERS[BEN.user_id]:
                assert not any(g["revoked"] for g in grants_of(sim.admin, wearer))
            # ... a late webhook answered 2xx, not stored, counted ...
            before = metric_value(url, "auren_webhook_items_erased_total", 'provider="auren"')
            assert late_webhook(url, ANA).status_code == 202
            assert event_count(url, ANA.user_id) == 0
            assert metric_value(url, "auren_webhook_items_erased_total",
                                'provider="auren"') == before + 1
            # ... nothing in the raw files, while BEN is all there.
            assert betrayed(files_under(bridge.data_dir), ANA) == []
            assert event_count(url, BEN.user_id) == bens_events
            assert conversations(bridge.data_dir / "auren.sqlite3", BEN) == 1
            bens = httpx.get(f"{url}/api/v1/users/{BEN.user_id}/connections", headers=SERVICE,
                             timeout=30).json()["connections"]
            assert {c["provider"] for c in bens} == {"oura", "whoop"}
            kept = betrayed(files_under(bridge.data_dir), BEN)
            assert any("user id" in k for k in kept) and any("double" in k for k in kept)
            # The receipt is the person's to read too, and asking again changes nothing.
            mine = httpx.get(f"{url}/api/v1/erasures/{erasure_id}", headers=token(ANA.user_id),
                             timeout=30)
            assert mine.status_code == 200 and mine.json()["status"] == "complete"
            assert httpx.get(f"{url}/api/v1/erasures/{erasure_id}", headers=token(BEN.user_id),
                             timeout=30).status_code == 403
            assert httpx.get(f"{url}/api/v1/erasures/er_nope", headers=SERVICE,
                             timeout=30).status_code == 404
            again = httpx.delete(f"{url}/api/v1/users/{ANA.user_id}", headers=SERVICE,
                                 timeout=30)
            assert again.json() == {"erasure_id": erasure_id, "status": "complete"}
        assert betrayed(files_under(bridge.data_dir), ANA) == []


CARA = Person("cara-erasure-2k", 66.4419, "no words of cara")
DAN = Person("dan-erasure-9m", 48.8807, "no words of dan")


def test_auren_erase_erases_beside_a_running_bridge_and_prints_the_receipt(tmp_path):
    env = {**AUTH_ENV, **FAST_ERASURE}
    with run_server("bridge", tmp_path, env=env) as bridge:
        url = bridge.base_url
        push_events(url, CARA)
        push_events(url, DAN)
        child = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_SERVERS"))}
        child.update({**env, "AUREN_DATA_DIR": str(bridge.data_dir)})
        done = subprocess.run([sys.executable, "-m", "auren", "erase", "--user", CARA.user_id,
                               "--json"], env=child, capture_output=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr.decode()
        receipt = json.loads(done.stdout)
        assert receipt["user_id"] == CARA.user_id and receipt["status"] == "complete"
        assert [s["store"] for s in receipt["steps"]] == [
            "erasure ledger", "events", "fetch jobs", "connections and tokens",
            "conversations", "raw payloads", "consents", "audit log", "database files"]
        assert {s["store"]: s for s in receipt["steps"]}["events"]["detail"] == {"deleted": 3}
        # The bridge beside it serves nothing of CARA, and stores nothing of her again.
        assert event_count(url, CARA.user_id) == 0 and event_count(url, DAN.user_id) == 3
        assert late_webhook(url, CARA).status_code == 202
        assert event_count(url, CARA.user_id) == 0
        answer = httpx.get(f"{url}/api/v1/erasures/{receipt['erasure_id']}", headers=SERVICE,
                           timeout=30)
        assert answer.json()["status"] == "complete"
        assert betrayed(files_under(bridge.data_dir), CARA) == []
        again = subprocess.run([sys.executable, "-m", "auren", "erase", "--user",
                                CARA.user_id], env=child, capture_output=True, timeout=120,
                               check=False)
        assert again.returncode == 0 and receipt["erasure_id"] in again.stdout.decode()
        # NEUROS on the same file answers an erased person's chat and keeps none of it.
        neuros_env = {**env, "AUREN_DATA_DIR": str(bridge.data_dir)}
        with run_server("neuros", tmp_path, env=neuros_env) as neuros:
            for person in (CARA, DAN):
                chat = httpx.post(f"{neuros.base_url}/chat", headers=SERVICE, timeout=30,
                                  json={"user_id": person.user_id,
                                        "message": "how was my HRV this week?"})
                assert chat.status_code == 200, chat.text
            kept = {person.user_id: httpx.get(
                f"{neuros.base_url}/api/v1/users/{person.user_id}/conversations",
                headers=SERVICE, timeout=30).json()["conversations"] for person in (CARA, DAN)}
        assert kept[CARA.user_id] == [] and len(kept[DAN.user_id]) == 1
