"""The three servers of ``auren infra``: how each is installed, configured, started and asked a
real question. Process bookkeeping (pid files, signals, waiting) lives in
:mod:`auren.infra.stack`.

Every client call here has a finite timeout, and every probe is a real request over TCP on the
loopback (Kafka: produce then fetch the same record; PostgreSQL: ``SELECT 1`` as the app's role
with its password; Redis: ``PING``) so that "answering" means what the services will need.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from auren.infra.base import (
    HOST,
    PG_DATABASE,
    PG_USER,
    InfraConfig,
    InfraError,
    Probe,
    SpawnSpec,
    apt_install,
    is_root,
    run_async,
    run_bounded,
    user_exists,
)

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

log = logging.getLogger(__name__)

# The Maven project that names the Kafka version: package data, so an installed wheel has it.
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
# The topic `up` and `status` round-trip a record through. The bus creates its own topics, so
# auto-creation is off and this one is created explicitly (1 partition, replication 1).
HEALTH_TOPIC = "auren-infra-health"
# The Debian package installed when `java` (which runs the broker) is missing.
_JAVA_PACKAGE = "openjdk-17-jre-headless"


class Server(abc.ABC):
    """One server of the stack, bound to a config. Stateless: the record of a running process is
    kept by :mod:`auren.infra.stack` in the server's directory."""

    name: ClassVar[str]
    # The signal that asks for a clean, prompt shutdown.
    graceful_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, cfg: InfraConfig) -> None:
        self.cfg = cfg

    @property
    def dir(self) -> Path:
        return self.cfg.server_dir(self.name)

    @abc.abstractmethod
    def ports(self) -> dict[str, int]:
        """The loopback ports the server listens on, by role."""

    @abc.abstractmethod
    def prepare(self) -> tuple[SpawnSpec, str]:
        """Install what is missing and write the server's files; the server is not running.
        Returns how to start it and the version that command will run."""

    def bootstrap(self, timeout: float) -> None:  # noqa: B027 - an optional hook
        """Once the server accepts connections: create what the app needs (idempotent)."""

    @abc.abstractmethod
    def probe(self, timeout: float) -> Probe:
        """One real request, bounded by ``timeout``; raises when it gets no good answer."""

    @abc.abstractmethod
    def export(self) -> tuple[str, str]:
        """The environment variable the services read to reach this server, and its value."""

    def log_files(self) -> list[Path]:
        """Where to look when the server does not come up (tails go into the error)."""
        return []

    def is_helper(self, proc: Path) -> bool:
        """Whether the process at ``/proc/<pid>`` is a helper of this server that left its
        process group (only PostgreSQL's do)."""
        return False


# --- Kafka ---------------------------------------------------------------------------------------


def kafka_version() -> str:
    """The Kafka version the checked-in Maven project names."""
    return _parse_kafka_version(_read_pom())


def _read_pom() -> bytes:
    try:
        return KAFKA_POM.read_bytes()
    except OSError as exc:
        raise InfraError(f"{KAFKA_POM} is missing: the auren package was installed without "
                         "its package data") from exc


def _parse_kafka_version(pom: bytes) -> str:
    match = re.search(rb"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom)
    if match is None:
        raise InfraError(f"{KAFKA_POM} names no <kafka.version>")
    return match.group(1).decode()


def kafka_runtime(cfg: InfraConfig) -> tuple[Path, str]:
    """The directory of the broker's jars and its version, fetched by Maven on first use.

    Cached per content of the pom (not only per version: a changed logging dependency is a new
    runtime) under the shared cache dir, so a second `up`, another data dir or a test run never
    reruns Maven. Maven copies into a private temp dir that is renamed into place when complete,
    so two concurrent `up`s cannot see half a directory of jars.
    """
    pom = _read_pom()
    version = _parse_kafka_version(pom)
    home = cfg.kafka_cache_base / f"kafka-{version}-{hashlib.sha256(pom).hexdigest()[:12]}"
    lib = home / "lib"
    if (home / "complete").is_file():
        return lib, version
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(["maven"], "Maven (mvn) fetches the Kafka broker and is not installed")
        mvn = shutil.which("mvn") or "mvn"
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lib.", dir=home))
    try:
        log.info("fetching Kafka %s with Maven into %s", version, lib)
        run_bounded([mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
                     f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
                    timeout=900, what="mvn dependency:copy-dependencies (Kafka from Maven Central)")
        if not (tmp / f"kafka_2.13-{version}.jar").is_file():
            raise InfraError(f"Maven resolved no kafka_2.13-{version}.jar")
        try:
            tmp.rename(lib)
        except OSError:
            if not lib.is_dir():  # not a lost race with another `up`: a real failure
                raise
        (home / "complete").write_text(f"kafka {version}\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib, version


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        apt_install([_JAVA_PACKAGE], "Java 17 runs the Kafka broker and is not installed")
        found = shutil.which("java") or "java"
    return found


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, the form Kafka's
    own ``Uuid.randomUuid().toString()`` has (saves a JVM start for `kafka-storage random-uuid`).
    One in 64 of those begins with ``-``, which the storage tool's argument parser reads as an
    option; Kafka draws again in that case, and so does this."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not found.startswith("-"):
            return found


class KafkaServer(Server):
    name = "kafka"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def ports(self) -> dict[str, int]:
        ports = {"broker": self.cfg.kafka_port, "controller": self.cfg.kafka_controller_port}
        if self.cfg.kafka_proxied is not None:
            ports["proxied"] = self.cfg.kafka_proxied[0]
        return ports

    def export(self) -> tuple[str, str]:
        return "KAFKA_BOOTSTRAP_SERVERS", f"{HOST}:{self.cfg.kafka_port}"

    def log_files(self) -> list[Path]:
        return [self.dir / "stdout.log", self.dir / "server.log"]

    def server_properties(self) -> str:
        broker, controller = self.cfg.kafka_port, self.cfg.kafka_controller_port
        listeners = f"PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}"
        advertised = f"PLAINTEXT://{HOST}:{broker}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        if self.cfg.kafka_proxied is not None:
            # Clients that bootstrap through the fault proxy are told to stay on it.
            proxied, proxy = self.cfg.kafka_proxied
            listeners += f",PROXIED://{HOST}:{proxied}"
            advertised += f",PROXIED://{HOST}:{proxy}"
            protocols += ",PROXIED:PLAINTEXT"
        return "\n".join([
            "# Written by `auren infra up` on every start; edits are overwritten.",
            "# One node that is both broker and KRaft controller (no ZooKeeper in Kafka 4).",
            "process.roles=broker,controller",
            "node.id=1",
            # A static voter list (not --standalone's dynamic quorum, which records the
            # controller's endpoint in the log): the ports can change between runs.
            f"controller.quorum.voters=1@{HOST}:{controller}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            f"log.dirs={self.data}",
            # A single node can hold one replica of anything: every internal topic and every
            # in-sync requirement must say 1, or transactions, groups and acks=all would stall.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "min.insync.replicas=1",
            "default.replication.factor=1",
            "num.partitions=1",
            # The bus creates its topics with the partitioning it wants.
            "auto.create.topics.enable=false",
            # Tests start consumer groups often; the 3 s default delay only slows them down.
            "group.initial.rebalance.delay.ms=0",
            # After kill -9 the restarted broker cannot register until the controller has
            # expired its old session (default 9 s). The controller is in the same JVM, so a
            # 4 s session (1 s heartbeats) still tolerates long GC pauses and restarts faster.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
            # Two cores for the whole stack: fewer threads than the defaults (3 and 8).
            "num.network.threads=2",
            "num.io.threads=4",
            "",
        ])

    def log4j2_properties(self) -> str:
        # A size-capped rolling file so that a long-lived dev broker cannot fill the disk.
        server_log = self.dir / "server.log"
        return "\n".join([
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {server_log}",
            f"appender.file.filePattern = {server_log}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 50MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = file",
            "",
        ])

    def prepare(self) -> tuple[SpawnSpec, str]:
        java = _java()
        lib, version = kafka_runtime(self.cfg)
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self.server_properties())
        log4j = self.dir / "log4j2.properties"
        log4j.write_text(self.log4j2_properties())
        jvm = [java, "-Xms128m", f"-Xmx{self.cfg.kafka_heap_mb}m",
               # Kafka's own launcher defaults: G1 with short pauses, no AWT.
               "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               # Die rather than limp on when the small heap runs out; `up` restarts it.
               "-XX:+ExitOnOutOfMemoryError",
               f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
        if not (self.data / "meta.properties").is_file():
            # Never formatted, or a format that died half-way: nothing in it is worth keeping.
            shutil.rmtree(self.data, ignore_errors=True)
            run_bounded([*jvm, "kafka.tools.StorageTool", "format",
                         f"--cluster-id={new_cluster_id()}", "-c", str(props)],
                        timeout=120, what="Kafka storage format", cwd=self.dir)
        return SpawnSpec(argv=[*jvm, "kafka.Kafka", str(props)], cwd=self.dir,
                         log=self.dir / "stdout.log"), f"Kafka {version}"

    def probe(self, timeout: float) -> Probe:
        return kafka_round_trip(f"{HOST}:{self.cfg.kafka_port}", timeout)


def _rdkafka_config(bootstrap: str, timeout: float, errors: list[str]) -> dict[str, Any]:
    ms = max(1000, int(timeout * 1000))
    return {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": ms,
        "socket.connection.setup.timeout.ms": ms,
        # A broker that is starting refuses connections: retry soon, not after librdkafka's
        # growing backoff, and do not print every refusal (the failure is reported once).
        "reconnect.backoff.max.ms": 500,
        "log_level": 2,
        "logger": log,
        "error_cb": lambda err: errors.append(str(err)),
    }


def kafka_round_trip(bootstrap: str, timeout: float) -> Probe:
    """Produce one unique record (acks=all) to the health topic, then fetch it back by its
    offset. Creates the topic when missing. Raises InfraError when anything fails in time."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    # Defined in cimpl; confluent_kafka.admin re-exports it without declaring it for mypy.
    from confluent_kafka.cimpl import NewTopic

    deadline = time.monotonic() + timeout
    errors: list[str] = []

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InfraError(f"Kafka at {bootstrap} did not answer within {timeout:.1f} s"
                             + (f" ({errors[-1]})" if errors else ""))
        return remaining

    conf = _rdkafka_config(bootstrap, timeout, errors)
    try:
        admin = AdminClient({k: v for k, v in conf.items() if k not in ("logger", "error_cb")},
                            logger=log, error_cb=conf["error_cb"])
        topics = admin.list_topics(topic=HEALTH_TOPIC, timeout=left()).topics
        meta = topics.get(HEALTH_TOPIC)
        if meta is None or meta.error is not None or not meta.partitions:
            # Every probe adds a record: keep an hour of them, not the default week.
            topic = NewTopic(HEALTH_TOPIC, 1, 1, config={"retention.ms": "3600000"})
            futures = admin.create_topics([topic], operation_timeout=left(),
                                          request_timeout=left())
            try:
                futures[HEALTH_TOPIC].result(timeout=left())
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        producer = Producer({**conf, "acks": "all", "linger.ms": 0,
                             "message.timeout.ms": max(1000, int(left() * 1000))})
        consumer = Consumer({**conf, "group.id": "auren-infra-health",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        try:
            # Connect both clients first so that the round trip measures the broker, not TCP
            # and metadata set-up.
            producer.list_topics(topic=HEALTH_TOPIC, timeout=left())
            consumer.list_topics(topic=HEALTH_TOPIC, timeout=left())
            token = uuid.uuid4().bytes
            delivered: list[tuple[KafkaError | None, Message]] = []
            started = time.perf_counter()
            producer.produce(HEALTH_TOPIC, value=token, key=b"auren-infra",
                             on_delivery=lambda err, msg: delivered.append((err, msg)))
            producer.flush(left())
            if not delivered:
                raise InfraError(f"Kafka at {bootstrap} did not acknowledge the health record")
            err, msg = delivered[0]
            offset = msg.offset()
            if err is not None or offset is None:
                raise InfraError(f"Kafka at {bootstrap} refused the health record: {err}")
            consumer.assign([TopicPartition(HEALTH_TOPIC, msg.partition() or 0, offset)])
            while True:
                got = consumer.poll(min(0.5, left()))
                if got is not None and got.error() is None and got.value() == token:
                    break
            rtt = (time.perf_counter() - started) * 1000
        finally:
            consumer.close()
            # Whatever is still queued (a broker that went away mid-probe) is dropped now, so
            # that destroying the producer does not wait on it.
            producer.purge()
            producer.flush(0)
    except KafkaException as exc:
        raise InfraError(f"Kafka at {bootstrap}: {exc}") from exc
    return Probe(rtt_ms=rtt, version="", detail="produce+fetch")


# --- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bindir(major: str | None = None) -> Path | None:
    """Debian's server binaries (``/usr/lib/postgresql/<major>/bin``): the given major, else the
    newest installed; else wherever ``pg_ctl`` on PATH really lives."""
    root = Path("/usr/lib/postgresql")
    if major is not None:
        wanted = root / major / "bin"
        return wanted if (wanted / "postgres").is_file() else None
    found = [p.parent for p in root.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    if found:
        return max(found, key=lambda p: int(p.parent.name))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and (Path(pg_ctl).resolve().parent / "postgres").is_file():
        return Path(pg_ctl).resolve().parent
    return None


def sql_literal(value: str) -> str:
    """A string literal for the utility statements that take no bind parameters (``PASSWORD``).
    Doubling quotes is the whole escape with standard_conforming_strings on (the default)."""
    if "\x00" in value:
        raise InfraError("the PostgreSQL password must not contain NUL")
    return "'" + value.replace("'", "''") + "'"


class PostgresServer(Server):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM ("smart") waits for every client to
    # disconnect, which a pooled service never does.
    graceful_signal = signal.SIGINT

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def ports(self) -> dict[str, int]:
        return {"postgres": self.cfg.postgres_port}

    def log_files(self) -> list[Path]:
        return [self.dir / "postgres.log"]

    def is_helper(self, proc: Path) -> bool:
        # Every PostgreSQL process is named postgres and works in the data directory.
        try:
            return ((proc / "comm").read_text().strip() == "postgres"
                    and (proc / "cwd").readlink() == self.data)
        except OSError:
            return False

    def password(self) -> str:
        """The app role's password: configured, or generated once and kept in the data dir."""
        if self.cfg.postgres_password:
            return self.cfg.postgres_password
        path = self.dir / "password"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password

    def url(self) -> str:
        return (f"postgresql://{PG_USER}:{quote(self.password(), safe='')}@{HOST}:"
                f"{self.cfg.postgres_port}/{PG_DATABASE}")

    def export(self) -> tuple[str, str]:
        return "POSTGRES_URL", self.url()

    def os_user(self) -> str | None:
        """Who runs the server: PostgreSQL refuses root. Debian's package creates `postgres`;
        without it a system user `auren` is made. Not root: ourselves (None)."""
        if not is_root():
            return None
        for name in ("postgres", "auren"):
            if user_exists(name):
                return name
        run_bounded(["useradd", "--system", "--user-group", "--no-create-home",
                     "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "auren"],
                    timeout=30, what="useradd auren")
        return "auren"

    def conf(self) -> str:
        return "\n".join([
            "# Written by `auren infra up` on every start; edits are overwritten.",
            f"listen_addresses = '{HOST}'",
            f"port = {self.cfg.postgres_port}",
            # The admin socket stays inside the data dir (0700, the server's user), so `trust`
            # for local connections reaches only that user and root.
            f"unix_socket_directories = '{self.run_dir}'",
            "unix_socket_permissions = 0700",
            "password_encryption = 'scram-sha-256'",
            # Durability as in production: the fault tests kill -9 this server.
            "fsync = on",
            "synchronous_commit = on",
            "full_page_writes = on",
            # Small: the whole stack shares the machine with the services under test.
            "shared_buffers = '128MB'",
            "max_connections = 100",
            "max_wal_size = '512MB'",
            "timezone = 'UTC'",
            "logging_collector = off",
            "",
        ])

    def prepare(self) -> tuple[SpawnSpec, str]:
        existing = (self.data / "PG_VERSION").read_text().strip() if (
            self.data / "PG_VERSION").is_file() else None
        bindir = _pg_bindir(existing)
        if bindir is None and _pg_bindir() is None:
            apt_install(["postgresql"], "PostgreSQL is not installed")
            bindir = _pg_bindir(existing)
        if bindir is None:
            raise InfraError(f"{self.data} holds a PostgreSQL {existing} cluster but the "
                             f"PostgreSQL {existing} server is not installed")
        user = self.os_user()
        socket = self.run_dir / f".s.PGSQL.{self.cfg.postgres_port}"
        if len(str(socket).encode()) > 100:  # sun_path holds 108 bytes, with room for ".lock"
            raise InfraError(f"the data dir path is too long for PostgreSQL's socket ({socket}); "
                             "choose a shorter AUREN_DATA_DIR")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password()  # generated now, while nothing else writes the dir
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            shutil.chown(self.run_dir, user, user)
            # Running as another user, the server must reach its files through every parent.
            try:
                run_bounded(["test", "-x", str(self.dir)], timeout=10, what="access check",
                            user=user)
            except InfraError as exc:
                raise InfraError(
                    f"user {user!r} (who runs PostgreSQL) cannot reach {self.dir}: a parent "
                    "directory is closed to other users; choose an AUREN_DATA_DIR under a "
                    "world-searchable path (e.g. /var/tmp/auren) or `chmod o+x` the parents"
                ) from exc
        if existing is None:
            self._initdb(bindir, user)
        conf = self.data / "auren.conf"
        conf.write_text(self.conf())
        if user is not None:
            shutil.chown(conf, user, user)
        main_conf = self.data / "postgresql.conf"
        if "include_if_exists 'auren.conf'" not in main_conf.read_text():
            with main_conf.open("a") as fh:
                fh.write("\n# AUREN's settings (auren infra)\ninclude_if_exists 'auren.conf'\n")
        self._clear_stale_lock()
        version = run_bounded([str(bindir / "postgres"), "--version"], timeout=30,
                              what="postgres --version").strip()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(self.dir)}
        return SpawnSpec(argv=[str(bindir / "postgres"), "-D", str(self.data)], cwd=self.dir,
                         log=self.dir / "postgres.log", env=env, user=user), version

    def _initdb(self, bindir: Path, user: str | None) -> None:
        # Into a scratch dir renamed when complete: a half-made cluster is never mistaken for
        # a real one (initdb refuses a non-empty directory, so it would also block retries).
        scratch = self.dir / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        if user is not None:
            shutil.chown(scratch, user, user)
        run_bounded([str(bindir / "initdb"), "-D", str(scratch), "--username=postgres",
                     # Local socket: trust (see unix_socket_directories); TCP: passwords.
                     "--auth-local=trust", "--auth-host=scram-sha-256",
                     "--encoding=UTF8", "--no-locale"],
                    timeout=180, what="initdb", user=user, cwd=self.dir,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"})
        scratch.rename(self.data)

    def _clear_stale_lock(self) -> None:
        """postmaster.pid left by a killed server names a pid that may still be a zombie or
        may since have gone to an unrelated process; PostgreSQL would then refuse to start.
        Remove it unless that pid is a live postgres (which must be left alone). Called after
        auren.infra has made sure no process of the previous server is left."""
        lock = self.data / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
            # A zombie (killed, not yet reaped by its parent) holds nothing any more.
            state = stat[stat.rfind(")") + 2:].split(" ", 1)[0]
        except OSError:
            comm, state = "", ""
        if comm in ("postgres", "postmaster") and state not in ("Z", "X"):
            raise InfraError(f"a PostgreSQL server (pid {pid}) that auren did not start is "
                             f"using {self.data}; stop it first")
        lock.unlink(missing_ok=True)

    def bootstrap(self, timeout: float) -> None:
        """As the superuser over the private socket: the app's role (password kept in sync
        with the config) and its database."""
        import asyncpg

        password = self.password()

        async def run() -> None:
            conn = await asyncpg.connect(host=str(self.run_dir), port=self.cfg.postgres_port,
                                         user="postgres", database="postgres", timeout=timeout)
            try:
                role_sql = f"ROLE {PG_USER} WITH LOGIN PASSWORD {sql_literal(password)}"
                if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", PG_USER):
                    await conn.execute(f"ALTER {role_sql}")
                else:
                    await conn.execute(f"CREATE {role_sql}")
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                           PG_DATABASE):
                    await conn.execute(f"CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}")
            finally:
                await conn.close(timeout=timeout)

        try:
            run_async(run, timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise InfraError(f"PostgreSQL bootstrap failed: {exc}") from exc

    def probe(self, timeout: float) -> Probe:
        """``SELECT 1`` over TCP as the app's role with its password, i.e. through the same door
        as POSTGRES_URL. Also says whether the TimescaleDB extension is available."""
        import asyncpg

        async def run() -> Probe:
            conn = await asyncpg.connect(host=HOST, port=self.cfg.postgres_port, user=PG_USER,
                                         password=self.password(), database=PG_DATABASE,
                                         timeout=timeout, ssl=False)
            try:
                started = time.perf_counter()
                one = await conn.fetchval("SELECT 1")
                rtt = (time.perf_counter() - started) * 1000
                if one != 1:
                    raise InfraError(f"PostgreSQL answered SELECT 1 with {one!r}")
                version = str(await conn.fetchval("SHOW server_version"))
                timescale = await conn.fetchval(
                    "SELECT default_version FROM pg_available_extensions "
                    "WHERE name = 'timescaledb'")
            finally:
                await conn.close(timeout=timeout)
            detail = (f"timescaledb {timescale} available" if timescale
                      else "timescaledb not available")
            return Probe(rtt_ms=rtt, version=f"PostgreSQL {version}", detail=detail)

        try:
            return run_async(run, timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise InfraError(f"PostgreSQL at {HOST}:{self.cfg.postgres_port}: "
                             f"{type(exc).__name__}: {exc}") from exc


# --- Redis ---------------------------------------------------------------------------------------


class RedisServer(Server):
    name = "redis"

    def ports(self) -> dict[str, int]:
        return {"redis": self.cfg.redis_port}

    def export(self) -> tuple[str, str]:
        return "REDIS_URL", f"redis://{HOST}:{self.cfg.redis_port}/0"

    def log_files(self) -> list[Path]:
        return [self.dir / "stdout.log", self.dir / "redis.log"]

    def conf(self) -> str:
        return "\n".join([
            "# Written by `auren infra up` on every start; edits are overwritten.",
            f"bind {HOST}",
            f"port {self.cfg.redis_port}",
            "protected-mode yes",
            # auren infra owns the process (pid, signals), so no daemonizing or supervision.
            "daemonize no",
            "supervised no",
            f"pidfile {self.dir / 'redis.pid'}",
            f"logfile {self.dir / 'redis.log'}",
            f"dir {self.dir}",
            # A cache: PostgreSQL holds the truth, so no snapshots and no append-only file.
            'save ""',
            "appendonly no",
            "maxmemory 256mb",
            "maxmemory-policy allkeys-lru",
            "",
        ])

    def prepare(self) -> tuple[SpawnSpec, str]:
        binary = shutil.which("redis-server")
        if binary is None:
            apt_install(["redis-server"], "Redis is not installed")
            binary = shutil.which("redis-server") or "redis-server"
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(self.conf())
        version = run_bounded([binary, "--version"], timeout=30, what="redis-server --version")
        match = re.search(r"v=(\S+)", version)
        return SpawnSpec(argv=[binary, str(conf)], cwd=self.dir, log=self.dir / "stdout.log"), (
            f"Redis {match.group(1)}" if match else version.strip())

    def probe(self, timeout: float) -> Probe:
        import redis

        client = redis.Redis(host=HOST, port=self.cfg.redis_port, db=0, socket_timeout=timeout,
                             socket_connect_timeout=timeout)
        try:
            client.client_setname("auren-infra")  # connects, so PING times the server only
            started = time.perf_counter()
            pong = client.ping()
            rtt = (time.perf_counter() - started) * 1000
            info = client.info("server")
        except redis.RedisError as exc:
            raise InfraError(f"Redis at {HOST}:{self.cfg.redis_port}: {exc}") from exc
        finally:
            client.close()
        if pong is not True:
            raise InfraError(f"Redis answered PING with {pong!r}")
        version = info.get("redis_version", "?") if isinstance(info, dict) else "?"
        return Probe(rtt_ms=rtt, version=f"Redis {version}")


SERVER_TYPES: dict[str, type[Server]] = {
    cls.name: cls for cls in (KafkaServer, PostgresServer, RedisServer)
}
