"""The bridge's connection API as a library: people, connect and callback, the connections
list, disconnect, re-sync, coverage and the job admin. HTTP-free: the routes in
``auren.services.bridge`` authorise the caller and hand over plain values.

**Connect.** ``connect_url`` checks that the provider is configured and the person exists,
keeps a connect state (single use, ``OAUTH_STATE_TTL_S``, with the PKCE verifier encrypted)
and answers the provider's authorization URL. The ``state`` parameter is the state's nonce,
the provider and its expiry, signed (HMAC) with a key derived from the encryption key: a state
AUREN did not make, or one for another provider, is refused before the store is asked; the
store then takes the state exactly once. The redirect URI is
``{AUREN_PUBLIC_URL}/api/v1/connect/{provider}/callback``.

**Callback.** The code is exchanged (PKCE where the provider has it), the provider's user id is
learnt (the token answer's for Fitbit, Polar and Withings, an API call for the others), the
connection is stored with its tokens encrypted, the provider is told what it needs (Polar's
registration, Fitbit's and Withings' subscriptions), jobs blocked while the account needed
re-authorization are released, and the history is queued (only the missing days). Terra is
connected through its widget: the connect link is the widget session's, and its redirect
comes back to the same callback with the Terra user id.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from auren.adapters.base import EventStore
from auren.connections import oauth
from auren.connections.apis import ProviderApi
from auren.connections.apis.terra import TerraApi
from auren.connections.base import (
    ACTIVE,
    DEAD,
    DISCONNECTED,
    JOB_STATES,
    SYNC,
    Connection,
    ConnectionStore,
    ConnectState,
    JobQueue,
    User,
)
from auren.connections.coverage import coverage, window_start
from auren.connections.crypto import TokenCipher
from auren.connections.history import queue_history
from auren.connections.http import ProviderHttp, Session
from auren.errors import (
    Conflict,
    GrantInvalid,
    InvalidPayload,
    MalformedPayload,
    NotFound,
    ProviderNotConfigured,
    UpstreamFailed,
    UpstreamRejected,
)
from auren.events import check_instant, is_identifier
from auren.settings import Settings

log = logging.getLogger("auren.connections")

_STATE_MAX = 512


# Records the person's consent for a connection about to be stored (before anything of the
# provider is fetched), with the version of the consent text the connect link showed.
ConsentHook = Callable[[Connection, str | None], Awaitable[None]]


def new_user_id() -> str:
    return "u_" + secrets.token_hex(12)


class ConnectionsService:
    def __init__(self, settings: Settings, connections: ConnectionStore, jobs: JobQueue,
                 store: EventStore, cipher: TokenCipher, http: ProviderHttp,
                 apis: Mapping[str, ProviderApi], *,
                 wake: Callable[[], None] | None = None,
                 consent: ConsentHook | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.connections = connections
        self.jobs = jobs
        self.store = store
        self._cipher = cipher
        self._http = http
        self.apis = apis
        self._wake = wake
        self._consent = consent
        self._clock = clock
        # Whether a user id was erased (the erasure ledger; set by the bridge): such an id is
        # never made a person again, so nothing can be connected or stored under it.
        self.erased: Callable[[str], bool] = lambda user_id: False

    @property
    def public_url(self) -> str:
        return self.settings.auren_public_url.rstrip("/")

    def redirect_uri(self, provider: str) -> str:
        return f"{self.public_url}/api/v1/connect/{provider}/callback"

    @property
    def _bounds(self) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(s.fetch_timeout_s, connect=s.fetch_connect_timeout_s)

    def api(self, provider: str) -> ProviderApi:
        api = self.apis.get(provider)
        if api is None:
            raise NotFound(f"unknown provider {provider[:32]!r}; connectable: "
                           f"{', '.join(sorted(self.apis))}")
        if not api.configured:
            raise ProviderNotConfigured(f"{provider} has no client credentials configured")
        return api

    # --- people ----------------------------------------------------------------------------

    async def create_user(self, user_id: str | None) -> tuple[User, bool]:
        if user_id is not None and not is_identifier(user_id):
            raise InvalidPayload("user_id must be 1 to 256 printable characters without "
                                 "leading or trailing spaces")
        if user_id is not None and self.erased(user_id):
            raise Conflict("this user id belongs to an erased person: choose another")
        return await self.connections.create_user(user_id or new_user_id(), self._clock())

    async def user(self, user_id: str) -> User:
        if self.erased(user_id):
            # Being erased, or erased: never served again, even before the rows are gone.
            raise NotFound(f"no user {user_id[:64]!r}")
        found = await self.connections.get_user(user_id)
        if found is None:
            raise NotFound(f"no user {user_id[:64]!r}")
        return found

    # --- connect ---------------------------------------------------------------------------

    def _sign_state(self, nonce: str, provider: str, expires: datetime,
                    consent_version: str | None) -> str:
        fields: list[Any] = [nonce, provider, int(expires.timestamp())]
        if consent_version is not None:
            fields.append(consent_version)
        payload = orjson.dumps(fields)
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._cipher.sign(payload)}"

    def _read_state(self, state: str, provider: str) -> tuple[str, str | None]:
        """The nonce of a state this bridge signed for ``provider`` and that has not expired,
        and the version of the consent text its link showed (None: a link made without one)."""
        refused = GrantInvalid("the connect link's state is invalid, expired or already used")
        if not state or len(state) > _STATE_MAX or "." not in state:
            raise refused
        encoded, _, signature = state.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            nonce, named, expires, *shown = orjson.loads(payload)
        except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
            raise refused from None
        version = shown[0] if shown and isinstance(shown[0], str) else None
        if not self._cipher.verify(payload, signature) or named != provider \
                or not isinstance(nonce, str) or not isinstance(expires, int) \
                or expires < self._clock().timestamp():
            raise refused
        return nonce, version

    async def connect_url(self, provider: str, user_id: str,
                          consent_version: str | None = None) -> str:
        """Where to send the person to connect ``provider`` (the provider's consent page, or
        Terra's widget); ``consent_version``: the consent text shown with the link, recorded
        with the consent when the account is connected."""
        api = self.api(provider)
        await self.user(user_id)
        now = self._clock()
        expires = now + timedelta(seconds=self.settings.oauth_state_ttl_s)
        nonce = secrets.token_urlsafe(24)
        spec = api.oauth()
        verifier = secrets.token_urlsafe(64) if spec is not None and spec.pkce else None
        await self.connections.save_state(ConnectState(nonce, user_id, provider, verifier,
                                                       expires))
        state = self._sign_state(nonce, provider, expires, consent_version)
        if isinstance(api, TerraApi):
            callback = f"{self.redirect_uri(provider)}?state={state}"
            session = self._http.session(provider, user_id, api.api_url, api.dialect, None)
            return await api.widget_session(session, user_id, callback,
                                            callback + "&failed=1")
        assert spec is not None  # noqa: S101 - every other provider connects by OAuth
        return oauth.authorization_url(spec, self.redirect_uri(provider), state, verifier,
                                       self._bounds)

    async def callback(self, provider: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Finish a connect: the provider's redirect back, with ``code`` and ``state`` (Terra:
        ``user_id``, ``resource``, ``reference_id``)."""
        api = self.api(provider)
        nonce, consent_version = self._read_state(params.get("state", ""), provider)
        state = await self.connections.take_state(nonce)
        now = self._clock()
        if state is None or state.provider != provider or state.expires_at < now:
            raise GrantInvalid("the connect link's state is invalid, expired or already used")
        if params.get("error") or params.get("failed"):
            reason = (params.get("error") or "failed")[:64]
            raise GrantInvalid(f"{provider}: the person did not grant access ({reason})")
        if isinstance(api, TerraApi):
            connection = await self._terra(api, state, params, now, consent_version)
            warnings: list[str] = []
        else:
            connection, warnings = await self._oauth(api, state, params, now, consent_version)
        released = await self.jobs.release(provider, connection.provider_user_id, now)
        history = await queue_history(self.settings, api, self.store, self.jobs, connection,
                                      now)
        if (released or history) and self._wake is not None:
            self._wake()
        log.info("account connected", extra={
            "provider": provider, "count": len(history),
            "detail": f"released {released} blocked job(s)"})
        return {"connected": True, **connection.as_dict(), "history_jobs": len(history),
                "released_jobs": released, "warnings": warnings}

    async def _store(self, connection: Connection, consent_version: str | None) -> Connection:
        """The person's consent first, then the connection: nothing of the provider is
        fetched before the consent is recorded."""
        if self._consent is not None:
            await self._consent(connection, consent_version)
        return await self.connections.upsert_connection(connection)

    async def _oauth(self, api: ProviderApi, state: ConnectState, params: Mapping[str, str],
                     now: datetime, consent_version: str | None
                     ) -> tuple[Connection, list[str]]:
        code = params.get("code", "")
        if not code or len(code) > 2048:
            raise MalformedPayload("code is required")
        spec = api.oauth()
        assert spec is not None  # noqa: S101 - api() let only OAuth providers through
        answer = await oauth.exchange(spec, self.redirect_uri(api.name), code, state.verifier,
                                      self._bounds)

        async def token(force: bool) -> str:
            if force:
                raise GrantInvalid(f"{api.name} refused the access token it just issued")
            return answer.tokens.access_token

        session = self._http.session(api.name, state.user_id, api.api_url, api.dialect, token)
        provider_user_id, meta = await api.identify(session, answer)
        scopes = answer.scopes or tuple((spec.scope or "").replace(",", " ").split())
        connection = await self._store(Connection(
            api.name, provider_user_id, state.user_id, ACTIVE, scopes, now, now,
            tokens=answer.tokens, meta=meta), consent_version)
        warnings = await self._after_connect(api, session, connection, now)
        return connection, warnings

    async def _after_connect(self, api: ProviderApi, session: Session,
                             connection: Connection, now: datetime) -> list[str]:
        """The provider's own steps after a connect. A failure there does not undo the
        connection (the person did grant access); it is recorded and answered as a warning."""
        try:
            meta = await api.after_connect(session, connection, self.public_url)
        except (UpstreamFailed, UpstreamRejected, GrantInvalid) as exc:
            await self.connections.record_fetch(api.name, connection.provider_user_id,
                                                ok=False, error=exc.detail, now=now)
            return [f"{api.name}: {exc.detail}"]
        if meta:
            await self.connections.merge_meta(api.name, connection.provider_user_id, meta)
        return []

    async def _terra(self, api: TerraApi, state: ConnectState, params: Mapping[str, str],
                     now: datetime, consent_version: str | None) -> Connection:
        terra_user = params.get("user_id", "")
        reference = params.get("reference_id")
        if not is_identifier(terra_user):
            raise MalformedPayload("user_id (the Terra user) is required")
        if reference and reference != state.user_id:
            raise GrantInvalid("the widget connected another person (reference_id)")
        resource = params.get("resource")
        return await self._store(Connection(
            api.name, terra_user, state.user_id, ACTIVE, (), now, now,
            meta={"resource": resource[:32]} if resource else {}), consent_version)

    # --- connections -----------------------------------------------------------------------

    async def list_connections(self, user_id: str) -> list[dict[str, Any]]:
        await self.user(user_id)
        return [c.as_dict() for c in await self.connections.connections_of(user_id)
                if c.status != DISCONNECTED]

    async def _of(self, user_id: str, provider: str) -> list[Connection]:
        await self.user(user_id)
        found = [c for c in await self.connections.connections_of(user_id)
                 if c.provider == provider and c.status != DISCONNECTED]
        if not found:
            raise NotFound(f"{user_id[:64]!r} has no {provider} connection")
        return found

    async def disconnect(self, user_id: str, provider: str) -> dict[str, Any]:
        """Revoke AUREN's access at the provider, then forget the tokens. A provider that is
        down keeps the tokens (the call fails with 503, to be retried); one that says the
        grant is already gone counts as revoked."""
        api = self.apis.get(provider)
        if api is None:
            raise NotFound(f"unknown provider {provider[:32]!r}")
        found = await self._of(user_id, provider)
        results = [await self._revoke(api, connection) for connection in found]
        return {"provider": provider, "disconnected": results}

    async def revoke_grants(self, user_id: str, provider: str) -> dict[str, Any]:
        """For an erasure: every grant ``user_id`` gave AUREN at ``provider`` revoked (or
        deregistered) there and its tokens forgotten, whatever the connection's status.

        Raises:
            UpstreamFailed: the provider could not be reached (nothing forgotten; retry).
        """
        api = self.apis.get(provider)
        connections = [c for c in await self.connections.connections_of(user_id)
                       if c.provider == provider]
        if api is None or not api.configured:
            # No credentials to call it with: the tokens go, and the receipt says the grant
            # could not be revoked at the provider (the person can withdraw it there).
            for connection in connections:
                await self.connections.forget(provider, connection.provider_user_id,
                                              self._clock())
            return {"accounts": len(connections), "revoked": 0,
                    "not_revoked": "the provider has no credentials configured"}
        results = [await self._revoke(api, connection) for connection in connections]
        return {"accounts": len(results),
                "revoked": sum(1 for r in results if r["revoked_at_provider"]),
                "already_gone": sum(1 for r in results if not r["revoked_at_provider"])}

    async def _revoke(self, api: ProviderApi, connection: Connection) -> dict[str, Any]:
        revoked = True
        if connection.tokens is not None or isinstance(api, TerraApi):
            tokens = connection.tokens

            async def token(force: bool, tokens: Any = tokens) -> str:
                if force or tokens is None:
                    raise GrantInvalid("the grant is gone")
                return str(tokens.access_token)

            session = self._http.session(api.name, connection.user_id, api.api_url,
                                         api.dialect, token)
            try:
                await api.revoke(session, connection)
            except (GrantInvalid, UpstreamRejected) as exc:
                revoked = False  # already gone, or refused: the tokens are dead either way
                log.info("revocation refused", extra={"provider": api.name,
                                                      "detail": exc.detail})
        await self.connections.forget(api.name, connection.provider_user_id, self._clock())
        return {"provider_user_id": connection.provider_user_id,
                "revoked_at_provider": revoked, "tokens_forgotten": True}

    async def sync(self, user_id: str, provider: str, since: datetime | None) -> dict[str, Any]:
        api = self.apis.get(provider)
        if api is None:
            raise NotFound(f"unknown provider {provider[:32]!r}")
        now = self._clock()
        if since is not None:
            check_instant(since, now, "since")
            if since > now:
                raise InvalidPayload("since is in the future")
        queued = []
        for connection in await self._of(user_id, provider):
            if connection.status != ACTIVE:
                raise InvalidPayload(f"the {provider} connection needs re-authorization: "
                                     "connect it again")
            since_day = since or now - timedelta(days=max(1, self.settings.backfill_days) - 1)
            queued += await queue_history(self.settings, api, self.store, self.jobs,
                                          connection, now, origin=SYNC, since=since_day)
        if queued and self._wake is not None:
            self._wake()
        return {"provider": provider, "jobs": [j.job_id for j in queued],
                "windows": [[j.params["first"], j.params["last"]] for j in queued]}

    async def coverage(self, user_id: str, days: int) -> dict[str, Any]:
        await self.user(user_id)
        now = self._clock()
        found = await self.store.coverage(user_id, window_start(now.date(), days))
        sources = coverage(await self.connections.connections_of(user_id), found, now.date())
        return {"user_id": user_id, "days": days, "as_of": now.isoformat(),
                "sources": [s.as_dict() for s in sources]}

    # --- jobs ------------------------------------------------------------------------------

    async def job_listing(self, state: str | None, provider: str | None,
                          limit: int) -> list[dict[str, Any]]:
        if state is not None and state not in JOB_STATES:
            raise InvalidPayload(f"state must be one of {', '.join(JOB_STATES)}")
        return [r.as_dict() for r in await self.jobs.listing(state, provider, limit)]

    async def retry(self, job_ids: list[str] | None, *, state: str = DEAD,
                    provider: str | None = None) -> int:
        count = await self.jobs.retry(job_ids, self._clock(), state=state, provider=provider)
        if count and self._wake is not None:
            with contextlib.suppress(RuntimeError):
                self._wake()
        return count
