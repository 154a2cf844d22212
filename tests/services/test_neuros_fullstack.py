"""NEUROS replicas in the full stack, black box: two real ``auren serve neuros`` processes on one
PostgreSQL (as behind a load balancer) share a person's conversations, and one erasure request,
sent to either, removes them for both."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import run_server
from tests.stack import pg_fetch

pytestmark = pytest.mark.slow

USER = "replica-user"


def _chat(base_url: str, message: str, conversation_id: str | None = None) -> dict:
    body = {"user_id": USER, "message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    answer = httpx.post(base_url + "/chat", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_two_processes_share_conversations_and_one_erasure_removes_them_for_both(
        full_stack, tmp_path):
    env = full_stack.isolated()
    with run_server("neuros", tmp_path, env) as a, run_server("neuros", tmp_path, env) as b:
        health = httpx.get(a.base_url + "/health", timeout=10).json()
        assert health["checks"]["conversations:responseTime"][0]["componentId"] == "postgresql"

        # A conversation started on one replica continues on the other.
        first = _chat(a.base_url, "How did I sleep this week?")
        cid = first["conversation_id"]
        second = _chat(b.base_url, "And my HRV?", cid)
        assert second["conversation_id"] == cid
        third = _chat(a.base_url, "Thanks. What about steps?", cid)
        assert third["conversation_id"] == cid

        path = f"/api/v1/users/{USER}/conversations"
        seen = []
        for replica in (a, b):
            messages = httpx.get(f"{replica.base_url}{path}/{cid}", timeout=10).json()["messages"]
            seen.append([(m["role"], m["content"]) for m in messages])
            listed = httpx.get(replica.base_url + path, timeout=10).json()["conversations"]
            assert [(c["conversation_id"], c["message_count"]) for c in listed] == [(cid, 6)]
        assert seen[0] == seen[1]
        assert [content for role, content in seen[0] if role == "user"] == [
            "How did I sleep this week?", "And my HRV?", "Thanks. What about steps?"]

        # One erasure, sent to one replica, is seen by both: the rows are gone from PostgreSQL.
        erased = httpx.delete(b.base_url + path, timeout=10)
        assert erased.status_code == 200
        assert erased.json()["deleted"] == {"conversations": 1, "messages": 6}
        for replica in (a, b):
            assert httpx.get(f"{replica.base_url}{path}/{cid}", timeout=10).status_code == 404
            assert httpx.get(replica.base_url + path, timeout=10).json()["conversations"] == []
        assert pg_fetch(env["POSTGRES_URL"], "SELECT count(*) FROM messages WHERE user_id = $1",
                        USER) == [(0,)]
        # The erased conversation cannot be continued on either replica.
        late = httpx.post(a.base_url + "/chat", timeout=30, json={
            "user_id": USER, "message": "still there?", "conversation_id": cid})
        assert late.status_code == 404, late.text
