"""The fetcher: claims due fetch jobs and turns each into events on the durable path.

A job is resolved to its connection by the provider's user id it names (a notification knows
no AUREN user; the connection does), run through the provider's API (``apis``), and its
events are written exactly as pushed data is: through the ``DurableLog`` (the store embedded;
Kafka and its spool in the full stack), in deliveries whose keys are digests of the job and
the events' ids, so a job run twice stores nothing twice. Then the job is finished:

=========================================  =================================================
what happened                              the job, and the connection
=========================================  =================================================
events written (or nothing to fetch)       ``done``; last fetch and success recorded
a rate limit (AUREN's count or a 429)      ``pending`` again when the window opens (a wait,
                                           not a failed attempt; bounded too)
a transient failure (5xx, timeout, a       ``pending`` again after exponential backoff with
broken answer, the store unavailable)      jitter; ``dead`` after ``FETCH_MAX_ATTEMPTS``
refused for good (403, 400, a bad URL)     ``dead``, with the reason
the grant refused (401 after a refresh,    ``blocked``; the connection becomes
a refresh token refused)                   ``reauthorization_required`` (its other jobs are
                                           blocked as they come; a reconnect releases them)
the provider's revocation notice           ``done``; the connection
                                           ``reauthorization_required``
no connection for the provider user        ``dead`` ("no connection")
the connection was removed                 ``cancelled``
the person withdrew consent for it         ``cancelled`` ("consent withdrawn"; counted)
=========================================  =================================================

Every claim counts as an attempt and holds a lease that is renewed while the job runs: a
fetcher killed mid-job leaves it to be claimed again when the lease runs out, and a job that
kills its fetcher every time still ends dead. Tokens are refreshed ahead of expiry and after a
401, single-flight per connection across processes (``ConnectionStore.refresh_tokens``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from auren.adapters.base import DurableLog, EventStore
from auren.connections import oauth
from auren.connections.apis import JobRun, ProviderApi
from auren.connections.apis.terra import TerraApi
from auren.connections.base import (
    ACTIVE,
    BLOCKED,
    CANCELLED,
    DEAD,
    DISCONNECTED,
    DONE,
    PENDING,
    REAUTHORIZATION_REQUIRED,
    Connection,
    ConnectionStore,
    JobQueue,
    JobRecord,
    Tokens,
)
from auren.connections.crypto import TokenUnreadable
from auren.connections.history import queue_history
from auren.connections.http import ProviderHttp, jitter
from auren.connections.metrics import FetcherMetrics, QueueCollector
from auren.errors import (
    AurenError,
    GrantInvalid,
    StoreUnavailable,
    UpstreamFailed,
    UpstreamRateLimited,
    UpstreamRejected,
)
from auren.events import CanonicalEvent, Delivery, FetchJob
from auren.settings import Settings

log = logging.getLogger("auren.fetcher")

# Events per delivery written: one Kafka record per delivery must stay well under a megabyte.
EVENTS_PER_DELIVERY = 1000
# Rate-limit waits one job may take, in multiples of FETCH_MAX_ATTEMPTS, before it is dead.
RATE_WAITS_PER_ATTEMPT = 4
_COUNTS_EVERY_S = 5.0


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def deliveries_of(provider: str, job_id: str, events: Sequence[CanonicalEvent]) -> list[Delivery]:
    """The events in deliveries of at most EVENTS_PER_DELIVERY, each keyed by the job and its
    events' ids: the same job's same records are the same delivery again."""
    chunks = [list(events[i:i + EVENTS_PER_DELIVERY])
              for i in range(0, len(events), EVENTS_PER_DELIVERY)]
    return [Delivery(provider=provider,
                     delivery_key="fetch:" + _digest(job_id, *sorted(e.event_id for e in chunk)),
                     events=chunk) for chunk in chunks]


class Fetcher:
    def __init__(self, settings: Settings, connections: ConnectionStore, jobs: JobQueue,
                 durable: DurableLog, store: EventStore, http: ProviderHttp,
                 apis: dict[str, ProviderApi], *, metrics: FetcherMetrics,
                 collector: QueueCollector | None = None,
                 may_fetch: Callable[[str, str], Awaitable[bool]] | None = None,
                 consent: Callable[[Connection, str | None], Awaitable[None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        # Consent: False for a (person, provider) whose consent was withdrawn.
        self._may_fetch = may_fetch
        # Records the person's consent before a connection made by a notice is stored
        # (Terra's ``auth``, when the widget's redirect did not come first).
        self._consent = consent
        self.connections = connections
        self.jobs = jobs
        self.durable = durable
        self.store = store
        self.http = http
        self.apis = apis
        self.metrics = metrics
        self.collector = collector or QueueCollector()
        self._clock = clock
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[str]] = {}
        self._counted = 0.0
        # A rate-limited run's wait, by job id, until its job is finished.
        self._waits: dict[str, float] = {}
        self.finished = 0  # job runs finished since start, any outcome

    def wake(self) -> None:
        """New jobs may be due: look now instead of at the next poll."""
        self._wake.set()

    @property
    def oauth_bounds(self) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(s.fetch_timeout_s, connect=s.fetch_connect_timeout_s)

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, idle_exit_s: float | None = None) -> None:
        """Claim and run due jobs until ``stop`` is set (or, with ``idle_exit_s``, until no job
        was due for that long); jobs in hand are given ``SHUTDOWN_TIMEOUT_S`` to finish, then
        abandoned to their leases."""
        s = self.settings
        renewer = asyncio.create_task(self._renew_leases(stop), name="fetcher-leases")
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                await self._update_counts()
                free = s.fetcher_concurrency - len(self._running)
                claimed: list[JobRecord] = []
                if free > 0:
                    try:
                        claimed = await self.jobs.claim(free, s.fetch_lease_s, self._clock())
                    except StoreUnavailable as exc:
                        log.warning("claiming jobs failed", extra={"error": exc.detail})
                for record in claimed:
                    self._start(record)
                if claimed or self._running:
                    idle_since = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                    return
                if free > len(claimed) or not claimed:
                    await self._idle(stop)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if self._running:
                _, pending = await asyncio.wait(list(self._running.values()),
                                                timeout=s.shutdown_timeout_s)
                for task in pending:  # their leases run out; another run claims them
                    task.cancel()
            await self._update_counts(force=True)

    def _start(self, record: JobRecord) -> None:
        job_id = record.job.job_id
        task = asyncio.create_task(self.run_job(record), name=f"fetch-{job_id}")
        self._running[job_id] = task

        def forget(_: asyncio.Task[str]) -> None:
            self._running.pop(job_id, None)

        task.add_done_callback(forget)

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait()),
                                            asyncio.ensure_future(stop.wait()),
                                            *self._running.values()]
        try:
            await asyncio.wait(waits, timeout=self.settings.fetch_poll_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waits[:2]:
                future.cancel()

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        lease = self.settings.fetch_lease_s
        while not stop.is_set():
            await asyncio.sleep(lease / 3)
            if self._running:
                with contextlib.suppress(StoreUnavailable):
                    await self.jobs.renew(list(self._running),
                                          self._clock() + timedelta(seconds=lease))

    async def _update_counts(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._counted < _COUNTS_EVERY_S:
            return
        self._counted = time.monotonic()
        with contextlib.suppress(StoreUnavailable):
            self.collector.jobs = await self.jobs.counts()
            self.collector.connections = await self.connections.status_counts()

    async def run_due(self, *, limit: int = 10_000) -> int:
        """Run every job due now, one claim at a time, until none is left (the CLI's
        ``--once``, tests, the benchmark); returns how many runs finished."""
        done = 0
        while done < limit:
            claimed = await self.jobs.claim(self.settings.fetcher_concurrency,
                                            self.settings.fetch_lease_s, self._clock())
            if not claimed:
                break
            await asyncio.gather(*(self.run_job(record) for record in claimed))
            done += len(claimed)
        await self._update_counts(force=True)
        return done

    # --- one job ---------------------------------------------------------------------------

    async def run_job(self, record: JobRecord) -> str:
        """Run one claimed job and finish it; returns the outcome."""
        job = record.job
        started = time.perf_counter()
        outcome, error, wait = await self._outcome(record)
        now = self._clock()
        if outcome == "retry":
            due = now + timedelta(seconds=self._backoff(record.attempts))
            if record.attempts >= self.settings.fetch_max_attempts:
                outcome = DEAD
            await self._finish(job, PENDING if outcome == "retry" else DEAD, now, error, due)
        elif outcome == "rate_limited":
            limit = self.settings.fetch_max_attempts * RATE_WAITS_PER_ATTEMPT
            if record.rate_waits + 1 >= limit:
                outcome = DEAD
                await self._finish(job, DEAD, now, f"{error} (waited {limit} times)", None)
            else:
                await self._finish(job, PENDING, now, error,
                                   now + timedelta(seconds=wait + jitter(1.0)),
                                   rate_limited=True)
        else:
            await self._finish(job, outcome, now, error, None)
        self.metrics.job(job.provider, outcome)
        self.finished += 1
        log.info("fetch job finished", extra={
            "provider": job.provider, "state": outcome, "count": record.attempts,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "detail": f"{job.kind} {job.job_id}" + (f": {error}" if error else "")})
        return outcome

    async def _finish(self, job: FetchJob, state: str, now: datetime, error: str | None,
                      due: datetime | None, *, rate_limited: bool = False) -> None:
        try:
            await self.jobs.finish(job.job_id, state, now, error=error, due_at=due,
                                   rate_limited=rate_limited)
        except StoreUnavailable as exc:
            # The lease runs out and the job is claimed again: nothing is lost, only repeated.
            log.warning("finishing a job failed", extra={"error": exc.detail})

    def _backoff(self, attempts: int) -> float:
        """Exponential with equal jitter: half the step fixed, half random."""
        s = self.settings
        step = min(s.fetch_retry_max_s, s.fetch_retry_base_s * 2.0 ** max(0, attempts - 1))
        return float(step / 2 + jitter(step / 2))

    async def _outcome(self, record: JobRecord) -> tuple[str, str | None, float]:
        """(outcome, error, seconds to wait): the outcome is ``done``, ``retry``,
        ``rate_limited`` (after the wait), ``dead``, ``blocked`` or ``cancelled``."""
        try:
            outcome, error = await self._resolve(record)
        except Exception as exc:  # a defect: the job must still end somewhere
            log.exception("fetch job crashed", extra={"provider": record.job.provider,
                                                      "error": type(exc).__name__})
            outcome, error = "retry", f"crashed: {type(exc).__name__}"
        return outcome, error, self._waits.pop(record.job.job_id, 0.0)

    async def _resolve(self, record: JobRecord) -> tuple[str, str | None]:
        job = record.job
        api = self.apis.get(job.provider)
        if api is None:
            return DEAD, f"no fetcher for provider {job.provider!r}"
        now = self._clock()
        try:
            if isinstance(api, TerraApi) and api.is_connection(job):
                return await self._terra_connected(api, job, now)
            connection = await self.connections.get_connection(job.provider,
                                                               job.provider_user_id)
        except TokenUnreadable as exc:
            await self.connections.set_status(job.provider, job.provider_user_id,
                                              REAUTHORIZATION_REQUIRED, str(exc), now)
            return BLOCKED, str(exc)
        except StoreUnavailable as exc:
            return "retry", exc.detail
        if connection is None:
            return DEAD, "no connection for this provider account"
        if connection.status == DISCONNECTED:
            return CANCELLED, "the connection was removed"
        try:
            if self._may_fetch is not None and not await self._may_fetch(connection.user_id,
                                                                         job.provider):
                return CANCELLED, "consent withdrawn"
        except StoreUnavailable as exc:
            return "retry", exc.detail
        if api.is_revocation(job):
            await self.connections.set_status(job.provider, job.provider_user_id,
                                              REAUTHORIZATION_REQUIRED,
                                              "access withdrawn at the provider", now)
            return DONE, None
        if connection.status == REAUTHORIZATION_REQUIRED:
            return BLOCKED, "the connection needs re-authorization"
        return await self._fetch(api, record, connection, now)

    async def _fetch(self, api: ProviderApi, record: JobRecord, connection: Connection,
                     now: datetime) -> tuple[str, str | None]:
        job = record.job
        holder = {"connection": connection}
        session = self.http.session(job.provider, connection.provider_user_id, api.api_url,
                                    api.dialect, self._token_source(api, holder, now)
                                    if connection.tokens is not None else None)
        run = JobRun(job, connection, session, now)
        try:
            await api.fetch(run)
            stored = await self._write(run)
        except GrantInvalid as exc:
            await self.connections.set_status(job.provider, connection.provider_user_id,
                                              REAUTHORIZATION_REQUIRED, exc.detail, now)
            await self._record(connection, ok=False, error=exc.detail)
            return BLOCKED, exc.detail
        except UpstreamRateLimited as exc:
            self._waits[job.job_id] = float(exc.retry_after_s)
            return "rate_limited", exc.detail
        except (UpstreamFailed, StoreUnavailable) as exc:
            await self._record(connection, ok=False, error=exc.detail)
            return "retry", exc.detail
        except UpstreamRejected as exc:
            await self._record(connection, ok=False, error=exc.detail)
            return DEAD, exc.detail
        except (ValueError, KeyError, TypeError) as exc:
            # An answer whose shape no normalizer could read: retried (a cut-off body may be
            # whole next time), dead after the attempts.
            detail = f"unreadable answer: {type(exc).__name__}"
            await self._record(connection, ok=False, error=detail)
            return "retry", detail
        except AurenError as exc:
            return "retry", exc.detail
        if run.meta:
            await self.connections.merge_meta(job.provider, connection.provider_user_id,
                                              run.meta)
        await self._record(connection, ok=True, error=None)
        self.metrics.stored(job.provider, run.provenance, stored)
        if run.note:
            log.info("fetch job note", extra={"provider": job.provider, "detail": run.note})
        return DONE, None

    async def _record(self, connection: Connection, *, ok: bool, error: str | None) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.connections.record_fetch(connection.provider,
                                                connection.provider_user_id, ok=ok,
                                                error=error, now=self._clock())

    async def _write(self, run: JobRun) -> int:
        """The run's events through the durable path, and the jobs it made into the queue;
        returns the events newly stored (embedded) or published (full stack)."""
        events = run.batch.all_events
        stored = 0
        deliveries = deliveries_of(run.job.provider, run.job.job_id, events)
        if deliveries:
            results = await self.durable.write_batch(deliveries)
            stored = sum(r.accepted for r in results)
        if run.new_jobs:
            await self.jobs.add(run.new_jobs)
            self.wake()
        for skipped in run.batch.skipped:
            log.info("fetched measurement skipped", extra={
                "provider": run.job.provider, "error": skipped.reason, "count": skipped.count,
                "detail": f"{skipped.metric}: {skipped.detail}"})
        return stored

    def _token_source(self, api: ProviderApi, holder: dict[str, Connection],
                      now: datetime) -> Callable[[bool], Any]:
        """The access token of the job's connection, refreshed ahead of expiry or after a
        401 (``force``): single flight per connection, across processes."""
        ahead = self.settings.token_refresh_ahead_s

        async def token(force: bool) -> str:
            current = holder["connection"]
            tokens = current.tokens
            if tokens is None:
                raise GrantInvalid("no tokens are stored for the connection")
            if not force and not tokens.expiring(self._clock(), ahead):
                return tokens.access_token
            spec = api.oauth()
            if spec is None or not spec.refreshable or not tokens.refresh_token:
                if force:
                    raise GrantInvalid(f"{api.name} refused the access token, which cannot "
                                       "be refreshed")
                return tokens.access_token

            async def refresh(latest: Connection) -> Tokens:
                if latest.tokens is None or not latest.tokens.refresh_token:
                    raise GrantInvalid("no refresh token is stored for the connection")
                try:
                    answer = await oauth.refresh(spec, latest.tokens.refresh_token,
                                                 self.oauth_bounds)
                except GrantInvalid:
                    self.metrics.refreshed(api.name, "refused")
                    raise
                except AurenError:
                    self.metrics.refreshed(api.name, "failed")
                    raise
                self.metrics.refreshed(api.name, "ok")
                return answer.tokens

            holder["connection"] = await self.connections.refresh_tokens(
                current.provider, current.provider_user_id, current.token_version, refresh,
                self._clock())
            fresh = holder["connection"].tokens
            if fresh is None:
                raise GrantInvalid("the connection's tokens were removed")
            return fresh.access_token

        return token

    async def _terra_connected(self, api: TerraApi, job: FetchJob,
                               now: datetime) -> tuple[str, str | None]:
        """Terra's ``auth`` notice: the account is connected (unless the widget's redirect
        already said so), and its history is fetched."""
        reference = job.params.get("reference_id")
        if not isinstance(reference, str) or await self.connections.get_user(reference) is None:
            return DEAD, "auth for a reference_id that is no AUREN user"
        existing = await self.connections.get_connection(api.name, job.provider_user_id)
        if existing is not None and existing.status == ACTIVE \
                and existing.user_id == reference:
            return DONE, None
        resource = job.params.get("resource")
        made = Connection(api.name, job.provider_user_id, reference, ACTIVE, (), now, now,
                          meta={"resource": resource} if isinstance(resource, str) else {})
        if self._consent is not None:
            await self._consent(made, None)
        connection = await self.connections.upsert_connection(made)
        await self.jobs.release(api.name, job.provider_user_id, now)
        await self.start_history(api, connection, now)
        return DONE, None

    async def start_history(self, api: ProviderApi, connection: Connection,
                            now: datetime) -> list[FetchJob]:
        jobs = await queue_history(self.settings, api, self.store, self.jobs, connection, now)
        if jobs:
            self.wake()
        return jobs
