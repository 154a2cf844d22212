"""Erasing a person on the full stack: a real bridge and sink over real Kafka, PostgreSQL and
Redis, the provider API simulator as the providers' clouds. The person has data everywhere:
events in PostgreSQL, records still in Kafka (the sink stopped), a dead worker's spool,
NEUROS's conversations, Redis keys, a provider connection with its jobs. The bridge is killed
(SIGKILL) while the erasure waits for the sink, and started again. Afterwards nothing of the
person is readable through the API, in PostgreSQL (rows gone, every table VACUUMed), in Redis
or in the spool's files; their grant is revoked; a late webhook is answered 2xx and not stored;
everyone else's data is untouched, the records that waited in Kafka included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from auren.adapters.breaker import CircuitBreaker
from auren.adapters.postgres import PostgresPool
from auren.adapters.redis_cache import RedisCache
from auren.adapters.wire import encode, record_of
from auren.ingest.spool import Spool
from auren.neuros.memory import Message
from auren.neuros.memory.postgres import PostgresConversations
from auren.neuros.summaries import user_key
from auren.settings import Settings
from tests.connections.kit import end_date, environment
from tests.helpers import delivery, free_port, run_server
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
    push_events,
    token,
    wait_receipt,
)
from tests.sim.api.kit import run_sim
from tests.stack import pg_fetch, service_env, start_sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ANA = Person("ana-erasure-full-7q", 63.4817, "kite festival secret of ana")
BEN = Person("ben-erasure-full-4z", 52.6129, "harbour diary of ben")
WEARERS = {ANA.user_id: 3, BEN.user_id: 5}  # each person's Oura account at the simulator
ERASED_TABLES = ("biometric_events", "fetch_jobs", "connections", "connect_states", "users",
                 "conversations", "messages")


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.model_validate({k.lower(): v for k, v in env.items()})


def converse_and_cache(env: dict[str, str], person: Person) -> None:
    """A NEUROS conversation (its PostgreSQL store) and NEUROS's cached series (Redis)."""
    settings = settings_of(env)

    async def run() -> None:
        store = PostgresConversations(PostgresPool.from_settings(settings))
        await store.open()
        try:
            await store.append(person.user_id, f"{person.user_id}-talk", [
                Message("user", person.words), Message("assistant", f"noted: {person.words}")])
        finally:
            await store.close()
        redis = RedisCache.from_settings(settings,
                                         breaker=CircuitBreaker.from_settings("r", settings))
        await redis.open()
        try:
            redis.post_fields(user_key(person.user_id),
                              [("UTC|hrv_rmssd", repr(person.value).encode())], 3600)
            await redis.flush_fields()
        finally:
            await redis.close()

    asyncio.run(run())


def redis_dump(env: dict[str, str]) -> bytes:
    """Every key of this test's prefix and its value, as bytes to grep."""
    settings = settings_of(env)

    async def run() -> bytes:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(env["REDIS_URL"])
        try:
            out = b""
            async for key in client.scan_iter(match=settings.redis_key_prefix + "*"):
                kind = await client.type(key)
                value = await (client.hgetall(key) if kind == b"hash" else client.dump(key))
                out += key + b"=" + repr(value).encode() + b"\n"
            return out
        finally:
            await client.aclose()

    return asyncio.run(run())


def dead_workers_spool(data_dir: Path) -> Path:
    """Spool slot 1 as a bridge worker that died while Kafka was away left it: ANA's and
    BEN's deliveries, fsynced, never replayed (slot 0 is the running bridge's)."""
    directory = data_dir / "spool" / "1"

    async def run() -> None:
        spool = Spool(directory)
        await spool.open()
        try:
            await spool.append([encode(record_of(delivery(f"spooled-{p.user_id}", p.user_id,
                                                          range(20, 22))))
                                for p in (ANA, BEN)])
        finally:
            await spool.close()

    asyncio.run(run())
    return directory


def retention_ms(env: dict[str, str]) -> set[str]:
    """``retention.ms`` of both topics, as the broker reports it."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    resources = [ConfigResource("topic", env[name]) for name in
                 ("KAFKA_EVENTS_TOPIC", "KAFKA_NOTIFICATIONS_TOPIC")]
    found = set()
    for future in admin.describe_configs(resources, request_timeout=30).values():
        found.add(future.result(timeout=30)["retention.ms"].value)
    return found


def rows_of(url: str, user_id: str) -> dict[str, int]:
    return {table: int(pg_fetch(url, f"SELECT count(*) FROM {table} WHERE user_id = $1",  # noqa: S608
                                user_id)[0][0]) for table in ERASED_TABLES}


def test_an_erasure_reaches_every_store_of_the_full_stack(full_stack, tmp_path):
    sim_port, port = free_port(), free_port()
    env = {**environment(sim_port, port), **full_stack.isolated(**AUTH_ENV, **FAST_ERASURE)}
    url_pg = env["POSTGRES_URL"]
    sink_env = service_env(env, tmp_path / "sink-data")
    spool_dir = dead_workers_spool(tmp_path / f"data-{port}")
    with run_sim(tmp_path, bridge=f"http://127.0.0.1:{port}", env=env, port=sim_port,
                 end=end_date(), users=8) as sim:
        sink = start_sink(sink_env, tmp_path)
        try:
            with run_server("bridge", tmp_path, env=env, port=port) as bridge:
                url = bridge.base_url
                for person in (ANA, BEN):
                    answer = connect(url, "oura", person.user_id, WEARERS[person.user_id])
                    person.provider_user_ids.append(answer["provider_user_id"])
                    push_events(url, person)
                    converse_and_cache(env, person)
                for person in (ANA, BEN):
                    for _ in range(300):
                        if event_count(url, person.user_id) >= 3:
                            break
                        asyncio.run(asyncio.sleep(0.2))
                assert event_count(url, ANA.user_id) == 3 == event_count(url, BEN.user_id)
                assert rows_of(url_pg, ANA.user_id)["fetch_jobs"] > 0
                assert ANA.user_id.encode() in redis_dump(env)
                # Topics made with a retention: how long erased records can stay in the log.
                assert retention_ms(env) == {str(168 * 3_600_000)}
                # Records that stay in Kafka while the erasure begins: the sink is down.
                assert sink.stop() == 0, sink.log()
                late = Person(ANA.user_id, ANA.value + 100, ANA.words, batch="queued")
                kept = Person(BEN.user_id, BEN.value + 100, BEN.words, batch="queued")
                push_events(url, late)
                push_events(url, kept)
                started = httpx.delete(f"{url}/api/v1/users/{ANA.user_id}",
                                       headers=token(ANA.user_id), timeout=30)
                assert started.status_code == 202, started.text
                erasure_id = started.json()["erasure_id"]
                receipt = wait_receipt(url, erasure_id, until=("running",))
                while {s["store"]: s for s in receipt["steps"]}["spool"]["status"] != \
                        "complete":
                    receipt = wait_receipt(url, erasure_id, until=("running",))
                steps = {s["store"]: s for s in receipt["steps"]}
                assert steps["kafka topics"]["status"] in ("pending", "running")
                assert steps["spool"]["detail"] == {"records": 1}
                bridge.process.kill()  # waiting for the sink: killed in the middle
                bridge.process.wait(10)
            sink = start_sink(sink_env, tmp_path)
            with run_server("bridge", tmp_path, env=env, port=port) as bridge:
                url = bridge.base_url
                receipt = wait_receipt(url, erasure_id, timeout_s=180)
                assert receipt["status"] == "complete", receipt
                assert [s["store"] for s in receipt["steps"]] == [
                    "erasure ledger", "spool", "kafka topics", "grant:oura", "events",
                    "fetch jobs", "connections and tokens", "conversations", "raw payloads",
                    "consents", "audit log", "redis"]
                assert all(s["status"] == "complete" and s["at"] for s in receipt["steps"])
                steps = {s["store"]: s for s in receipt["steps"]}
                assert steps["redis"]["detail"]["deleted"] >= 1
                assert steps["grant:oura"]["detail"]["revoked"] == 1

                # BEN's records that waited in Kafka arrived; ANA's never did.
                for _ in range(300):
                    if event_count(url, BEN.user_id) == 6:
                        break
                    asyncio.run(asyncio.sleep(0.2))
                assert event_count(url, BEN.user_id) == 6
                assert event_count(url, ANA.user_id) == 0
                assert late_webhook(url, ANA).status_code == 202
                assert httpx.get(f"{url}/api/v1/users/{ANA.user_id}", headers=SERVICE,
                                 timeout=30).status_code == 404
                grants = [g for g in sim.admin("GET", "/_sim/grants")
                          if g["provider"] == "oura"]
                assert all(g["revoked"] == str(g["user"]).endswith(
                    f"{WEARERS[ANA.user_id]:04d}") for g in grants)
        finally:
            sink.stop()
    # A replay of both topics from their start (a new consumer group, as after a restore or a
    # reset) resurrects nothing of ANA: the sink screens every record through the ledger.
    replay_env = {**sink_env, "KAFKA_SINK_GROUP": f"replay-{env['KAFKA_SINK_GROUP']}"}
    replay = subprocess.run([sys.executable, "-m", "auren", "sink", "--once", "--idle-exit",
                             "3"], env=replay_env, capture_output=True, timeout=120, check=False)
    assert replay.returncode == 0, replay.stderr.decode()[-2000:]
    (stopped,) = [json.loads(line) for line in replay.stderr.decode().splitlines()
                  if '"sink stopped"' in line]
    # Every delivery of both people read again (3 + 3 each); ANA's 6 events screened out.
    assert stopped["count"] == 12 and stopped["detail"] == "erased 6", stopped
    # PostgreSQL: every row of ANA gone, every table that held them VACUUMed, BEN's intact.
    assert rows_of(url_pg, ANA.user_id) == dict.fromkeys(ERASED_TABLES, 0)
    bens = rows_of(url_pg, BEN.user_id)
    assert bens["biometric_events"] == 6 and bens["users"] == 1 and bens["messages"] == 2
    assert bens["connections"] == 1 and bens["fetch_jobs"] > 0
    vacuumed = {r[0] for r in pg_fetch(
        url_pg, "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL")}
    assert {"fetch_jobs", "connections", "connect_states", "users", "conversations",
            "messages"} <= vacuumed
    assert any(name.startswith("biometric_events") for name in vacuumed)
    accounts = {r[0] for r in pg_fetch(url_pg, "SELECT provider_user_id FROM fetch_jobs")}
    assert not set(ANA.provider_user_ids) & accounts
    # Redis and the spool's files: nothing of ANA, BEN still there.
    dump = redis_dump(env)
    assert ANA.user_id.encode() not in dump and repr(ANA.value).encode() not in dump
    assert BEN.user_id.encode() in dump
    assert betrayed(files_under(spool_dir), ANA) == []
    assert any("user id" in found for found in betrayed(files_under(spool_dir), BEN))
