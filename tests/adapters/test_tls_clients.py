"""The data plane's clients over TLS, built from settings through the composition root:
Redis (``rediss://`` + ``REDIS_SSL_CA_FILE``) against a real ``redis-server`` with a TLS port,
PostgreSQL (``sslmode=verify-full&sslrootcert=`` in ``POSTGRES_URL``) against a real server
with ``ssl = on`` that rejects plain TCP, and Kafka's security settings as a real librdkafka
takes them. Each positive case is paired with the failure that proves the certificate is
really checked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from auren.adapters.base import EventQuery
from auren.adapters.kafka import client_security, producer_config
from auren.errors import StoreUnavailable
from auren.ops import deps
from auren.services.dataplane import build_dataplane
from auren.services.sink import consumer_config
from auren.settings import Settings
from tests.helpers import delivery
from tests.stack import TEST_ENCRYPTION_KEY
from tests.tls import Pki, make_pki
from tests.tls_servers import tls_postgres, tls_redis


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA: a client trusting it must refuse the servers."""
    return make_pki(tmp_path_factory.mktemp("other-pki"))


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with tls_redis(tmp_path_factory.mktemp("redis"), pki) as port:
        yield port


def _redis_settings(url: str, ca: Path | None, tmp: Path) -> Settings:
    # A TLS handshake on a busy machine can outlast the 0.5 s default; a refused certificate
    # fails at once whatever the bound.
    return Settings(_env_file=None, redis_url=url, redis_ssl_ca_file=ca, auren_data_dir=tmp,
                    redis_key_prefix=f"tls:{uuid.uuid4().hex[:8]}:", redis_timeout_s=5,
                    auren_encryption_key=TEST_ENCRYPTION_KEY)


async def test_the_bridge_cache_speaks_tls_to_redis(redis_port: int, pki: Pki, tmp_path: Path
                                                    ) -> None:
    plane = build_dataplane(_redis_settings(f"rediss://localhost:{redis_port}/0", pki.ca,
                                            tmp_path), service="bridge")
    assert plane.redis is not None and plane.cache is plane.redis
    await plane.open()
    try:
        assert (await plane.redis.ping())["engine"] == "redis"
        await plane.redis.remember(["tls:delivery-1"])
        await plane.redis.flush()
        assert await plane.redis.seen("tls:delivery-1")
        _, checks = await plane.health("now")
        assert checks["redis:responseTime"][0]["status"] == "pass", checks
    finally:
        await plane.close(5)


@pytest.mark.parametrize("case", ["untrusted CA", "plain TCP to the TLS port", "wrong name"])
async def test_redis_refuses_what_it_cannot_verify(case: str, redis_port: int, pki: Pki,
                                                   other_pki: Pki, tmp_path: Path) -> None:
    url, ca = {
        "untrusted CA": (f"rediss://localhost:{redis_port}/0", other_pki.ca),
        "plain TCP to the TLS port": (f"redis://localhost:{redis_port}/0", pki.ca),
        # 127.0.0.2 is the loopback too, but not a name the certificate carries.
        "wrong name": (f"rediss://127.0.0.2:{redis_port}/0", pki.ca),
    }[case]
    plane = build_dataplane(_redis_settings(url, ca, tmp_path), service="neuros")
    assert plane.redis is not None
    await plane.open()  # a Redis it cannot use is a warning, never a start-up failure
    try:
        with pytest.raises(StoreUnavailable):
            await plane.redis.ping()
    finally:
        await plane.close(5)


async def test_the_health_probe_verifies_redis_too(redis_port: int, pki: Pki,
                                                   other_pki: Pki) -> None:
    url = f"rediss://localhost:{redis_port}/0"
    assert (await deps.redis_probe(url, 5.0, pki.ca))["ms"] > 0
    with pytest.raises(deps.ProbeFailed):
        await deps.redis_probe(url, 5.0, other_pki.ca)


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url(pki: Pki) -> Iterator[str]:
    with tls_postgres(pki) as url:
        yield url


def _pg_settings(url: str, tmp: Path) -> Settings:
    return Settings(_env_file=None, postgres_url=url, auren_data_dir=tmp,
                    auren_encryption_key=TEST_ENCRYPTION_KEY)


async def test_the_store_and_conversations_speak_verified_tls(pg_url: str, pki: Pki,
                                                              tmp_path: Path) -> None:
    url = f"{pg_url}?sslmode=verify-full&sslrootcert={pki.ca}"
    plane = build_dataplane(_pg_settings(url, tmp_path), service="neuros")
    await plane.open()
    try:
        user = f"tls-{uuid.uuid4().hex[:8]}"
        await plane.store.write_batch([delivery("tls-1", user, range(3))])
        stored = await plane.store.query_events(EventQuery(user_id=user, limit=10))
        assert [e.source_record_id for e in stored] == [f"{user}-{d}" for d in range(3)]
        assert plane.conversations is not None
        assert (await plane.conversations.ping())["responseTime_ms"] >= 0
    finally:
        await plane.close(5)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        ssl, version = await conn.fetchrow(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert ssl is True and version in ("TLSv1.2", "TLSv1.3")
    finally:
        await conn.close()


@pytest.mark.parametrize("case", ["plain TCP", "untrusted CA", "wrong name"])
async def test_postgres_refuses_what_it_cannot_verify(case: str, pg_url: str, pki: Pki,
                                                      other_pki: Pki, tmp_path: Path) -> None:
    url = {
        "plain TCP": f"{pg_url}?sslmode=disable",  # pg_hba rejects it
        "untrusted CA": f"{pg_url}?sslmode=verify-full&sslrootcert={other_pki.ca}",
        "wrong name": pg_url.replace("127.0.0.1", "127.0.0.2", 1)
        + f"?sslmode=verify-full&sslrootcert={pki.ca}",
    }[case]
    plane = build_dataplane(_pg_settings(url, tmp_path), service="bridge")
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(plane.open(), 30)


# --- Kafka ------------------------------------------------------------------------------------


def _kafka_settings(**values: object) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:1",
                    postgres_url="postgresql://x@127.0.0.1:1/x",
                    auren_encryption_key=TEST_ENCRYPTION_KEY, **values)  # type: ignore[arg-type]


def test_plain_kafka_adds_nothing() -> None:
    settings = _kafka_settings()
    assert client_security(settings) == {}
    assert "security.protocol" not in consumer_config(settings)


def test_sasl_ssl_reaches_the_producer_consumer_and_admin(pki: Pki) -> None:
    settings = _kafka_settings(kafka_security_protocol="SASL_SSL", kafka_ssl_ca_file=pki.ca,
                               kafka_sasl_mechanism="SCRAM-SHA-256",
                               kafka_sasl_username="auren", kafka_sasl_password="s3cret")
    security = client_security(settings)
    assert security == {"security.protocol": "sasl_ssl", "ssl.ca.location": str(pki.ca),
                        "enable.ssl.certificate.verification": True,
                        "ssl.endpoint.identification.algorithm": "https",
                        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "auren",
                        "sasl.password": "s3cret"}
    plane = build_dataplane(settings, service="bridge")
    assert plane.bus_log is not None
    bus_config = plane.bus_log.bus.config  # type: ignore[attr-defined]
    assert {k: bus_config[k] for k in security} == security
    assert {k: consumer_config(settings)[k] for k in security} == security
    # librdkafka itself accepts them: it loads the CA file when the client is made.
    Producer({**producer_config("127.0.0.1:1", message_timeout_s=1, client_id="t"),
              "log_level": 0, **security}).purge()
    AdminClient({"bootstrap.servers": "127.0.0.1:1", "log_level": 0, **security})


def test_a_ca_file_librdkafka_cannot_load_fails_when_the_client_is_made(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    settings = _kafka_settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=bad)
    with pytest.raises(KafkaException):
        Producer({"bootstrap.servers": "127.0.0.1:1", **client_security(settings)})


def test_sasl_without_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="KAFKA_SASL_USERNAME"):
        _kafka_settings(kafka_security_protocol="SASL_PLAINTEXT")
