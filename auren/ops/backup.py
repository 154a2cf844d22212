"""Backing up the store and restoring it (``auren db backup FILE`` / ``auren db restore FILE``).

The deployment's settings say which store: PostgreSQL when ``POSTGRES_URL`` is set, else the
SQLite file in ``AUREN_DATA_DIR``. Either way a backup is one consistent snapshot that holds
every event acknowledged before the backup began (a webhook is answered 2xx only after its
commit, and the snapshot is taken after that), and a manifest ``FILE.json`` written once the
backup is complete: what it holds (events and fetch jobs, counted in the same snapshot), its
size and SHA-256 (checked before a restore), when it began and ended, and, with Kafka, the sink
group's committed offsets.

- **SQLite**: the online backup API copies the database in one step, i.e. in one read
  transaction (WAL readers never block the bridge's writer; a stepwise copy would restart
  whenever the bridge commits), into ``FILE.partial``, which is checked
  (``PRAGMA quick_check``), made self-contained (rollback journal), fsynced and renamed.
  Restoring copies it into ``AUREN_DATA_DIR``'s file with the same API, after making sure no
  process has the store open (switching it out of WAL needs every other connection gone).
- **PostgreSQL**: ``pg_dump --format=custom`` of a snapshot exported by a repeatable-read
  transaction that also counts what the snapshot holds; ``pg_restore --single-transaction``
  into the ``POSTGRES_URL`` database, after which the counts must equal the manifest's. The
  password goes to the tools through ``PGPASSWORD``, never on a command line; libpq's TLS
  parameters in the URL (``sslmode``, ``sslrootcert``) apply to them as to the services.
- **Kafka** (full stack): the sink commits offsets only after PostgreSQL committed (K7), so
  offsets read *before* the dump began point at records the dump holds or later ones.
  Restoring sets the sink group back to them: the sinks, started again, replay from Kafka
  everything acknowledged since, and ``ON CONFLICT DO NOTHING`` absorbs what the dump already
  had. A partition whose saved offset Kafka no longer retains is reported as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from auren import __version__
from auren.settings import Settings

EVENTS_TABLE = "biometric_events"
JOBS_TABLE = "fetch_jobs"
_SQLITE_TABLES = frozenset({EVENTS_TABLE, JOBS_TABLE, "deliveries"})
_CHUNK = 1 << 20


class BackupRefused(Exception):
    """What was asked cannot be done safely (a usage error): a non-empty or busy target
    without ``--force``, a file that is not a backup of this store, a checksum mismatch."""


class BackupFailed(Exception):
    """The environment broke: a tool is missing, a server does not answer, a tool failed."""


@dataclass
class Manifest:
    store: str  # "sqlite" or "postgresql"
    file: str
    bytes: int
    sha256: str
    started_at: str  # every event acknowledged before this is in the backup
    finished_at: str
    events: int
    fetch_jobs: int
    version: str = __version__
    # Full stack: the sink group's committed offsets when the backup began.
    kafka: dict[str, Any] | None = None

    def write(self, backup: Path) -> Path:
        path = manifest_path(backup)
        _write_atomically(path, (json.dumps(asdict(self), indent=2, sort_keys=True)
                                 + "\n").encode())
        return path

    @classmethod
    def read(cls, backup: Path) -> Manifest | None:
        path = manifest_path(backup)
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise BackupRefused(f"{path} is not a backup manifest: {exc}") from None


@dataclass
class Restored:
    store: str
    target: str
    events: int
    fetch_jobs: int
    notes: list[str] = field(default_factory=list)


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + ".json")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(partial: Path, final: Path) -> None:
    """fsync ``partial`` and rename it to ``final``: a backup either exists whole or not."""
    with partial.open("rb") as fh:
        os.fsync(fh.fileno())
    partial.replace(final)
    _fsync_dir(final.parent)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    _finish(partial, path)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _check_manifest(backup: Path, store: str) -> Manifest | None:
    if not backup.is_file():
        raise BackupRefused(f"{backup} does not exist")
    manifest = Manifest.read(backup)
    if manifest is None:
        return None
    if manifest.store != store:
        raise BackupRefused(f"{backup} is a {manifest.store} backup; this deployment's store "
                            f"is {store}")
    if manifest.bytes != backup.stat().st_size or manifest.sha256 != _digest(backup):
        raise BackupRefused(f"{backup} does not match its manifest (size or SHA-256): it is "
                            "damaged or not the file that was backed up")
    return manifest


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    events = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()[0]  # noqa: S608
    jobs = conn.execute(f"SELECT count(*) FROM {JOBS_TABLE}").fetchone()[0]  # noqa: S608
    return int(events), int(jobs)


def _check_sqlite(conn: sqlite3.Connection, what: Path) -> None:
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"{what} is not an AUREN SQLite store: {exc}") from None
    if _SQLITE_TABLES - tables:
        raise BackupRefused(f"{what} is not an AUREN SQLite store (tables "
                            f"{', '.join(sorted(_SQLITE_TABLES - tables))} are missing)")
    if check != "ok":
        raise BackupRefused(f"{what} fails SQLite's integrity check: {check}")


def backup_sqlite(source: Path, backup: Path, timeout_s: float = 600.0) -> Manifest:
    """The store at ``source`` into ``backup`` (see the module's docstring)."""
    if not source.is_file():
        raise BackupRefused(f"no SQLite store at {source} (AUREN_DATA_DIR)")
    backup.parent.mkdir(parents=True, exist_ok=True)
    partial = backup.with_name(backup.name + ".partial")
    partial.unlink(missing_ok=True)
    started = _now()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True,
                                                timeout=timeout_s)) as src, \
                contextlib.closing(sqlite3.connect(partial)) as dst:
            _check_sqlite(src, source)
            # One step (pages=-1): a single read transaction, a consistent snapshot.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            _check_sqlite(dst, partial)
            events, jobs = _sqlite_counts(dst)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"SQLite backup of {source}: {exc}") from exc
    _finish(partial, backup)
    manifest = Manifest("sqlite", backup.name, backup.stat().st_size, _digest(backup), started,
                        _now(), events, jobs)
    manifest.write(backup)
    return manifest


def restore_sqlite(backup: Path, target: Path, *, force: bool = False) -> Restored:
    """``backup`` into the store file ``target``; refuses a store in use, and a non-empty one
    unless ``force``."""
    manifest = _check_manifest(backup, "sqlite")
    with contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as src:
        _check_sqlite(src, backup)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(target, timeout=0)) as dst:
            try:
                # Leaving WAL mode needs every other connection closed: nobody may be using
                # the store while it is replaced.
                mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            except sqlite3.OperationalError:
                mode = "busy"
            if mode != "delete":
                raise BackupRefused(f"{target} is in use: stop the services that use "
                                    "AUREN_DATA_DIR first")
            tables = {row[0] for row in dst.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if EVENTS_TABLE in tables and not force and any(_sqlite_counts(dst)):
                raise BackupRefused(f"{target} already holds events: --force replaces them "
                                    "with the backup's")
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=WAL")
            _check_sqlite(dst, target)
            events, jobs = _sqlite_counts(dst)
    if manifest is not None and (events, jobs) != (manifest.events, manifest.fetch_jobs):
        raise BackupFailed(f"restored {events} events and {jobs} fetch jobs; the manifest "
                           f"says {manifest.events} and {manifest.fetch_jobs}")
    notes = [] if manifest else [f"no manifest ({manifest_path(backup).name}): the file "
                                 "was checked by SQLite only"]
    return Restored("sqlite", str(target), events, jobs, notes)


# --- PostgreSQL ---------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` of the newest PostgreSQL installed (a dump must be made by a
    version at least the server's), else the one on ``PATH``."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob(f"*/bin/{name}") if p.parent.parent.name.isdigit()),
                      key=lambda p: int(p.parent.parent.name))
    if versions:
        return str(versions[-1])
    found = shutil.which(name)
    if found is None:
        raise BackupFailed(f"{name} is not installed (Debian: apt-get install "
                           "postgresql-client)")
    return found


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (for a command line) and the environment that carries
    the password (``PGPASSWORD``)."""
    parts = urlsplit(url)
    env: dict[str, str] = {}
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), env


def _run_tool(argv: list[str], env: Mapping[str, str], timeout_s: float, what: str) -> str:
    full_env = {**os.environ, **env}
    try:
        done = subprocess.run(argv, env=full_env, capture_output=True, text=True,  # noqa: S603
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackupFailed(f"{what} did not finish within {timeout_s:g} s") from exc
    if done.returncode != 0:
        raise BackupFailed(f"{what} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    return done.stdout


async def _pg_connect(url: str, timeout_s: float) -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(url, timeout=min(timeout_s, 30.0))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BackupFailed(f"PostgreSQL: {type(exc).__name__}: {exc}") from None


async def _pg_counts(conn: Any) -> tuple[int, int]:
    events = await conn.fetchval(f"SELECT count(*) FROM {EVENTS_TABLE}")  # noqa: S608
    jobs = await conn.fetchval(f"SELECT count(*) FROM {JOBS_TABLE}")  # noqa: S608
    return int(events), int(jobs)


async def _pg_dump(url: str, partial: Path, timeout_s: float) -> tuple[int, int]:
    """Dump a snapshot that a repeatable-read transaction exported and counted."""
    dsn, env = libpq_target(url)
    conn = await _pg_connect(url, timeout_s)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            counts = await _pg_counts(conn)
            await asyncio.to_thread(
                _run_tool, [pg_tool("pg_dump"), "--format=custom", "--compress=6",
                            f"--snapshot={snapshot}", f"--file={partial}", f"--dbname={dsn}"],
                env, timeout_s, "pg_dump")
    finally:
        await conn.close()
    return counts


def backup_postgres(settings: Settings, backup: Path, timeout_s: float = 3600.0) -> Manifest:
    assert settings.postgres_url is not None  # noqa: S101 - the caller chose this store
    url = settings.postgres_url.get_secret_value()
    backup.parent.mkdir(parents=True, exist_ok=True)
    partial = backup.with_name(backup.name + ".partial")
    partial.unlink(missing_ok=True)
    started = _now()
    # Before the snapshot: these offsets point at records the dump holds, or later ones.
    kafka = committed_offsets(settings) if settings.kafka_bootstrap_servers else None
    try:
        events, jobs = asyncio.run(_pg_dump(url, partial, timeout_s))
        _run_tool([pg_tool("pg_restore"), "--list", str(partial)], {}, 300, "pg_restore --list")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _finish(partial, backup)
    manifest = Manifest("postgresql", backup.name, backup.stat().st_size, _digest(backup),
                        started, _now(), events, jobs, kafka=kafka)
    manifest.write(backup)
    return manifest


async def _pg_restore(url: str, backup: Path, *, force: bool, timescale: bool,
                      timeout_s: float) -> tuple[int, int]:
    dsn, env = libpq_target(url)
    conn = await _pg_connect(url, timeout_s)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", EVENTS_TABLE)
        if exists and not force and any(await _pg_counts(conn)):
            raise BackupRefused("the POSTGRES_URL database already holds events: --force "
                                "replaces them with the backup's")
        if timescale:
            await conn.execute("SELECT timescaledb_pre_restore()")
        argv = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                f"--dbname={dsn}"]
        if exists:
            argv += ["--clean", "--if-exists"]
        if not timescale:  # TimescaleDB's own restore mode cannot run in one transaction
            argv.append("--single-transaction")
        await asyncio.to_thread(_run_tool, [*argv, str(backup)], env, timeout_s, "pg_restore")
        if timescale:
            await conn.execute("SELECT timescaledb_post_restore()")
        return await _pg_counts(conn)
    finally:
        await conn.close()


def restore_postgres(settings: Settings, backup: Path, *, force: bool = False,
                     reset_offsets: bool = True, timeout_s: float = 3600.0) -> Restored:
    assert settings.postgres_url is not None  # noqa: S101 - the caller chose this store
    manifest = _check_manifest(backup, "postgresql")
    listing = _run_tool([pg_tool("pg_restore"), "--list", str(backup)], {}, 300,
                        "pg_restore --list")
    timescale = " EXTENSION - timescaledb" in listing
    url = settings.postgres_url.get_secret_value()
    events, jobs = asyncio.run(_pg_restore(url, backup, force=force, timescale=timescale,
                                           timeout_s=timeout_s))
    if manifest is not None and (events, jobs) != (manifest.events, manifest.fetch_jobs):
        raise BackupFailed(f"restored {events} events and {jobs} fetch jobs; the manifest "
                           f"says {manifest.events} and {manifest.fetch_jobs}")
    restored = Restored("postgresql", _redacted(url), events, jobs)
    if manifest is None:
        restored.notes.append(f"no manifest ({manifest_path(backup).name}): counts not "
                              "compared, Kafka offsets not reset")
    elif manifest.kafka is None:
        if settings.kafka_bootstrap_servers:
            restored.notes.append("the backup holds no Kafka offsets (taken without Kafka): "
                                  "the sink group was not moved")
    elif not settings.kafka_bootstrap_servers:
        restored.notes.append("KAFKA_BOOTSTRAP_SERVERS is not set: the sink group was not "
                              "moved back to the backup's offsets")
    elif reset_offsets:
        restored.notes += reset_sink_offsets(settings, manifest.kafka)
    else:
        restored.notes.append("--no-kafka-offsets: the sink group was not moved; what Kafka "
                              "acknowledged after the backup is not replayed")
    return restored


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, query=""))


# --- Kafka: the sink group's offsets ------------------------------------------------------------


def _kafka_config(settings: Settings) -> dict[str, Any]:
    from auren.adapters.kafka import client_security

    return {"bootstrap.servers": settings.kafka_bootstrap_servers, "socket.timeout.ms": 10_000,
            "socket.connection.setup.timeout.ms": 5_000, "log_level": 0,
            **client_security(settings)}


def _topics(settings: Settings) -> list[str]:
    return [settings.kafka_events_topic, settings.kafka_notifications_topic]


def committed_offsets(settings: Settings, timeout_s: float = 30.0) -> dict[str, Any]:
    """``{"group": ..., "offsets": {topic: {partition: offset}}}``: the sink group's committed
    offsets (-1: nothing committed yet on that partition)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(_kafka_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
        partitions = [TopicPartition(topic, p) for topic in _topics(settings)
                      if topic in metadata.topics
                      for p in sorted(metadata.topics[topic].partitions)]
        offsets: dict[str, dict[str, int]] = {topic: {} for topic in _topics(settings)}
        if partitions:
            request = ConsumerGroupTopicPartitions(settings.kafka_sink_group, partitions)
            (future,) = admin.list_consumer_group_offsets([request],
                                                          request_timeout=timeout_s).values()
            for tp in future.result(timeout=timeout_s).topic_partitions:
                offsets[tp.topic][str(tp.partition)] = max(int(tp.offset), -1)
    except KafkaException as exc:
        raise BackupFailed(f"Kafka: the sink group's offsets: {exc}") from None
    return {"group": settings.kafka_sink_group, "offsets": offsets}


def reset_sink_offsets(settings: Settings, saved: Mapping[str, Any],
                       timeout_s: float = 30.0) -> list[str]:
    """Set the sink group's offsets back to ``saved`` (a partition without one: the earliest
    offset Kafka keeps); returns notes, a gap per partition whose saved offset Kafka deleted.
    The group must have no member: every sink stopped."""
    from confluent_kafka import (
        Consumer,
        ConsumerGroupTopicPartitions,
        KafkaException,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient

    group = str(saved["group"])
    config = _kafka_config(settings)
    notes: list[str] = []
    targets: list[TopicPartition] = []
    watermarks = Consumer({**config, "group.id": f"{group}-restore-probe",
                           "enable.auto.commit": False})
    try:
        for topic, partitions in sorted(saved["offsets"].items()):
            for partition, offset in sorted(partitions.items(), key=lambda kv: int(kv[0])):
                low, _high = watermarks.get_watermark_offsets(
                    TopicPartition(topic, int(partition)), timeout=timeout_s)
                if 0 <= offset < low:
                    notes.append(f"GAP: {topic}[{partition}] offsets {offset}..{low - 1} are no "
                                 "longer in Kafka (retention): those records cannot be replayed")
                targets.append(TopicPartition(topic, int(partition), max(offset, low)))
    except KafkaException as exc:
        raise BackupFailed(f"Kafka: {exc}") from None
    finally:
        watermarks.close()
    if not targets:
        return notes
    admin = AdminClient(config)
    try:
        (future,) = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, targets)], request_timeout=timeout_s).values()
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        raise BackupFailed(f"Kafka refused to move the group {group} back ({exc}): stop every "
                           "`auren sink` of the group first, then run the restore again") \
            from None
    notes.append(f"sink group {group}: {len(targets)} partition(s) set back to the backup's "
                 "offsets; start the sinks to replay what Kafka acknowledged since")
    return notes


# --- the commands' entry points -----------------------------------------------------------------


def backup(settings: Settings, file: Path, timeout_s: float = 3600.0) -> Manifest:
    if settings.postgres_url is not None:
        return backup_postgres(settings, file, timeout_s)
    return backup_sqlite(settings.sqlite_path, file, timeout_s)


def restore(settings: Settings, file: Path, *, force: bool = False, reset_offsets: bool = True,
            timeout_s: float = 3600.0) -> Restored:
    if settings.postgres_url is not None:
        return restore_postgres(settings, file, force=force, reset_offsets=reset_offsets,
                                timeout_s=timeout_s)
    return restore_sqlite(file, settings.sqlite_path, force=force)
