"""What every simulated provider shares: apps, grants and tokens, codes, faults, rate limits.

Pure state plus the plumbing of one provider request; each provider module (``oura``,
``whoop``, …) subclasses :class:`ProviderApi` and overrides what its cloud does differently:
where credentials go, how errors look, whether refresh tokens rotate, which limits apply.
Nothing here does I/O apart from the hold of a ``timeout`` fault.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, RedirectResponse, Response

from auren.sim.api.wearers import Wearer
from auren.sim.wearers import DayRecord

Scope = Literal["app", "user", "token"]
AccessStatus = Literal["ok", "expired", "revoked", "invalid", "missing"]
FaultKind = Literal["rate_limit", "server_error", "timeout", "malformed", "revoked",
                    "expired_token"]
Target = Literal["api", "token", "any"]

# Form bodies and query strings larger than this are refused outright.
_MAX_FORM_BYTES = 65_536
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


class Reply(Exception):
    """A complete provider response raised from inside a handler (an error in its own format,
    or a fault); the app answers with it as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None,
                  media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=media_type,
                    headers=dict(headers or {}))


def add_query(url: str, **params: str | None) -> str:
    """``url`` with ``params`` appended to its query (None values left out)."""
    parts = urlsplit(url)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


# --- apps, settings and limits ---------------------------------------------------------------


@dataclass(slots=True)
class ClientApp:
    """The one registered application of a provider: the bridge's credentials."""

    client_id: str
    client_secret: str
    # Empty: any redirect_uri is accepted (a real provider checks its registered list).
    redirect_uris: tuple[str, ...] = ()


class Limit(BaseModel):
    """A fixed window: at most ``limit`` (+ ``per_user`` per registered user) calls per
    ``window_s``, counted per application, per user or per access token. Windows are aligned
    to multiples of ``window_s`` since the epoch (an hour window resets at the top of the hour,
    as Fitbit's does)."""

    scope: Scope
    limit: int = Field(ge=1)
    window_s: int = Field(ge=1, le=86_400)
    per_user: int = Field(default=0, ge=0)


@dataclass(slots=True)
class LimitState:
    limit: int
    remaining: int
    reset_s: int  # seconds until the window resets


@dataclass(slots=True)
class ProviderSettings:
    """Run-time knobs of one provider (the admin API changes them)."""

    access_ttl_s: int
    page_size: int
    limits: list[Limit]
    # Fitbit and Withings notify only users who subscribed through their API.
    subscriptions_required: bool = True
    # Documented alternatives the fetcher must accept, e.g. {"recovery_id": "cycle"} (WHOOP).
    variant: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OAuthPolicy:
    scopes: tuple[str, ...]  # what the app may ask for; empty: no scopes (Garmin)
    scope_separator: str = " "
    pkce: Literal["none", "optional", "required"] = "optional"
    client_auth: frozenset[str] = frozenset({"post"})  # "basic" and/or "post"
    refresh: Literal["none", "reuse", "rotate", "grace"] = "rotate"
    # A refresh token is issued only when this scope was granted (WHOOP's ``offline``).
    refresh_scope: str | None = None
    code_ttl_s: int = 600
    grace_s: int = 8 * 3600  # "grace": how long a replaced refresh token keeps working
    min_state_chars: int = 0


# --- grants, tokens and codes ----------------------------------------------------------------


@dataclass(slots=True)
class Grant:
    """One wearer's authorization of the app at one provider."""

    id: str
    provider: str
    wearer: Wearer
    client_id: str
    scopes: tuple[str, ...]
    created_at: float
    refresh_token: str | None = None
    # "grace" rotation (Withings): the refresh token replaced last keeps working until the new
    # access token is first used or ``grace_s`` has passed.
    previous_refresh: str | None = None
    previous_refresh_until: float = 0.0
    successor_access: str | None = None
    revoked: bool = False
    registered_at: float | None = None  # Polar: POST /v3/users
    member_id: str | None = None
    # Fitbit: collection ("" = all) -> subscription id; Withings: appli -> callback URL.
    subscriptions: dict[str, str] = field(default_factory=dict)
    refreshes: int = 0
    # Terra: one Terra user per connected device, so the id is not the wearer's alone.
    external_id: str | None = None
    resource: str | None = None

    @property
    def provider_user_id(self) -> str:
        return self.external_id or self.wearer.provider_user_id(self.provider)

    def as_dict(self) -> dict[str, Any]:
        return {"grant_id": self.id, "provider": self.provider, "user": self.wearer.id,
                "provider_user_id": self.provider_user_id, "scopes": list(self.scopes),
                "revoked": self.revoked, "refreshes": self.refreshes,
                "registered": self.registered_at is not None,
                "subscriptions": dict(self.subscriptions)}


@dataclass(slots=True)
class AccessToken:
    grant: Grant
    expires_at: float


@dataclass(slots=True)
class AuthCode:
    provider: str
    wearer: Wearer
    client_id: str
    redirect_uri: str | None
    scopes: tuple[str, ...]
    challenge: str | None
    expires_at: float


# --- faults ----------------------------------------------------------------------------------


class FaultSpec(BaseModel):
    """A fault to inject. ``provider``/``user`` None: every provider/user. ``count``: how many
    matching requests it hits (None: until cleared). ``revoked`` and ``expired_token`` act once,
    at once, on the matching grants."""

    kind: FaultKind
    provider: str | None = None
    user: str | None = None
    target: Target = "api"
    count: int | None = Field(default=1, ge=1)
    status: int = Field(default=503, ge=500, le=599)
    retry_after_s: int = Field(default=2, ge=0, le=86_400)
    delay_s: float = Field(default=30.0, ge=0, le=600)


@dataclass(slots=True)
class Fault:
    id: int
    spec: FaultSpec
    remaining: int | None
    hits: int = 0

    def matches(self, provider: str, user: str | None, target: Target) -> bool:
        s = self.spec
        return ((s.provider is None or s.provider == provider)
                and (s.user is None or s.user == user)
                and (s.target == "any" or s.target == target)
                and (self.remaining is None or self.remaining > 0))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec.model_dump(), "remaining": self.remaining,
                "hits": self.hits}


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(next(self._ids), spec, spec.count)
        self._faults.append(fault)
        return fault

    def take(self, provider: str, user: str | None, target: Target) -> Fault | None:
        """The first live fault that matches, counted as hit."""
        for fault in self._faults:
            if fault.matches(provider, user, target):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def clear(self, fault_id: int | None = None) -> int:
        before = len(self._faults)
        self._faults = [f for f in self._faults if fault_id is not None and f.id != fault_id]
        return before - len(self._faults)

    def listing(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self._faults]


# --- rate limits -----------------------------------------------------------------------------


class Limiter:
    """Fixed-window counters per (provider, scope key, window)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int, int], int] = {}

    def reset(self, provider: str) -> None:
        self._counts = {k: v for k, v in self._counts.items() if k[0] != provider}

    def hit(self, provider: str, limits: list[Limit], keys: Mapping[Scope, str],
            registered_users: int, now: float) -> tuple[LimitState | None, int | None]:
        """Count one call. Returns the tightest window's state and, when a window is already
        full (the call is refused and not counted), the seconds until it resets."""
        tightest: LimitState | None = None
        checks = []
        for limit in limits:
            start = int(now // limit.window_s) * limit.window_s
            key = (provider, f"{limit.scope}:{keys.get(limit.scope, '')}", limit.window_s, start)
            allowed = limit.limit + limit.per_user * registered_users
            used = self._counts.get(key, 0)
            reset = max(1, int(start + limit.window_s - now + 0.999))
            if used >= allowed:
                return LimitState(allowed, 0, reset), reset
            checks.append((key, allowed, used, reset))
        for key, allowed, used, reset in checks:
            self._counts[key] = used + 1
            state = LimitState(allowed, allowed - used - 1, reset)
            if tightest is None or state.remaining < tightest.remaining:
                tightest = state
        if len(self._counts) > 100_000:  # old windows are never read again
            self._counts = {k: v for k, v in self._counts.items() if k[3] + k[2] > now}
        return tightest, None


# --- the shared state ------------------------------------------------------------------------


class SimState:
    """Everything the simulated clouds hold: wearers, apps, grants, tokens, faults, limits."""

    def __init__(self, wearers: list[Wearer], clients: dict[str, ClientApp],
                 settings: dict[str, ProviderSettings], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.wearers = wearers
        self.by_id = {w.id: w for w in wearers}
        self.clients = clients
        self.settings = settings
        self.clock = clock
        self.grants: dict[str, Grant] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.logins: dict[str, deque[Wearer]] = {}
        self.faults = FaultBook()
        self.limiter = Limiter()
        self.stats: Counter[str] = Counter()
        self.notifications: list[dict[str, Any]] = []
        self._next_login: dict[str, int] = {}

    # -- wearers --------------------------------------------------------------------------

    def wearer(self, ref: str) -> Wearer | None:
        """A wearer by id or by index."""
        if ref in self.by_id:
            return self.by_id[ref]
        if ref.isascii() and ref.isdigit() and int(ref) < len(self.wearers):
            return self.wearers[int(ref)]
        return None

    def choose_login(self, provider: str, hint: str | None) -> Wearer | None:
        """Who logs in at the authorize page: ``hint`` (``sim_user``), else the next queued
        login, else the next wearer without a live grant at ``provider``, in index order."""
        if hint:
            return self.wearer(hint)
        queue = self.logins.get(provider)
        if queue:
            return queue.popleft()
        start = self._next_login.get(provider, 0)
        for offset in range(len(self.wearers)):
            wearer = self.wearers[(start + offset) % len(self.wearers)]
            if self.active_grant(provider, wearer) is None:
                self._next_login[provider] = (wearer.index + 1) % len(self.wearers)
                return wearer
        return None

    def active_grant(self, provider: str, wearer: Wearer) -> Grant | None:
        found = None
        for grant in self.grants.values():
            if grant.provider == provider and grant.wearer is wearer and not grant.revoked:
                found = grant  # the newest wins: dicts keep insertion order
        return found

    def registered_users(self, provider: str) -> int:
        return sum(1 for g in self.grants.values()
                   if g.provider == provider and g.registered_at is not None and not g.revoked)

    # -- codes and tokens -------------------------------------------------------------------

    def new_code(self, code: AuthCode) -> str:
        value = new_token("code")
        self.codes[value] = code
        return value

    def new_grant(self, provider: str, wearer: Wearer, client_id: str,
                  scopes: tuple[str, ...]) -> Grant:
        grant = Grant(new_token("grant"), provider, wearer, client_id, scopes, self.clock())
        self.grants[grant.id] = grant
        return grant

    def issue(self, grant: Grant, policy: OAuthPolicy, ttl_s: int,
              *, with_refresh: bool = True) -> tuple[str, str | None]:
        access = new_token("at")
        self.access[access] = AccessToken(grant, self.clock() + ttl_s)
        refresh: str | None = None
        wants_refresh = policy.refresh != "none" and (
            policy.refresh_scope is None or policy.refresh_scope in grant.scopes)
        if with_refresh and wants_refresh:
            refresh = new_token("rt")
            grant.refresh_token = refresh
            self.refresh[refresh] = grant
        return access, refresh

    def find_refresh(self, token: str) -> Grant | None:
        """The live grant a refresh token belongs to (a replaced one still works within
        Withings' grace), or None."""
        grant = self.refresh.get(token)
        if grant is None or grant.revoked:
            return None
        if token == grant.refresh_token:
            return grant
        if token == grant.previous_refresh and self.clock() < grant.previous_refresh_until:
            return grant
        return None

    def rotate(self, grant: Grant, used: str, policy: OAuthPolicy,
               ttl_s: int) -> tuple[str, str | None]:
        """New tokens for a refresh with ``used``, following the provider's rotation."""
        grant.refreshes += 1
        if policy.refresh == "reuse":
            access, _ = self.issue(grant, policy, ttl_s, with_refresh=False)
            return access, grant.refresh_token
        old_current = grant.refresh_token
        access, refresh = self.issue(grant, policy, ttl_s)
        if policy.refresh == "rotate":
            self.refresh.pop(used, None)
            grant.previous_refresh = None
        else:  # "grace": the token just used lives on until the new access token is used
            if used == old_current:
                grant.previous_refresh = used
                grant.previous_refresh_until = self.clock() + policy.grace_s
            elif old_current is not None:
                self.refresh.pop(old_current, None)
            grant.successor_access = access
        return access, refresh

    def lookup(self, token: str | None) -> tuple[AccessToken | None, AccessStatus]:
        if not token:
            return None, "missing"
        found = self.access.get(token)
        if found is None:
            return None, "invalid"
        if found.grant.revoked:
            return found, "revoked"
        if found.expires_at <= self.clock():
            return found, "expired"
        grant = found.grant
        if grant.successor_access == token and grant.previous_refresh is not None:
            # Withings: using the new access token ends the replaced refresh token's grace.
            self.refresh.pop(grant.previous_refresh, None)
            grant.previous_refresh = None
        return found, "ok"

    def revoke(self, grant: Grant) -> None:
        grant.revoked = True
        for token in [t for t, g in self.refresh.items() if g is grant]:
            del self.refresh[token]

    def expire(self, grant: Grant) -> int:
        now = self.clock()
        expired = 0
        for token in self.access.values():
            if token.grant is grant and token.expires_at > now:
                token.expires_at = now
                expired += 1
        return expired

    def grants_matching(self, provider: str | None, user: str | None) -> list[Grant]:
        return [g for g in self.grants.values()
                if not g.revoked and (provider is None or g.provider == provider)
                and (user is None or g.wearer.id == user)]


# --- notifications ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification a provider sends, before it is signed."""

    kind: str  # what it announces, e.g. "sleep.updated" or "SLEEP"
    body: bytes
    delivery_id: str
    # Keyword arguments of the provider module's ``signed_headers`` besides the clock.
    sign_args: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # None: the bridge's /webhooks/{provider}


def delivery_id() -> str:
    return secrets.token_hex(16)


# --- paging tokens ---------------------------------------------------------------------------


def page_token(offset: int, bound: str) -> str:
    """An opaque continuation token: the offset, tied to the query it continues."""
    raw = orjson.dumps({"o": offset, "q": bound})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def read_page_token(token: str) -> tuple[int, str] | None:
    if len(token) > 1024:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if (not isinstance(value, dict) or not isinstance(value.get("o"), int)
            or not isinstance(value.get("q"), str) or value["o"] < 0):
        return None
    return value["o"], value["q"]


# --- one provider ----------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """An authenticated data request that passed faults and limits."""

    grant: Grant
    token: str
    limit: LimitState | None
    malformed: bool = False

    @property
    def wearer(self) -> Wearer:
        return self.grant.wearer


def _html(status: int, message: str) -> HTMLResponse:
    from html import escape

    return HTMLResponse(f"<!doctype html><title>{status}</title><h1>{escape(message)}</h1>",
                        status_code=status)


class ProviderApi:
    """One simulated provider cloud; subclasses set ``name``/``policy`` and add routes."""

    name: ClassVar[str]
    policy: ClassVar[OAuthPolicy]

    def __init__(self, state: SimState) -> None:
        self.state = state
        # Set by the app while it runs: the client for calls the cloud itself makes (a
        # subscription's probe of its callback URL).
        self.http: httpx.AsyncClient | None = None

    @property
    def client(self) -> ClientApp:
        return self.state.clients[self.name]

    @property
    def settings(self) -> ProviderSettings:
        return self.state.settings[self.name]

    def router(self) -> APIRouter:
        raise NotImplementedError

    def oauth_router(self, authorize_path: str, token_path: str | None = None) -> APIRouter:
        """A router that already serves the provider's OAuth authorization page (GET) and, when
        given, its token endpoint (POST); the provider adds its data routes to it."""
        router = APIRouter()
        router.add_api_route(authorize_path, self.authorize, methods=["GET"],
                             include_in_schema=False)
        if token_path is not None:
            router.add_api_route(token_path, self.token, methods=["POST"],
                                 include_in_schema=False)
        return router

    def notifications(self, wearer: Wearer, records: list[DayRecord]) -> list[Outgoing]:
        """What the provider sends when ``records`` of ``wearer`` appear (none by default)."""
        return []

    def revocation_notifications(self, grant: Grant) -> list[Outgoing]:
        """What the provider sends when the user withdraws access on its side."""
        return []

    # -- error formats (override per provider) ----------------------------------------------

    def error(self, status: int, message: str, *, code: str = "error",
              headers: Mapping[str, str] | None = None) -> Response:
        return json_response({"error": code, "message": message}, status, headers)

    def unauthorized(self, reason: AccessStatus) -> Response:
        return self.error(401, _REASONS[reason], code="unauthorized")

    def rate_limited(self, retry_after_s: int, limit: LimitState | None) -> Response:
        headers = {"Retry-After": str(retry_after_s), **self.limit_headers(limit)}
        return self.error(429, "Too Many Requests", code="rate_limited", headers=headers)

    def server_error(self, status: int) -> Response:
        # What a load balancer in front of the API answers: HTML, not the API's JSON.
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                  504: "Gateway Timeout"}.get(status, "Server Error")
        return _html(status, f"{status} {reason}")

    def limit_headers(self, limit: LimitState | None) -> dict[str, str]:
        return {}

    def token_error(self, error: str, description: str, status: int = 400) -> Response:
        return json_response({"error": error, "error_description": description}, status)

    def token_body(self, grant: Grant, access: str, refresh: str | None,
                   ttl_s: int) -> Any:
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": ttl_s,
                                "scope": self.policy.scope_separator.join(grant.scopes)}
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    # -- request plumbing ---------------------------------------------------------------------

    @staticmethod
    def bearer(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    async def begin(self, request: Request, token: str | None = None) -> Call:
        """Authenticate a data request, then apply faults and rate limits (in that order)."""
        token = token if token is not None else self.bearer(request)
        found, status = self.state.lookup(token)
        if found is None or status != "ok" or token is None:
            self.state.stats[f"{self.name}:unauthorized"] += 1
            raise Reply(self.unauthorized(status))
        call = Call(found.grant, token, None)
        await self.apply_faults(call.wearer, "api", call)
        limit, retry = self.state.limiter.hit(
            self.name, self.settings.limits,
            {"app": self.client.client_id, "user": call.wearer.id, "token": token},
            self.state.registered_users(self.name), self.state.clock())
        call.limit = limit
        # Errors raised later in the handler carry the limit headers too (the app adds them).
        request.state.limit_headers = self.limit_headers(limit)
        if retry is not None:
            self.state.stats[f"{self.name}:rate_limited"] += 1
            raise Reply(self.rate_limited(retry, limit))
        return call

    async def apply_faults(self, wearer: Wearer | None, target: Target,
                           call: Call | None = None) -> None:
        fault = self.state.faults.take(self.name, wearer.id if wearer else None, target)
        if fault is None:
            return
        spec = fault.spec
        self.state.stats[f"{self.name}:fault:{spec.kind}"] += 1
        if spec.kind == "rate_limit":
            raise Reply(self.rate_limited(spec.retry_after_s, None))
        if spec.kind == "server_error":
            raise Reply(self.server_error(spec.status))
        if spec.kind == "timeout":
            await asyncio.sleep(spec.delay_s)
        elif spec.kind == "malformed":
            if call is None:
                raise Reply(Response(b'{"access_token": "', media_type="application/json"))
            call.malformed = True

    def finish(self, call: Call, payload: Any, status: int = 200) -> Response:
        body = orjson.dumps(payload)
        if call.malformed:
            body = body[: max(1, len(body) // 2)]  # a body cut off mid-way
        return Response(body, status_code=status, media_type="application/json",
                        headers=self.limit_headers(call.limit))

    async def form(self, request: Request) -> dict[str, str]:
        """The ``application/x-www-form-urlencoded`` body (plus the query, which loses)."""
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise Reply(self.token_error("invalid_request", "request body too large"))
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise Reply(self.token_error("invalid_request",
                                         "body must be application/x-www-form-urlencoded")
                        ) from None
        fields = dict(request.query_params)
        fields.update(pairs)
        return fields

    # -- OAuth --------------------------------------------------------------------------------

    def requested_scopes(self, raw: str | None) -> tuple[str, ...] | None:
        """The scopes asked for (all when none are named); None when one is unknown."""
        if not self.policy.scopes:
            return ()
        asked = tuple(s for s in (raw or "").replace(",", " ").split() if s)
        if not asked:
            return self.policy.scopes
        if any(s not in self.policy.scopes for s in asked):
            return None
        return asked

    async def authorize(self, request: Request) -> Response:
        """The consent page, approving at once: 302 to ``redirect_uri`` with code and state.

        Simulator-only parameters: ``sim_user`` (who logs in, id or index), ``sim_deny=1``
        (the user refuses), ``sim_scopes`` (the subset of scopes the user leaves ticked).
        """
        q = request.query_params
        if q.get("client_id") != self.client.client_id:
            return _html(400, "invalid_client: unknown client_id")
        redirect = q.get("redirect_uri") or next(iter(self.client.redirect_uris), None)
        if not redirect or not urlsplit(redirect).scheme:
            return _html(400, "invalid_request: redirect_uri is missing or not absolute")
        if self.client.redirect_uris and redirect not in self.client.redirect_uris:
            return _html(400, "invalid_request: redirect_uri is not registered")
        state = q.get("state")

        def refuse(error: str, description: str) -> Response:
            return RedirectResponse(add_query(redirect, error=error,
                                              error_description=description, state=state), 302)

        if q.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        if len(state or "") < self.policy.min_state_chars:
            return refuse("invalid_state",
                          f"state must be at least {self.policy.min_state_chars} characters")
        challenge = q.get("code_challenge") if self.policy.pkce != "none" else None
        if self.policy.pkce == "required" and not challenge:
            return refuse("invalid_request", "code_challenge is required (PKCE)")
        if challenge is not None:
            if q.get("code_challenge_method") != "S256":
                return refuse("invalid_request", "code_challenge_method must be S256")
            if not _PKCE_CHALLENGE.fullmatch(challenge):
                return refuse("invalid_request", "code_challenge is not a base64url SHA-256")
        scopes = self.requested_scopes(q.get("scope"))
        if scopes is None:
            return refuse("invalid_scope", "an unknown scope was requested")
        if q.get("sim_scopes") is not None:
            kept = set(q["sim_scopes"].replace(",", " ").split())
            scopes = tuple(s for s in scopes if s in kept)
        if q.get("sim_deny"):
            return refuse("access_denied", "the user denied access")
        wearer = self.state.choose_login(self.name, q.get("sim_user"))
        if wearer is None:
            return _html(400, "no simulated user is left to log in (or sim_user is unknown)")
        code = self.state.new_code(AuthCode(
            self.name, wearer, self.client.client_id, q.get("redirect_uri"), scopes, challenge,
            self.state.clock() + self.policy.code_ttl_s))
        self.state.stats[f"{self.name}:authorized"] += 1
        return RedirectResponse(add_query(redirect, code=code, state=state), 302)

    def authenticate_client(self, request: Request, form: Mapping[str, str]) -> bool:
        client = self.client
        if "basic" in self.policy.client_auth:
            header = request.headers.get("authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value.strip(), validate=True).decode(
                        "utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return False
                return _equal(user, client.client_id) and _equal(password, client.client_secret)
        if "post" in self.policy.client_auth and "client_secret" in form:
            return (_equal(form.get("client_id", ""), client.client_id)
                    and _equal(form["client_secret"], client.client_secret))
        return False

    async def token(self, request: Request) -> Response:
        form = await self.form(request)
        if not self.authenticate_client(request, form):
            ways = " or ".join(sorted(self.policy.client_auth))
            return self.token_error("invalid_client",
                                    f"client authentication failed (this provider takes {ways})",
                                    401)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self.exchange(form)
        if grant_type == "refresh_token" and self.policy.refresh != "none":
            return await self.refresh_grant(form)
        return self.token_error("unsupported_grant_type",
                                f"grant_type {grant_type!r} is not supported")

    async def exchange(self, form: Mapping[str, str]) -> Response:
        value = form.get("code", "")
        code = self.state.codes.get(value)
        if (code is None or code.provider != self.name or code.client_id != self.client.client_id
                or code.expires_at <= self.state.clock()):
            return self.token_error("invalid_grant",
                                    "authorization code is invalid, expired or already used")
        if code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri:
            return self.token_error("invalid_grant",
                                    "redirect_uri does not match the authorization request")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if not _PKCE_VERIFIER.fullmatch(verifier):
                return self.token_error("invalid_request", "code_verifier is missing or invalid")
            if not _equal(s256(verifier), code.challenge):
                return self.token_error("invalid_grant", "code_verifier does not match")
        await self.apply_faults(code.wearer, "token")
        del self.state.codes[value]  # single use, and only once the answer is certain
        grant = self.state.new_grant(self.name, code.wearer, code.client_id, code.scopes)
        ttl = self.settings.access_ttl_s
        access, refresh = self.state.issue(grant, self.policy, ttl)
        self.state.stats[f"{self.name}:token_issued"] += 1
        return json_response(self.token_body(grant, access, refresh, ttl))

    async def refresh_grant(self, form: Mapping[str, str]) -> Response:
        used = form.get("refresh_token", "")
        grant = self.state.find_refresh(used)
        if grant is None or grant.provider != self.name:
            self.state.stats[f"{self.name}:refresh_refused"] += 1
            return self.token_error("invalid_grant",
                                    "refresh token is invalid, revoked or already used")
        await self.apply_faults(grant.wearer, "token")
        ttl = self.settings.access_ttl_s
        access, refresh = self.state.rotate(grant, used, self.policy, ttl)
        self.state.stats[f"{self.name}:token_refreshed"] += 1
        return json_response(self.token_body(grant, access, refresh, ttl))

    # -- paging -------------------------------------------------------------------------------

    def page(self, items: list[Any], token: str | None, bound: str,
             size: int | None = None) -> tuple[list[Any], str | None]:
        """One page of ``items`` and the token of the next (None at the end)."""
        offset = 0
        if token:
            decoded = read_page_token(token)
            if decoded is None or decoded[1] != bound:
                raise Reply(self.error(400, "next token is invalid for this query",
                                       code="bad_request"))
            offset = decoded[0]
        size = size or self.settings.page_size
        chunk = items[offset: offset + size]
        more = offset + size < len(items)
        return chunk, page_token(offset + size, bound) if more else None


_REASONS: dict[AccessStatus, str] = {
    "missing": "missing access token",
    "invalid": "access token is invalid",
    "revoked": "access token has been revoked",
    "expired": "access token expired",
    "ok": "ok",
}


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"),
                               b.encode("utf-8", "surrogatepass"))
