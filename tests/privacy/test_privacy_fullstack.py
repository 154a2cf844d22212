"""Consent, export and audit on the full stack: a real bridge, sink, fetcher and NEUROS on
real Kafka, PostgreSQL and Redis, and the provider API simulator.

The consent is in PostgreSQL before the history's events arrive through Kafka and the sink;
the export streams them with NEUROS's conversations (PostgreSQL's) and the connection; a
withdrawal is honoured by another process, the fetcher, which cancels the re-sync's jobs;
every request leaves exactly one audit record in PostgreSQL; ``auren export`` reads the same.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from auren.privacy import texts
from auren.privacy.base import key_id
from tests.connections.kit import System, end_date, environment
from tests.helpers import ServerProcess, free_port, run_server
from tests.privacy.kit import KEY, SETTINGS, call, connect, events, token, wait_idle
from tests.sim.api.kit import run_sim
from tests.stack import pg_fetch, service_env, start_sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Stack:
    world: System
    neuros: ServerProcess
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.env["POSTGRES_URL"]


@pytest.fixture(scope="module")
def stack(full_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fullstack-privacy")
    sim_port, bridge_port = free_port(), free_port()
    env = {**full_stack.isolated(), **environment(sim_port, bridge_port), **SETTINGS}
    with run_server("bridge", tmp, env=env, port=bridge_port) as bridge, \
            run_sim(tmp, bridge=bridge.base_url, env=env, port=sim_port,
                    end=end_date()) as sim, \
            run_server("neuros", tmp, env=env) as neuros:
        sink = start_sink(service_env(env, tmp / "sink"), tmp)
        with (tmp / "fetcher.log").open("wb") as log:
            fetcher = subprocess.Popen([sys.executable, "-m", "auren", "fetcher"],
                                       env=service_env({**env, "FETCH_POLL_S": "0.1"},
                                                       tmp / "fetcher"),
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Stack(System(sim, bridge, env, end_date(), tmp), neuros, env)
        finally:
            fetcher.terminate()
            assert fetcher.wait(30) == 0
            assert sink.stop() == 0, sink.log()


def wait_for(check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError("not reached in time")


def test_consent_export_withdrawal_and_audit_on_the_full_stack(stack, tmp_path):
    world, name = stack.world, "fullstack-privacy-person"
    connected = connect(world, "whoop", name, 8)
    (consent,) = pg_fetch(stack.url, "SELECT provider, provider_user_id, text_version, "
                          "given_at FROM consents WHERE user_id = $1", name)
    assert consent[:3] == ("whoop", connected["provider_user_id"], texts.CURRENT_VERSION)
    wait_idle(world)
    stored = wait_for(lambda: events(world, name))
    assert min(e["received_at"] for e in stored) >= consent[3].isoformat().replace(
        "+00:00", "Z")[:19]
    chat = httpx.post(stack.neuros.base_url + "/chat", headers=token(name), timeout=30,
                      json={"user_id": name, "message": "How is my HRV?"})
    assert chat.status_code == 200, chat.text

    before = pg_fetch(stack.url, "SELECT coalesce(max(seq), 0) FROM audit_log")[0][0]
    answer = call(world, "GET", f"/api/v1/users/{name}/export", token(name))
    assert answer.status_code == 200, answer.text
    lines = [orjson.loads(line) for line in answer.text.splitlines()]
    kinds = [line["record"] for line in lines]
    assert kinds[0] == "header" and kinds[-1] == "end"
    assert kinds.count("event") == len(events(world, name)) == lines[-1]["counts"]["event"]
    (conversation,) = [line for line in lines if line["record"] == "conversation"]
    assert conversation["messages"][0]["content"] == "How is my HRV?"
    assert [line["provider"] for line in lines if line["record"] == "connection"] == ["whoop"]
    records = pg_fetch(stack.url, "SELECT actor, action, user_id, outcome FROM audit_log "
                       "WHERE seq > $1 ORDER BY seq", before)
    assert records[0] == (f"jwt:{name}", "export", name, 200)

    # Withdrawn at the bridge; the fetcher (another process) cancels the re-sync's jobs.
    withdrawn = call(world, "DELETE", f"/api/v1/users/{name}/consents/whoop", token(name))
    assert withdrawn.status_code == 200, withdrawn.text
    count = len(events(world, name))
    sync = call(world, "POST", f"/api/v1/users/{name}/connections/whoop/sync", token(name))
    assert sync.status_code == 202, sync.text
    queued = set(sync.json()["jobs"])
    finished = {j["job_id"]: j for j in wait_idle(world) if j["job_id"] in queued}
    assert {(j["state"], j["last_error"]) for j in finished.values()} == {
        ("cancelled", "consent withdrawn")}
    result = world.advance(8)
    assert {n["status"] for n in result["notifications"] if n["provider"] == "whoop"} <= {
        200, 202, 204}
    time.sleep(2)  # what the sink would have stored by now
    assert len(events(world, name)) == count
    actions = [r[0] for r in pg_fetch(stack.url, "SELECT action FROM audit_log WHERE "
                                      "seq > $1 AND user_id = $2 ORDER BY seq", before, name)]
    assert actions[0] == "export"
    assert actions.index("consent_withdraw") < actions.index("sync")
    assert set(actions) == {"export", "consent_withdraw", "sync", "read"}
    assert pg_fetch(stack.url, "SELECT count(*) FROM audit_log WHERE actor = $1",
                    key_id(KEY))[0][0] >= 2  # the jobs listings

    out = tmp_path / "export.ndjson"
    done = subprocess.run([sys.executable, "-m", "auren", "export", "--user", name,
                           "--output", str(out)], env=service_env(stack.env, tmp_path / "cli"),
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    exported = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [line["record"] for line in exported] == kinds
