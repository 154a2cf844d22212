"""Direct probes of the data plane: PostgreSQL, Redis, Kafka and the embedded SQLite file.

Real round trips, not TCP connects (a listener accepting a connection says nothing about a
database): ``SELECT 1`` and the events table, ``PING``, cluster metadata with the topic. Every
call has a finite timeout. The Kafka client is blocking and its constructor and metadata calls
can hang past their own timeouts, so it runs on a daemon thread that is abandoned, not joined,
when the deadline passes (a pool thread would keep the interpreter from exiting).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

EVENTS_TABLE = "biometric_events"
JOBS_TABLE = "fetch_jobs"


class ProbeFailed(Exception):
    """A dependency did not answer correctly; the message says how, for a report row."""


async def in_daemon_thread(fn: Callable[[], T], timeout_s: float) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, value, None)

    threading.Thread(target=run, daemon=True, name="auren-probe").start()
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        raise ProbeFailed(f"no answer within {timeout_s:g} s") from None


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


@dataclass(frozen=True, slots=True)
class StoreCount:
    events: int
    fetch_jobs: int

    @property
    def items(self) -> int:
        """What a bridge's ``accepted`` counts: canonical events plus fetch jobs."""
        return self.events + self.fetch_jobs


# --- PostgreSQL ---------------------------------------------------------------------------------


async def postgres_probe(dsn: str, timeout_s: float) -> dict[str, Any]:
    import asyncpg  # imported when used: the embedded toolkit never needs it

    started = time.perf_counter()
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ProbeFailed(f"connect failed: {type(exc).__name__}") from None
    try:
        one = await conn.fetchval("SELECT 1", timeout=timeout_s)
        table = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", EVENTS_TABLE,
                                    timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ProbeFailed(f"query failed: {type(exc).__name__}") from None
    finally:
        await conn.close(timeout=timeout_s)
    if one != 1:
        raise ProbeFailed("SELECT 1 did not return 1")
    if not table:
        raise ProbeFailed(f"table {EVENTS_TABLE} does not exist")
    return {"ms": (time.perf_counter() - started) * 1000}


async def postgres_count(dsn: str, timeout_s: float) -> StoreCount:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
        try:
            row = await conn.fetchrow(
                f"SELECT (SELECT count(*) FROM {EVENTS_TABLE}) AS events, "  # noqa: S608
                f"(SELECT count(*) FROM {JOBS_TABLE}) AS jobs", timeout=timeout_s)
        finally:
            await conn.close(timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ProbeFailed(f"count failed: {type(exc).__name__}") from None
    return StoreCount(int(row["events"]), int(row["jobs"]))


# --- Redis --------------------------------------------------------------------------------------


async def redis_probe(url: str, timeout_s: float, ca_file: Path | None = None) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from auren.adapters.redis_cache import tls_options

    started = time.perf_counter()
    client = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                               **tls_options(url, ca_file))
    try:
        pong = await asyncio.wait_for(cast("Awaitable[bool]", client.ping()), timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        raise ProbeFailed(f"PING failed: {type(exc).__name__}") from None
    finally:
        await client.aclose()
    if not pong:
        raise ProbeFailed("PING did not answer PONG")
    return {"ms": (time.perf_counter() - started) * 1000}


# --- Kafka --------------------------------------------------------------------------------------


def _kafka_metadata(bootstrap: str, timeout_s: float, security: dict[str, Any], topic_name: str
                    ) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap,
                         "socket.timeout.ms": int(timeout_s * 1000),
                         "log_level": 0, **security})
    metadata = admin.list_topics(timeout=timeout_s)
    topic = metadata.topics.get(topic_name)
    return {"brokers": len(metadata.brokers),
            "topic": None if topic is None or topic.error is not None else
            len(topic.partitions)}


async def kafka_probe(bootstrap: str, timeout_s: float,
                      security: dict[str, Any] | None, topic: str) -> dict[str, Any]:
    """Cluster metadata and the events topic (``KAFKA_EVENTS_TOPIC``); ``security``:
    ``adapters.kafka.client_security`` of the deployment's settings (TLS, SASL)."""
    started = time.perf_counter()
    try:
        facts = await in_daemon_thread(
            lambda: _kafka_metadata(bootstrap, timeout_s, security or {}, topic), timeout_s + 1)
    except ProbeFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - KafkaException and plain errors: a report row
        raise ProbeFailed(f"metadata failed: {type(exc).__name__}: {exc}") from None
    if not facts["brokers"]:
        raise ProbeFailed("no broker in the cluster metadata")
    if facts["topic"] is None:
        raise ProbeFailed(f"topic {topic} does not exist")
    return {"ms": (time.perf_counter() - started) * 1000, **facts}


def deployment_topics(settings: Any) -> tuple[str, ...]:
    """The topics a delivery's record may go to: events, and notifications (a delivery of
    fetch jobs only goes there)."""
    return (settings.kafka_events_topic, settings.kafka_notifications_topic)


def kafka_security(settings: Any) -> dict[str, Any]:
    """The deployment's Kafka security properties (TLS, SASL) for the probes below."""
    from auren.adapters.kafka import client_security  # confluent-kafka only where used

    return client_security(settings)


def _kafka_high_watermarks(bootstrap: str, timeout_s: float, security: dict[str, Any],
                           topics: Sequence[str]) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "auren-ops-offsets",
                         "enable.auto.commit": False, "log_level": 0,
                         "socket.timeout.ms": int(timeout_s * 1000), **security})
    try:
        total, found = 0, 0
        for name in topics:
            metadata = consumer.list_topics(name, timeout=timeout_s)
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue  # not made yet (no record ever went there)
            found += 1
            for partition in topic.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                            timeout=timeout_s)
                total += int(high)
        if not found:
            raise ProbeFailed(f"topic {topics[0]} does not exist")
        return total
    finally:
        consumer.close()


async def kafka_offsets(settings: Any, timeout_s: float = 5.0) -> int:
    """The sum of the deployment's topics' high watermarks: every record ever appended to
    them (``settings``: the deployment's, with its Kafka security and topic names)."""
    bootstrap, security = settings.kafka_bootstrap_servers, kafka_security(settings)
    topics = deployment_topics(settings)
    try:
        return await in_daemon_thread(
            lambda: _kafka_high_watermarks(bootstrap, timeout_s, security, topics),
            timeout_s * 2 + 1)
    except ProbeFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - KafkaException and plain errors: a report row
        raise ProbeFailed(f"offsets failed: {type(exc).__name__}: {exc}") from None


# --- SQLite (embedded) --------------------------------------------------------------------------


def _sqlite_count(path: Path) -> StoreCount:
    if not path.exists():
        raise ProbeFailed(f"{path} does not exist")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        events = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()[0]  # noqa: S608
        jobs = conn.execute(f"SELECT count(*) FROM {JOBS_TABLE}").fetchone()[0]  # noqa: S608
    return StoreCount(int(events), int(jobs))


async def sqlite_count(path: Path, timeout_s: float = 10.0) -> StoreCount:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_sqlite_count, path), timeout_s)
    except sqlite3.Error as exc:
        raise ProbeFailed(f"count failed: {type(exc).__name__}") from None
    except TimeoutError:
        raise ProbeFailed(f"count took longer than {timeout_s:g} s") from None


# --- the events of one load workload, by source record id ---------------------------------------


def _namespace_bounds(namespace: str) -> tuple[str, str]:
    """``[low, high)`` of the user ids starting with ``namespace``: a range the (user_id, ...)
    index serves in both stores, where LIKE would not in SQLite."""
    if not namespace:
        raise ValueError("an empty namespace would match every user")
    return namespace, namespace[:-1] + chr(ord(namespace[-1]) + 1)


_RECORDS_SQL = (f"SELECT source_record_id, count(*) FROM {EVENTS_TABLE} "  # noqa: S608
                "WHERE user_id >= {low} AND user_id < {high} GROUP BY source_record_id")


def _sqlite_records(path: Path, namespace: str) -> dict[str, int]:
    if not path.exists():
        raise ProbeFailed(f"{path} does not exist")
    low, high = _namespace_bounds(namespace)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute(_RECORDS_SQL.format(low="?", high="?"), (low, high)).fetchall()
    return {str(record): int(n) for record, n in rows if record is not None}


async def sqlite_records(path: Path, namespace: str, timeout_s: float = 30.0) -> dict[str, int]:
    """How many times each source record id of users in ``namespace`` is stored (SQLite)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_sqlite_records, path, namespace),
                                      timeout_s)
    except sqlite3.Error as exc:
        raise ProbeFailed(f"{path}: {type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise ProbeFailed(f"reading {path} took longer than {timeout_s:g} s") from None


async def postgres_records(dsn: str, namespace: str, timeout_s: float = 30.0
                           ) -> dict[str, int]:
    """How many times each source record id of users in ``namespace`` is stored (PostgreSQL)."""
    import asyncpg

    low, high = _namespace_bounds(namespace)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
        try:
            rows = await conn.fetch(_RECORDS_SQL.format(low="$1", high="$2"), low, high,
                                    timeout=timeout_s)
        finally:
            await conn.close(timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ProbeFailed(f"query failed: {type(exc).__name__}: {exc}") from None
    return {str(r[0]): int(r[1]) for r in rows if r[0] is not None}
