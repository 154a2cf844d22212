"""A person's export: everything AUREN holds about them, streamed (``GET
/api/v1/users/{id}/export`` and ``auren export``), never built in memory.

**NDJSON, schema ``auren-export`` version 1** (``application/x-ndjson``): one JSON object per
line, each with a ``record`` field saying what it is, in this order:

1. ``header``: ``schema``, ``version``, ``user_id``, ``generated_at``, ``sections`` (the
   record kinds that follow, in order) and ``coverage_days``;
2. ``user``: the person (``created_at`` null when they were never created through the API but
   data arrived for their id);
3. ``consent``: every consent given, in force or withdrawn (purpose, scopes, the text version
   shown, when given and withdrawn);
4. ``connection``: every linked account, also disconnected ones, without tokens or anything
   secret (provider, provider user id, status, scopes, connected, last fetch, success, error);
5. ``coverage``: per source, the days with data of the last ``coverage_days`` per metric;
6. ``conversation``: NEUROS's conversations with their messages (and each answer's evidence);
7. ``event``: every event, ordered by ``start``, with its provenance (``push``, ``fetch``,
   ``backfill``, ``reprocess``) and ``fetched_at``;
8. ``end``: ``counts`` per record kind. A stream without it was cut off: it is incomplete.

A new field may appear in a record within a version; a field removed or changed in meaning is
a new version.

**CSV** (``text/csv``): the events alone, one per row, the columns of :data:`CSV_COLUMNS`.

NEUROS's conversations live in NEUROS's store (the same SQLite file embedded, the same
PostgreSQL database in the full stack); the export opens that store for its own length
through the composition root (:func:`auren.services.dataplane.conversation_store`) and reads
it by the person's id, as NEUROS itself does.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auren.adapters.base import EventQuery, EventStore
from auren.connections.base import ConnectionStore
from auren.connections.coverage import coverage, window_start
from auren.events import CanonicalEvent, iso
from auren.neuros.memory import ConversationStore
from auren.privacy.base import AUDIT, EXPORT, AuditQuery, AuditRecord, ConsentStore
from auren.services.dataplane import DataPlane, build_dataplane, conversation_store
from auren.settings import Settings

SCHEMA = "auren-export"
VERSION = 1
SECTIONS = ("user", "consent", "connection", "coverage", "conversation", "event", "end")
COVERAGE_DAYS = 365
CSV_COLUMNS = ("event_id", "user_id", "provider", "provider_user_id", "metric", "value", "unit",
               "start", "end", "source_record_id", "received_at", "provenance", "fetched_at")
NDJSON = "application/x-ndjson"
CSV = "text/csv; charset=utf-8"
FORMATS = ("ndjson", "csv")
# Events read per page (and bytes written per chunk, roughly: one page).
_PAGE = 1000
# The most conversations one person's export reads (NEUROS keeps far fewer).
_MAX_CONVERSATIONS = 100_000


@dataclass
class ExportSources:
    store: EventStore
    connections: ConnectionStore
    consents: ConsentStore
    # NEUROS's memory, opened for the length of one export (None: not exported).
    conversations: Callable[[], ConversationStore] | None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def _lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


async def events_of(store: EventStore, user_id: str) -> AsyncIterator[list[CanonicalEvent]]:
    """The person's events, page by page, in ``start`` order (keyset paging)."""
    after: tuple[datetime, str] | None = None
    while True:
        page = await store.query_events(EventQuery(user_id=user_id, limit=_PAGE, after=after))
        if page:
            yield page
        if len(page) < _PAGE:
            return
        after = (page[-1].start, page[-1].event_id)


async def ndjson(sources: ExportSources, user_id: str) -> AsyncIterator[bytes]:
    """The NDJSON export, chunk by chunk."""
    counts: Counter[str] = Counter()
    now = sources.clock()

    def tagged(kind: str, items: Iterable[dict[str, Any]]) -> bytes:
        found = [{"record": kind, **item} for item in items]
        counts[kind] += len(found)
        return _lines(found)

    yield _lines([{"record": "header", "schema": SCHEMA, "version": VERSION,
                   "user_id": user_id, "generated_at": iso(now), "sections": list(SECTIONS),
                   "coverage_days": COVERAGE_DAYS}])
    user = await sources.connections.get_user(user_id)
    yield tagged("user", [{"user_id": user_id,
                           "created_at": iso(user.created_at) if user else None}])
    yield tagged("consent", [c.as_dict() for c in await sources.consents.consents_of(user_id)])
    connections = await sources.connections.connections_of(user_id)
    yield tagged("connection", [c.as_dict() for c in connections])
    found = await sources.store.coverage(user_id, window_start(now.date(), COVERAGE_DAYS))
    yield tagged("coverage", [s.as_dict() for s in coverage(connections, found, now.date())])
    if sources.conversations is not None:
        async for chunk in _conversations(sources.conversations(), user_id):
            yield tagged("conversation", [chunk])
    async for page in events_of(sources.store, user_id):
        yield tagged("event", [e.as_dict() for e in page])
    yield _lines([{"record": "end", "counts": {k: counts[k] for k in SECTIONS[:-1]}}])


async def _conversations(memory: ConversationStore, user_id: str
                         ) -> AsyncIterator[dict[str, Any]]:
    await memory.open()
    try:
        for summary in await memory.conversations(user_id, _MAX_CONVERSATIONS):
            messages = await memory.messages(user_id, summary.conversation_id,
                                             summary.message_count + 1)
            yield {**summary.as_dict(), "messages": [m.as_dict() for m in messages]}
    finally:
        await memory.close()


async def events_csv(sources: ExportSources, user_id: str) -> AsyncIterator[bytes]:
    """The events as CSV, a header row first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode()
    async for page in events_of(sources.store, user_id):
        buffer.seek(0)
        buffer.truncate()
        for event in page:
            row = event.as_dict()
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        yield buffer.getvalue().encode()


def stream(sources: ExportSources, user_id: str, form: str) -> AsyncIterator[bytes]:
    return events_csv(sources, user_id) if form == "csv" else ndjson(sources, user_id)


def media_type(form: str) -> str:
    return CSV if form == "csv" else NDJSON


# --- the command line's side: the stores opened from settings -------------------------------


@contextlib.asynccontextmanager
async def privacy_plane(settings: Settings) -> AsyncIterator[DataPlane]:
    """The stores ``auren export`` and ``auren audit`` read (events, connections without
    their tokens, consents, the audit log), opened and closed."""
    plane = build_dataplane(settings, service="privacy")
    await plane.open()
    try:
        yield plane
    finally:
        await plane.close(settings.shutdown_timeout_s)


def _cli_record(actor: str, action: str, user_id: str | None, route: str) -> AuditRecord:
    return AuditRecord(at=datetime.now(UTC), actor=actor, action=action, user_id=user_id,
                       route=route, client="local", outcome=200)


async def export_to(settings: Settings, user_id: str, form: str,
                    write: Callable[[bytes], object], *, actor: str) -> None:
    """Stream the export into ``write``, after recording it in the audit log."""
    async with privacy_plane(settings) as plane:
        assert plane.connections is not None and plane.consents is not None  # noqa: S101
        assert plane.audit is not None  # noqa: S101 - the privacy plane has them all
        sources = ExportSources(plane.store, plane.connections, plane.consents,
                                lambda: conversation_store(settings,
                                                           application_name="auren-export"))
        await plane.audit.append(_cli_record(actor, EXPORT, user_id, f"cli export {form}"))
        async for chunk in stream(sources, user_id, form):
            write(chunk)


async def audit_records(settings: Settings, query: AuditQuery, *,
                        actor: str) -> list[AuditRecord]:
    """The audit log's records for ``query``; reading it is recorded too."""
    async with privacy_plane(settings) as plane:
        assert plane.audit is not None  # noqa: S101 - the privacy plane has it
        await plane.audit.append(_cli_record(actor, AUDIT, query.user_id, "cli audit"))
        return await plane.audit.query(query)
