"""Erasure in the services: the plan of steps for this deployment, the routes
(``DELETE /api/v1/users/{id}``, ``GET /api/v1/erasures/{id}``) and the parts the bridge and
``auren erase`` run it with.

The plan, in order (only the stores this deployment has):

==========================  ==================================================================
step (``store``)            what it does
==========================  ==================================================================
``erasure ledger``          the person's pseudonyms recorded; every process screens them out
                            of every write path from then on (waits two ledger refreshes)
``spool``                   full stack: the spool files rewritten without the person's rows
``kafka topics``            full stack: waits until the sink group has passed the topics' end
                            as of now; older records are screened by the ledger, and the topics'
                            retention (``KAFKA_RETENTION_HOURS``) bounds how long their bytes
                            stay in the log
``grant:<provider>``        each connected provider's grant revoked or deregistered there,
                            then the tokens forgotten
``events``                  SQLite or PostgreSQL (then VACUUM)
``fetch jobs``              the person's and their accounts' jobs
``connections and tokens``  the person, their connections and connect links
``conversations``           NEUROS's conversations and messages (its memory)
``redis``                   full stack: every key naming the person or one of their accounts
``database files``          SQLite: a truncating checkpoint (the zeroed pages in place, the
                            WAL cut to nothing)
==========================  ==================================================================

A store added later joins with one ``StoreStep`` in :func:`plan_steps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from starlette.responses import Response

from auren.adapters.kafka import client_security, group_behind, topic_ends
from auren.adapters.postgres import PostgresPool, PostgresStore
from auren.adapters.sqlite import SQLiteStore
from auren.connections.crypto import KEY_FILE, TokenCipher, load_or_create, parse_key
from auren.connections.service import ConnectionsService
from auren.erasure.engine import Eraser, Policy
from auren.erasure.ledger import Ledger
from auren.erasure.steps import Detail, LedgerStep, SpoolStep, Step, StoreStep, Subject
from auren.erasure.store import ErasureStore, PostgresErasures, SQLiteErasures
from auren.errors import InvalidPayload, StoreUnavailable
from auren.events import is_identifier
from auren.ingest.spool import Spool, free_slots
from auren.neuros.memory import ConversationStore
from auren.privacy import base as audit
from auren.services.auditing import audited, authorize, name_subject
from auren.services.auth import ReadAuth
from auren.services.dataplane import DataPlane
from auren.services.kernel.problem import problem_responses
from auren.services.kernel.responses import json_response
from auren.settings import Settings, secret_values

UserPath = Annotated[str, Path(min_length=1, max_length=256)]
ErasurePath = Annotated[str, Path(min_length=1, max_length=64)]


def erasure_store(settings: Settings, application_name: str) -> ErasureStore:
    if settings.postgres_url is not None:
        return PostgresErasures(PostgresPool(
            settings.postgres_url.get_secret_value(), timeout_s=settings.store_timeout_s,
            pool_size=2, application_name=application_name))
    return SQLiteErasures(settings.sqlite_path, settings.store_timeout_s)


def conversation_store(settings: Settings) -> ConversationStore:
    """NEUROS's conversations, as the erasure reaches them (the bridge does not hold them)."""
    if settings.postgres_url is not None:
        from auren.neuros.memory.postgres import PostgresConversations

        return PostgresConversations(PostgresPool(
            settings.postgres_url.get_secret_value(), timeout_s=settings.store_timeout_s,
            pool_size=2, application_name="auren-erasure-conversations"))
    from auren.neuros.memory.sqlite import SQLiteConversations

    return SQLiteConversations(settings.sqlite_path, timeout_s=settings.store_timeout_s,
                               wal_limit_bytes=settings.sqlite_wal_limit_bytes)


@dataclass(frozen=True, slots=True)
class KafkaStep:
    """Records already in the topics cannot be removed from an append-only log: the sink and
    every consumer screen them through the ledger, and this step waits until the sink group
    has committed past the topics' end as it was once the ledger held the person, so no record
    of theirs reaches PostgreSQL after the events step. Replays (a restore, a reset group) are
    screened the same way; retention bounds how long the bytes stay in the log."""

    settings: Settings
    poll_s: float = 0.5
    store: str = "kafka topics"

    async def run(self, subject: Subject) -> Detail:
        s = self.settings
        bootstrap = str(s.kafka_bootstrap_servers)
        security = client_security(s)
        topics = [s.kafka_events_topic, s.kafka_notifications_topic]
        ends = await asyncio.to_thread(topic_ends, bootstrap, topics, timeout_s=10.0,
                                       security=security)
        while True:
            behind = await asyncio.to_thread(group_behind, bootstrap, s.kafka_sink_group, ends,
                                             timeout_s=10.0, security=security)
            if not behind:
                break
            await asyncio.sleep(self.poll_s)
        return {"sink_group": s.kafka_sink_group, "passed_offsets": sum(ends.values()),
                "screened_by": "erasure ledger",
                "retention_hours": s.kafka_retention_hours}


@dataclass
class SpoolAccess:
    """This process's spool and, for one step, the slots no live process holds."""

    own: Spool | None
    base: pathlib.Path
    max_bytes: int
    _borrowed: list[Spool] = field(default_factory=list)

    async def spools(self) -> Sequence[Spool]:
        for directory, fd in free_slots(self.base):
            spool = Spool(directory, max_bytes=self.max_bytes, lock_fd=fd)
            await spool.open()
            self._borrowed.append(spool)
        return [*([self.own] if self.own is not None else []), *self._borrowed]

    async def release(self) -> None:
        borrowed, self._borrowed = self._borrowed, []
        for spool in borrowed:
            await spool.close()


def plan_steps(settings: Settings, plane: DataPlane, service: ConnectionsService,
               erasures: ErasureStore, ledger: Ledger, conversations: ConversationStore,
               clock: Callable[[], datetime]) -> Callable[[Subject], list[Step]]:
    """The ordered steps of an erasure in this deployment (see the module's table)."""
    store = plane.store
    if not isinstance(store, SQLiteStore | PostgresStore):
        raise ValueError("erasure needs the SQLite or PostgreSQL event store")
    connections = plane.connections
    if connections is None:
        raise ValueError("erasure needs the connections")
    erasable = store

    async def database_files(subject: Subject) -> Detail:
        assert isinstance(erasable, SQLiteStore)  # noqa: S101 - planned for SQLite only
        if not await erasable.scrub_files():
            raise StoreUnavailable("readers held off the truncating checkpoint; retrying")
        return {"wal_bytes": erasable.wal.wal_bytes(), "secure_delete": True}

    def grant(provider: str) -> StoreStep:
        return StoreStep(f"grant:{provider}",
                         lambda s: service.revoke_grants(s.user_id, provider))

    def plan(subject: Subject) -> list[Step]:
        steps: list[Step] = [LedgerStep(erasures, ledger, clock,
                                        settle_s=2 * settings.erasure_poll_s)]
        if plane.bus_log is not None:
            access = SpoolAccess(plane.bus_log.spool, settings.auren_data_dir / "spool",
                                 settings.spool_max_bytes)
            steps += [SpoolStep(ledger, access.spools, access.release), KafkaStep(settings)]
        steps += [grant(provider) for provider in sorted({p for p, _ in subject.accounts})]
        steps += [
            StoreStep("events", lambda s: erasable.erase_events(s.user_id)),
            StoreStep("fetch jobs", lambda s: erasable.erase_jobs(s.user_id, s.accounts)),
            StoreStep("connections and tokens", lambda s: connections.erase_user(s.user_id)),
            StoreStep("conversations", lambda s: conversations.erase_user(s.user_id)),
        ]
        archive = plane.archive
        if archive is not None:
            # ARCHIVE_RAW_PAYLOADS: every sealed payload that names the person.
            steps.append(StoreStep("raw payloads", lambda s: archive.erase_archive(s.user_id)))
        consents, audit = plane.consents, plane.audit
        if consents is not None:
            steps.append(StoreStep("consents", lambda s: consents.erase_user(s.user_id)))
        if audit is not None:
            # The accounting of disclosures outlives the person: their id in it becomes a
            # keyed pseudonym (stable, so the records of one person stay together).
            steps.append(StoreStep("audit log", lambda s: audit.erase_user(
                s.user_id, audit_pseudonym(plane.cipher, s.user_id))))
        redis = plane.redis
        if redis is not None:
            steps.append(StoreStep("redis", lambda s: redis.erase_matching(s.identifiers)))
        if isinstance(erasable, SQLiteStore):
            steps.append(StoreStep("database files", database_files))
        return steps

    return plan


def audit_pseudonym(cipher: TokenCipher | None, user_id: str) -> str:
    """What replaces an erased person's id in the audit log: a digest of it under the
    deployment's key, so it cannot be turned back into the id without the key."""
    if cipher is None:
        raise ValueError("erasure needs the token key")
    return "erased:" + cipher.pseudonyms(f"audit:{user_id}")[0][:32]


def erased_as(cipher: TokenCipher | None, ledger: Ledger) -> Callable[[str], str | None]:
    """For the audit writer: an erased person's pseudonym, None for anyone else. Requests that
    name the person after their erasure began (a receipt, a late read answered 404) are
    recorded under the pseudonym the erasure gives the records made before."""
    def pseudonym(user_id: str) -> str | None:
        return audit_pseudonym(cipher, user_id) if ledger.user_erased(user_id) else None

    return pseudonym


@dataclass
class ErasureParts:
    eraser: Eraser
    erasures: ErasureStore
    conversations: ConversationStore

    async def open(self) -> None:
        await self.erasures.open()
        try:
            await self.conversations.open()
        except BaseException:
            await self.erasures.close()
            raise
        await self.eraser.refresh_ledger()

    async def close(self) -> None:
        try:
            await self.conversations.close()
        finally:
            await self.erasures.close()


def policy_of(settings: Settings) -> Policy:
    return Policy(max_attempts=settings.erasure_max_attempts,
                  retry_base_s=settings.erasure_retry_base_s, lease_s=settings.erasure_lease_s,
                  poll_s=settings.erasure_poll_s,
                  step_timeout_s=settings.erasure_step_timeout_s)


def new_ledger(cipher: TokenCipher) -> Ledger:
    return Ledger(cipher.pseudonyms)


def ledger_cipher(settings: Settings) -> TokenCipher:
    """The key the ledger's pseudonyms are made with, for a process that holds no tokens (the
    Original Bridge): ``AUREN_ENCRYPTION_KEY``, or, with no PostgreSQL, the data directory's
    own key file (the embedded bridge's).

    Raises:
        ValueError: no key with PostgreSQL, or a key that is not 32 bytes of base64.
    """
    texts = secret_values(settings.auren_encryption_key)
    if not texts:
        if settings.postgres_url is not None:
            raise ValueError("AUREN_ENCRYPTION_KEY is required with POSTGRES_URL: the erasure "
                             "ledger's pseudonyms are made with it")
        texts = (load_or_create(settings.auren_data_dir / KEY_FILE),)
    return TokenCipher([parse_key(text) for text in texts])


def assemble_erasure(settings: Settings, plane: DataPlane, service: ConnectionsService,
                     ledger: Ledger, *, name: str = "auren-bridge") -> ErasureParts:
    """The eraser of this process, over ``plane`` (opened by the caller) and the parts it
    opens itself (the erasure records, NEUROS's conversations)."""
    if plane.cipher is None or plane.connections is None:
        raise ValueError("the data plane has no connections: build it for the bridge")
    erasures = erasure_store(settings, f"{name}-erasure")
    conversations = conversation_store(settings)

    def clock() -> datetime:
        return datetime.now(UTC)

    plan = plan_steps(settings, plane, service, erasures, ledger, conversations, clock)
    connections = plane.connections

    async def accounts(user_id: str) -> list[tuple[str, str]]:
        return [(c.provider, c.provider_user_id)
                for c in await connections.connections_of(user_id)]

    eraser = Eraser(erasures, ledger, plane.cipher, plan, accounts, policy=policy_of(settings),
                    clock=clock)
    return ErasureParts(eraser, erasures, conversations)


def install(app: FastAPI, parts: ErasureParts, auth: ReadAuth) -> None:
    def allow(request: Request, user_id: str) -> None:
        authorize(auth, request, user_id)

    @app.delete("/api/v1/users/{user_id}", tags=["erasure"], status_code=202,
                responses=problem_responses(400, 401, 403, 422, 503),
                openapi_extra=audited(audit.ERASE))
    async def erase_user(request: Request, user_id: UserPath) -> Response:
        """Erase everything AUREN holds of the person (a service key, or their own token):
        202 with the erasure's id at once; the erasure runs in the background, resumes after
        a crash, and ``GET /api/v1/erasures/{erasure_id}`` is its receipt. Asking again
        answers the same erasure (a failed one is resumed)."""
        allow(request, user_id)
        if not is_identifier(user_id):
            raise InvalidPayload("user_id must be 1 to 256 printable characters without "
                                 "leading or trailing spaces")
        erasure, _ = await parts.eraser.start(user_id)
        return json_response({"erasure_id": erasure.erasure_id, "status": erasure.status}, 202)

    @app.get("/api/v1/erasures/{erasure_id}", tags=["erasure"],
             responses=problem_responses(400, 401, 403, 404),
             openapi_extra=audited(audit.READ))
    async def erasure_receipt(request: Request, erasure_id: ErasurePath) -> Response:
        """The receipt: ``status`` (pending, running, complete, failed; complete only when
        every step is) and one step per store with its status and time."""
        receipt = await parts.eraser.receipt(erasure_id)
        name_subject(request, str(receipt["user_id"] or ""))
        allow(request, str(receipt["user_id"] or ""))
        return json_response(receipt)


async def erase_and_wait(settings: Settings, user_id: str, timeout_s: float) -> dict[str, Any]:
    """``auren erase``: start the person's erasure (or find it), run it in this process until
    it is complete or failed (a bridge running beside may take part: the lease decides who
    runs which step), and answer the receipt."""
    from prometheus_client import CollectorRegistry

    from auren.services.dataplane import build_dataplane
    from auren.services.fetcher import assemble

    if not is_identifier(user_id):
        raise InvalidPayload("the user id must be 1 to 256 printable characters without "
                             "leading or trailing spaces")
    plane = build_dataplane(settings, service="bridge")
    if plane.cipher is None:
        raise ValueError("the data plane has no encryption key")
    ledger = new_ledger(plane.cipher)
    await plane.open()
    try:
        fetcher = assemble(settings, plane, CollectorRegistry())
        parts = assemble_erasure(settings, plane, fetcher.service, ledger, name="auren-erase")
        await parts.open()
        stop = asyncio.Event()
        running = asyncio.create_task(parts.eraser.serve(stop))
        try:
            erasure, _ = await parts.eraser.start(user_id)
            return await parts.eraser.wait(erasure.erasure_id, timeout_s)
        finally:
            stop.set()
            running.cancel()  # a step cut short is resumed by whoever runs erasures next
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await parts.close()
            await fetcher.close()
    finally:
        await plane.close(settings.shutdown_timeout_s)
