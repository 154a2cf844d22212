"""Consent, export and audit over HTTP on a real embedded bridge (fetcher in process), the
provider API simulator and, for conversations, a real NEUROS on the same data directory.

- consent is recorded, with the text version shown, before any of the provider's data;
- the export streams everything held (events with provenance, connections without tokens,
  consents, coverage, NEUROS's conversations) in the documented NDJSON schema, and CSV;
- withdrawing consent stops ingestion (webhooks answered and not stored, fetches cancelled,
  both counted) and offers erasure;
- every route that touches a person's data writes exactly one audit record, never a value:
  the routes are enumerated from the app, so a new route without auditing fails here.
"""

from __future__ import annotations

import csv
import getpass
import io
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute

from auren.privacy import texts
from auren.privacy.base import NOT_AUDITED, key_id
from auren.services.auditing import route_action
from auren.services.bridge import create_app
from auren.services.export import CSV_COLUMNS, SCHEMA, SECTIONS, VERSION
from auren.services.neuros import create_app as create_neuros
from auren.settings import Settings
from tests.connections.kit import System, child_env, system
from tests.helpers import ServerProcess, run_server
from tests.privacy.kit import (
    KEY,
    SERVICE,
    SETTINGS,
    audit_after,
    call,
    connect,
    connect_link,
    consent_and_come_back,
    events,
    last_seq,
    metric,
    token,
    wait_idle,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system(tmp_path_factory.mktemp("privacy"), **SETTINGS) as found:
        yield found


@pytest.fixture(scope="module")
def neuros(world: System, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """NEUROS on the bridge's data directory: its conversations are in the same file."""
    with run_server("neuros", tmp_path_factory.mktemp("neuros"), env={
            **SETTINGS, "AUREN_DATA_DIR": str(world.bridge.data_dir)}) as found:
        yield found


def export_lines(world: System, name: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    with httpx.stream("GET", f"{world.url}/api/v1/users/{name}/export", headers=headers,
                      timeout=60) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in answer.headers  # streamed, not built whole
        lines = [orjson.loads(line) for line in answer.iter_lines() if line]
    return lines


def test_consent_is_recorded_before_any_of_the_providers_data(world):
    name = "consenting-person"
    start = connect_link(world, "oura", name)
    shown = start.json()["consent"]
    assert shown["version"] == texts.CURRENT_VERSION and "oura" in shown["text"]
    back = httpx.get(consent_and_come_back(start, 3, "oura"), timeout=30)
    assert back.status_code == 200, back.text
    wait_idle(world)
    stored = events(world, name)
    assert stored, "the history fetched on connect"
    answer = call(world, "GET", f"/api/v1/users/{name}/consents", token(name))
    assert answer.status_code == 200, answer.text
    (consent,) = answer.json()["consents"]
    assert consent["provider"] == "oura" and consent["status"] == "given"
    assert consent["text_version"] == shown["version"]
    assert consent["purpose"] == texts.PURPOSE
    assert consent["scopes"] == back.json()["scopes"]
    assert consent["provider_user_id"] == back.json()["provider_user_id"]
    assert consent["given_at"] <= min(e["received_at"] for e in stored)
    text = call(world, "GET", "/api/v1/consent-text", params={"provider": "oura"})
    assert text.json()["version"] == texts.CURRENT_VERSION
    assert text.json()["versions"] == sorted(texts.TEXTS)


def test_the_export_streams_everything_held_about_the_person(world, neuros):
    name = "exporting-person"
    connected = connect(world, "whoop", name, 5)
    wait_idle(world)
    chat = httpx.post(neuros.base_url + "/chat", headers=token(name), timeout=30,
                      json={"user_id": name, "message": "How did I sleep last night?"})
    assert chat.status_code == 200, chat.text
    lines = export_lines(world, name, token(name))
    header, *body, end = lines
    assert header == {"record": "header", "schema": SCHEMA, "version": VERSION,
                      "user_id": name, "generated_at": header["generated_at"],
                      "sections": list(SECTIONS), "coverage_days": 365}
    kinds = [line["record"] for line in body]
    assert kinds == sorted(kinds, key=SECTIONS.index), "records come in the sections' order"
    assert end["record"] == "end"
    assert end["counts"] == {k: kinds.count(k) for k in SECTIONS[:-1]}
    (user,) = [r for r in body if r["record"] == "user"]
    assert user["user_id"] == name and user["created_at"]
    (connection,) = [r for r in body if r["record"] == "connection"]
    assert connection["provider_user_id"] == connected["provider_user_id"]
    assert not {k for k in connection if "token" in k}
    (consent,) = [r for r in body if r["record"] == "consent"]
    assert consent["provider"] == "whoop" and consent["status"] == "given"
    assert [r["provider"] for r in body if r["record"] == "coverage"] == ["whoop"]
    (conversation,) = [r for r in body if r["record"] == "conversation"]
    assert conversation["conversation_id"] == chat.json()["conversation_id"]
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][0]["content"] == "How did I sleep last night?"
    exported = [{k: v for k, v in r.items() if k != "record"} for r in body
                if r["record"] == "event"]
    assert exported == events(world, name)
    assert {e["provenance"] for e in exported} == {"backfill"}
    # Another person's export holds none of it.
    other = export_lines(world, "consenting-person", SERVICE)
    assert not [r for r in other if r.get("user_id") == name]

    answer = call(world, "GET", f"/api/v1/users/{name}/export", token(name),
                  params={"format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == [e["event_id"] for e in exported]
    assert [float(r[5]) for r in rows[1:]] == [e["value"] for e in exported]
    refused = call(world, "GET", f"/api/v1/users/{name}/export", token("someone-else"))
    assert refused.status_code == 403
    bad = call(world, "GET", f"/api/v1/users/{name}/export", params={"format": "xml"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_withdrawing_consent_stops_ingestion_and_offers_erasure(world):
    name = "withdrawing-person"
    wearer = 6
    connect(world, "whoop", name, wearer)
    wait_idle(world)
    before = events(world, name)
    assert before
    webhooks = metric(world, "auren_consent_withheld_total", provider="whoop", path="webhook")
    fetches = metric(world, "auren_consent_withheld_total", provider="whoop", path="fetch")
    answer = call(world, "DELETE", f"/api/v1/users/{name}/consents/whoop", token(name))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ingestion"] == "stopped"
    assert body["offers"]["erase"] == {"method": "DELETE", "href": f"/api/v1/users/{name}"}
    assert [c["status"] for c in body["consents"]] == ["withdrawn"]
    # Withdrawing again is answered alike; an unknown provider's consent is a 404.
    again = call(world, "DELETE", f"/api/v1/users/{name}/consents/whoop", token(name))
    assert again.status_code == 200 and again.json()["withdrawn_at"] == body["withdrawn_at"]
    assert call(world, "DELETE", f"/api/v1/users/{name}/consents/oura",
                token(name)).status_code == 404

    # The provider's next notification is answered 2xx and nothing of it is stored.
    result = world.advance(wearer)
    sent = [n for n in result["notifications"] if n["provider"] == "whoop"]
    assert sent and {n["status"] for n in sent} <= {200, 202, 204}, result
    # A re-sync queues jobs; the fetcher cancels them.
    sync = call(world, "POST", f"/api/v1/users/{name}/connections/whoop/sync", token(name))
    assert sync.status_code == 202, sync.text
    queued = set(sync.json()["jobs"])
    assert queued
    finished = {j["job_id"]: j for j in wait_idle(world) if j["job_id"] in queued}
    assert {j["state"] for j in finished.values()} == {"cancelled"}
    assert {j["last_error"] for j in finished.values()} == {"consent withdrawn"}
    assert events(world, name) == before
    assert metric(world, "auren_consent_withheld_total", provider="whoop",
                  path="webhook") >= webhooks + len(sent)
    assert metric(world, "auren_consent_withheld_total", provider="whoop",
                  path="fetch") == fetches + len(queued)
    listed = call(world, "GET", f"/api/v1/users/{name}/consents", token(name)).json()
    assert [c["status"] for c in listed["consents"]] == ["withdrawn"]

    # Connecting again is a new consent: ingestion resumes.
    connect(world, "whoop", name, wearer)
    wait_idle(world)
    listed = call(world, "GET", f"/api/v1/users/{name}/consents", token(name)).json()
    assert [c["status"] for c in listed["consents"]] == ["withdrawn", "given"]
    assert len(events(world, name)) > len(before)


# --- audit -------------------------------------------------------------------------------------

AUDITED = "audited-person"
QUERY_VALUE = "2000-01-01T00:00:00Z"  # a value sent in a query: never in a record


def _requests(world: System) -> dict[str, Any]:
    """One request per audited route (method and template): how to call it, and for whom.
    Each builder may make calls of its own first (a connect link before its callback)."""
    u = f"/api/v1/users/{AUDITED}"

    def callback() -> tuple[str, str, dict[str, Any]]:
        start = connect_link(world, "oura", AUDITED)
        return "GET", consent_and_come_back(start, 7, "oura"), {"headers": {}}

    def plain(method: str, path: str, **kwargs: Any) -> Any:
        return lambda: (method, world.url + path, kwargs)

    def receipt() -> tuple[str, str, dict[str, Any]]:
        # Asking again answers the same erasure: its id, for the receipt.
        started = httpx.delete(world.url + u, headers=SERVICE, timeout=30)
        assert started.status_code == 202, started.text
        return "GET", f"{world.url}/api/v1/erasures/{started.json()['erasure_id']}", {}

    return {
        "POST /api/v1/users": plain("POST", "/api/v1/users", json={"user_id": AUDITED}),
        "GET /api/v1/users/{user_id}": plain("GET", u, headers=token(AUDITED)),
        "GET /api/v1/connect/{provider}": plain("GET", "/api/v1/connect/oura",
                                                params={"user_id": AUDITED}),
        "GET /api/v1/connect/{provider}/callback": callback,
        "GET /api/v1/users/{user_id}/connections": plain("GET", u + "/connections"),
        "POST /api/v1/users/{user_id}/connections/{provider}/sync": plain(
            "POST", u + "/connections/oura/sync", params={"since": QUERY_VALUE}),
        "GET /api/v1/users/{user_id}/coverage": plain("GET", u + "/coverage"),
        "DELETE /api/v1/users/{user_id}/connections/{provider}": plain(
            "DELETE", u + "/connections/oura"),
        "GET /api/v1/jobs": plain("GET", "/api/v1/jobs"),
        "POST /api/v1/jobs/{job_id}/retry": plain("POST", "/api/v1/jobs/no-such-job/retry"),
        "POST /api/v1/jobs/retry": plain("POST", "/api/v1/jobs/retry"),
        "GET /api/v1/users/{user_id}/export": plain("GET", u + "/export"),
        "GET /api/v1/users/{user_id}/consents": plain("GET", u + "/consents"),
        "DELETE /api/v1/users/{user_id}/consents/{provider}": plain(
            "DELETE", u + "/consents/oura", headers=token(AUDITED)),
        "GET /api/v1/audit": plain("GET", "/api/v1/audit", params={"user_id": AUDITED}),
        # Routes are called in the app's order: the erasure comes after every other route of
        # the person but their events (then 404: erased).
        "DELETE /api/v1/users/{user_id}": plain("DELETE", u),
        "GET /api/v1/erasures/{erasure_id}": receipt,
        "GET /api/v1/users/{user_id}/events": plain("GET", u + "/events",
                                                    params={"since": QUERY_VALUE}),
    }


def _routes(app: Any) -> list[tuple[str, str | None]]:
    """Every API route of an app as built (nothing connects before its lifespan)."""
    return [(f"{method} {route.path}", route_action(route)) for route in app.api.routes
            if isinstance(route, APIRoute) for method in sorted(route.methods)]


def _check_every_route(world: System, routes: list[tuple[str, str | None]],
                       requests: dict[str, Any], subject: str) -> None:
    assert len(routes) > len(requests) / 2
    undeclared = [name for name, action in routes if action is None]
    assert not undeclared, f"routes without an audit action (x-audit): {undeclared}"
    audited = [(name, action) for name, action in routes if action != NOT_AUDITED]
    missing = [name for name, _ in audited if name not in requests]
    assert not missing, f"audited routes this test does not call yet: {missing}"
    erased = False
    for name, action in audited:
        # From its erasure on, a person is named in the audit log by a keyed pseudonym only.
        erased = erased or name == "DELETE /api/v1/users/{user_id}"
        method, url, kwargs = requests[name]()
        before = last_seq(world)
        answer = httpx.request(method, url, timeout=60, follow_redirects=False,
                               **{"headers": SERVICE, **kwargs})
        assert answer.status_code < 500, (name, answer.text)
        records = audit_after(world, before)
        assert len(records) == 1, (name, records)
        (record,) = records
        assert (record.action, record.route, record.outcome) == (action, name,
                                                                 answer.status_code), name
        if erased:
            assert record.user_id and record.user_id.startswith("erased:"), name
            assert subject not in repr(record), name
        else:
            assert record.user_id == (None if "jobs" in name else subject), name
        headers = kwargs.get("headers", SERVICE)
        expected_actor = ("anonymous" if not headers else key_id(KEY) if headers == SERVICE
                          else f"jwt:{record.user_id if erased else subject}")
        assert record.actor == expected_actor, name
        assert record.client == "127.0.0.1" and record.request_id
        assert QUERY_VALUE not in repr(record) and KEY not in repr(record)


def test_every_bridge_route_that_touches_a_person_writes_exactly_one_audit_record(
        world, tmp_path):
    app = create_app(Settings(auren_data_dir=tmp_path))
    _check_every_route(world, _routes(app), _requests(world), AUDITED)


def test_every_neuros_route_that_touches_a_person_writes_exactly_one_audit_record(
        world, neuros, tmp_path):
    person = "audited-chatter"
    u = f"{neuros.base_url}/api/v1/users/{person}"
    ask = {"json": {"user_id": person, "message": "How did I sleep?"}}

    def plain(method: str, url: str, **kwargs: Any) -> Any:
        return lambda: (method, url, kwargs)

    def one_conversation() -> tuple[str, str, dict[str, Any]]:
        chat = httpx.post(neuros.base_url + "/chat", headers=token(person), timeout=30,
                          **ask)
        assert chat.status_code == 200, chat.text
        return "GET", f"{u}/conversations/{chat.json()['conversation_id']}", {
            "headers": token(person)}

    requests = {
        "POST /chat": plain("POST", neuros.base_url + "/chat", headers=token(person), **ask),
        "POST /api/v1/chat": plain("POST", neuros.base_url + "/api/v1/chat", **ask),
        "POST /api/v1/chat/stream": plain("POST", neuros.base_url + "/api/v1/chat/stream",
                                          **ask),
        "GET /api/v1/users/{user_id}/conversations": plain("GET", u + "/conversations"),
        "GET /api/v1/users/{user_id}/conversations/{conversation_id}": one_conversation,
        "DELETE /api/v1/users/{user_id}/conversations": plain("DELETE", u + "/conversations"),
    }
    app = create_neuros(Settings(auren_data_dir=tmp_path))
    _check_every_route(world, _routes(app), requests, person)
    # A chat its caller may not have is recorded as refused, with who asked.
    before = last_seq(world)
    refused = httpx.post(neuros.base_url + "/chat", headers=token("someone-else"), timeout=30,
                         **ask)
    assert refused.status_code == 403
    (record,) = audit_after(world, before)
    assert (record.actor, record.user_id, record.outcome) == ("jwt:someone-else", person, 403)


def test_the_audit_log_is_for_service_keys_and_filters(world):
    name = "audit-filter-person"
    before = last_seq(world)
    call(world, "POST", "/api/v1/users", json={"user_id": name})
    assert call(world, "GET", f"/api/v1/users/{name}/coverage", token(name)).status_code == 200
    refused = call(world, "GET", "/api/v1/audit", token(name), params={"user_id": name})
    assert refused.status_code == 403
    assert call(world, "GET", "/api/v1/audit", {}).status_code == 401
    (created, read, denied, unknown) = audit_after(world, before)
    assert (created.actor, created.action, created.user_id) == (key_id(KEY), "create", name)
    assert (read.actor, read.action, read.outcome) == (f"jwt:{name}", "read", 200)
    assert (denied.actor, denied.action, denied.outcome) == (f"jwt:{name}", "audit", 403)
    assert (unknown.actor, unknown.outcome) == ("anonymous", 401)
    mine = call(world, "GET", "/api/v1/audit", params={"user_id": name}).json()["records"]
    assert [r["seq"] for r in mine] == [created.seq, read.seq, denied.seq]
    reads = call(world, "GET", "/api/v1/audit", params={"user_id": name, "action": "read"})
    assert [r["seq"] for r in reads.json()["records"]] == [read.seq]
    later = call(world, "GET", "/api/v1/audit", params={
        "user_id": name, "since": denied.at.isoformat()}).json()["records"]
    # Reading a person's audit records is itself recorded as theirs (action audit).
    assert later[0]["seq"] == denied.seq
    assert {r["action"] for r in later[1:]} == {"audit"}
    paged = call(world, "GET", "/api/v1/audit", params={"user_id": name, "limit": 1}).json()
    assert paged["next"] == created.seq
    rest = call(world, "GET", "/api/v1/audit", params={"user_id": name, "after": created.seq})
    assert [r["seq"] for r in rest.json()["records"]][:2] == [read.seq, denied.seq]
    assert call(world, "GET", "/api/v1/audit", params={"action": "peek"}).status_code == 422
    assert call(world, "GET", "/api/v1/audit", params={"since": "yesterday"}).status_code == 400


def test_the_command_line_exports_and_lists_the_audit_log(world, tmp_path):
    name = "exporting-person"  # connected by the export test; connected here if run alone
    if not events(world, name):
        connect(world, "whoop", name, 5)
        wait_idle(world)
    env = child_env(world)
    target = tmp_path / "export.csv"
    done = subprocess.run([sys.executable, "-m", "auren", "export", "--user", name, "--format",
                           "csv", "--output", str(target)], env=env, capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == [e["event_id"] for e in events(world, name)]
    streamed = subprocess.run([sys.executable, "-m", "auren", "export", "--user", name],
                              env=env, capture_output=True, timeout=120, check=False)
    assert streamed.returncode == 0, streamed.stderr
    lines = [orjson.loads(line) for line in streamed.stdout.splitlines()]
    assert lines[0]["schema"] == SCHEMA and lines[-1]["record"] == "end"
    assert lines[-1]["counts"]["event"] == len(rows) - 1
    listed = subprocess.run([sys.executable, "-m", "auren", "audit", "--user", name,
                             "--action", "export", "--json"], env=env, capture_output=True,
                            timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    records = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [r["route"] for r in records][-2:] == ["cli export csv", "cli export ndjson"]
    assert {r["actor"] for r in records[-2:]} == {f"cli:{getpass.getuser()}"}
    bad = subprocess.run([sys.executable, "-m", "auren", "audit", "--action", "peek"],
                         env=env, capture_output=True, timeout=120, check=False)
    assert bad.returncode == 2
