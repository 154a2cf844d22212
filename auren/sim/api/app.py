"""The provider API simulator as one ASGI app: every provider under its own path prefix, and
a small admin API (``/_sim/…``) that reveals new days, injects faults and shows what happened.

Configuration is a :class:`SimConfig` plus the one ``Settings`` model: notifications are signed
with the provider secrets the bridge reads, and the apps' client credentials come from the
``{PROVIDER}_CLIENT_ID`` / ``{PROVIDER}_CLIENT_SECRET`` fields when the settings have them (the
webhook secret is the client secret for Oura, WHOOP and Fitbit; Garmin's consumer key is its
client id), and otherwise from fixed defaults ``auren-sim-{provider}`` / ``sim-{provider}-secret``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from auren import __version__
from auren.errors import InvalidPayload, NotFound
from auren.services.kernel.problem import install_problem_handlers
from auren.settings import Settings
from auren.sim.api.core import (
    ClientApp,
    FaultSpec,
    Limit,
    Outgoing,
    ProviderApi,
    ProviderSettings,
    Reply,
    SimState,
)
from auren.sim.api.fitbit import FitbitApi
from auren.sim.api.garmin import GarminApi
from auren.sim.api.notify import Notifier
from auren.sim.api.oura import OuraApi
from auren.sim.api.polar import DEFAULT_TOKEN_TTL_S, PolarApi
from auren.sim.api.terra import TerraApi
from auren.sim.api.wearers import PROVIDERS, Wearer, build_wearers, default_end_date
from auren.sim.api.whoop import WhoopApi
from auren.sim.api.withings import WithingsApi

API_CLASSES: dict[str, type[ProviderApi]] = {
    "oura": OuraApi, "whoop": WhoopApi, "fitbit": FitbitApi, "polar": PolarApi,
    "withings": WithingsApi, "garmin": GarminApi, "terra": TerraApi}

# Per provider: authorize path, token path, API base path (all under /{provider}).
ENDPOINTS: dict[str, tuple[str | None, str | None, str]] = {
    "oura": ("/oauth/authorize", "/oauth/token", ""),
    "whoop": ("/oauth/oauth2/auth", "/oauth/oauth2/token", "/developer"),
    "fitbit": ("/oauth2/authorize", "/oauth2/token", ""),
    "polar": ("/oauth2/authorization", "/v2/oauth2/token", ""),
    "withings": ("/oauth2_user/authorize2", "/v2/oauth2", ""),
    "garmin": ("/oauth2Confirm", "/di-oauth2-service/oauth/token", ""),
    "terra": (None, None, "/v2"),
}


def default_settings() -> dict[str, ProviderSettings]:
    """Each provider's documented token life and rate limits (those marked unconfirmed in
    docs/simulator.md are the values one source states)."""
    return {
        "oura": ProviderSettings(86_400, 25, [Limit(scope="token", limit=5000, window_s=300)]),
        "whoop": ProviderSettings(3600, 10, [Limit(scope="app", limit=100, window_s=60),
                                             Limit(scope="app", limit=10_000, window_s=86_400)],
                                  variant={"recovery_id": "sleep"}),
        "fitbit": ProviderSettings(28_800, 100, [Limit(scope="user", limit=150, window_s=3600)]),
        "polar": ProviderSettings(DEFAULT_TOKEN_TTL_S, 100, [
            Limit(scope="app", limit=500, window_s=900, per_user=20),
            Limit(scope="app", limit=5000, window_s=86_400, per_user=100)]),
        "withings": ProviderSettings(10_800, 25, [Limit(scope="app", limit=120, window_s=60)]),
        "garmin": ProviderSettings(86_400, 100, [Limit(scope="app", limit=100, window_s=60)]),
        "terra": ProviderSettings(0, 100, []),
    }


def _first(settings: Settings, name: str) -> str | None:
    """The (first) value of a settings field that may not exist in this version of Settings:
    the connection settings (``{PROVIDER}_CLIENT_ID`` …) are read when they are there."""
    value = getattr(settings, name, None)
    if isinstance(value, tuple):
        value = value[0] if value else None
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value if isinstance(value, str) and value else None


def clients_from_settings(settings: Settings) -> dict[str, ClientApp]:
    clients = {}
    for provider in PROVIDERS:
        if provider == "terra":
            client_id = _first(settings, "terra_dev_id") or "auren-sim-terra"
            secret = _first(settings, "terra_api_key") or "sim-terra-api-key"
        else:
            client_id = _first(settings, f"{provider}_client_id") or f"auren-sim-{provider}"
            secret = _first(settings, f"{provider}_client_secret") or f"sim-{provider}-secret"
        clients[provider] = ClientApp(client_id, secret)
    return clients


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    users: int = 20
    history_days: int = 60
    future_days: int = 30
    end_date: date | None = None  # the last visible day at start; default: two days ago
    bridge_url: str | None = None  # where notifications go: {bridge_url}/webhooks/{provider}
    notify_timeout_s: float = 10.0
    clients: dict[str, ClientApp] | None = None  # None: clients_from_settings
    redirect_uris: tuple[str, ...] = field(default=())


def provider_urls(base_url: str) -> dict[str, str]:
    """The settings that point the bridge at this simulator, by environment variable name."""
    base = base_url.rstrip("/")
    urls = {}
    for provider, (authorize, token, api) in ENDPOINTS.items():
        prefix = f"{base}/{provider}"
        if authorize:
            urls[f"{provider.upper()}_AUTHORIZE_URL"] = prefix + authorize
        if token:
            urls[f"{provider.upper()}_TOKEN_URL"] = prefix + token
        urls[f"{provider.upper()}_API_URL"] = prefix + api
    return urls


class ProviderPatch(BaseModel):
    access_ttl_s: int | None = Field(default=None, ge=1, le=20 * 365 * 86_400)
    page_size: int | None = Field(default=None, ge=1, le=1000)
    limits: list[Limit] | None = None
    subscriptions_required: bool | None = None
    variant: dict[str, str] | None = None


class _RequestCounter:
    """Counts answers per provider prefix and status (``GET /_sim/stats``)."""

    def __init__(self, app: Any, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: MutableMapping[str, Any],
                       receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        segment = scope["path"].split("/", 2)[1] if scope["path"].count("/") else ""

        async def counting(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and segment in API_CLASSES:
                self.state.stats[f"{segment}:http:{message['status']}"] += 1
            await send(message)

        await self.app(scope, receive, counting)


def create_app(config: SimConfig | None = None, settings: Settings | None = None) -> FastAPI:
    config = config or SimConfig()
    settings = settings or Settings()
    wearers = build_wearers(config.users, config.history_days, config.future_days, config.seed,
                            config.end_date or default_end_date())
    clients = config.clients or clients_from_settings(settings)
    for client in clients.values():
        client.redirect_uris = config.redirect_uris or client.redirect_uris
    state = SimState(wearers, clients, default_settings())
    apis = {name: cls(state) for name, cls in API_CLASSES.items()}
    notifier = Notifier(state, settings, config.bridge_url, config.notify_timeout_s)

    def send_later(provider: str, wearer: Wearer | None, items: list[Outgoing]) -> None:
        notifier.later(notifier.send(provider, wearer, items))

    for api in apis.values():
        if isinstance(api, GarminApi | TerraApi):
            api.send = send_later

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await notifier.start()
        for api in apis.values():
            api.http = notifier.http
        try:
            yield
        finally:
            await notifier.close(settings.shutdown_timeout_s)

    app = FastAPI(title="AUREN provider API simulator", version=__version__, lifespan=lifespan,
                  description="Oura, WHOOP, Fitbit, Polar, Withings, Garmin and Terra as their "
                              "APIs answer, from synthetic wearers; admin under /_sim.")
    install_problem_handlers(app)

    async def reply(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Reply)  # noqa: S101 - registered for Reply only
        for name, value in getattr(request.state, "limit_headers", {}).items():
            exc.response.headers.setdefault(name, value)
        return exc.response

    app.add_exception_handler(Reply, reply)
    for name, api in apis.items():
        app.include_router(api.router(), prefix=f"/{name}")
    app.state.sim = state
    app.state.apis = apis
    app.state.notifier = notifier

    def wearer_or_404(ref: str) -> Wearer:
        wearer = state.wearer(ref)
        if wearer is None:
            raise NotFound(f"no simulated user {ref[:64]!r}")
        return wearer

    def provider_or_404(name: str) -> ProviderApi:
        api = apis.get(name)
        if api is None:
            raise NotFound(f"unknown provider {name[:32]!r}; known: {', '.join(apis)}")
        return api

    async def advance(wearer: Wearer, days: int) -> dict[str, Any]:
        revealed = wearer.advance(days, state.clock())
        sent: list[dict[str, Any]] = []
        if revealed:
            for api in apis.values():
                sent += await notifier.send(api.name, wearer,
                                            api.notifications(wearer, revealed))
        return {"user": wearer.id, "revealed": [r.day.isoformat() for r in revealed],
                "visible_through": str(wearer.last_day), "notifications": sent}

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, Any]:
        return {"status": "pass", "users": len(state.wearers)}

    @app.get("/_sim/config", tags=["simulator"])
    async def sim_config(request: Request) -> dict[str, Any]:
        """The seed and calendar (to regenerate what is served), and per provider its URLs,
        client id and run-time settings."""
        base = str(request.base_url).rstrip("/")
        urls = provider_urls(base)
        return {"seed": config.seed, "users": config.users,
                "history_days": config.history_days, "future_days": config.future_days,
                "end_date": str(wearers[0].history.days[config.history_days - 1].day)
                if config.history_days else None,
                "bridge_url": config.bridge_url, "settings_env": urls,
                "providers": {name: {"client_id": clients[name].client_id,
                                     "access_ttl_s": s.access_ttl_s, "page_size": s.page_size,
                                     "limits": [limit.model_dump() for limit in s.limits],
                                     "subscriptions_required": s.subscriptions_required,
                                     "variant": s.variant,
                                     "signed": name == "withings" or name in notifier.targets,
                                     "not_signed_because": notifier.skipped.get(name)}
                              for name, s in state.settings.items()}}

    @app.get("/_sim/users", tags=["simulator"])
    async def users() -> list[dict[str, Any]]:
        return [{"id": w.id, "index": w.index,
                 "first_day": str(w.history.days[0].day), "visible_through": str(w.last_day),
                 "horizon": str(w.history.days[-1].day),
                 "provider_user_ids": {p: w.provider_user_id(p) for p in PROVIDERS},
                 "grants": [g.as_dict() for g in state.grants.values() if g.wearer is w]}
                for w in state.wearers]

    @app.post("/_sim/users/{user}/advance", tags=["simulator"])
    async def advance_user(user: str, days: int = Query(1, ge=1, le=366)) -> dict[str, Any]:
        """Reveal the user's next days and send every connected provider's notifications."""
        return await advance(wearer_or_404(user), days)

    @app.post("/_sim/advance", tags=["simulator"])
    async def advance_all(days: int = Query(1, ge=1, le=366)) -> list[dict[str, Any]]:
        return [await advance(w, days) for w in state.wearers]

    @app.post("/_sim/users/{user}/revoke", tags=["simulator"])
    async def revoke(user: str, provider: str) -> dict[str, Any]:
        """The user withdraws access at the provider; its revocation notice goes out."""
        api = provider_or_404(provider)
        wearer = wearer_or_404(user)
        grants = state.grants_matching(api.name, wearer.id)
        sent: list[dict[str, Any]] = []
        for grant in grants:
            notes = api.revocation_notifications(grant)
            state.revoke(grant)
            sent += await notifier.send(api.name, wearer, notes)
        return {"revoked": len(grants), "notifications": sent}

    @app.post("/_sim/providers/{provider}/login", tags=["simulator"])
    async def queue_login(provider: str, user: str) -> dict[str, Any]:
        """The next consent at ``provider`` (without ``sim_user``) logs in as ``user``."""
        api = provider_or_404(provider)
        state.logins.setdefault(api.name, deque()).append(wearer_or_404(user))
        return {"queued": [w.id for w in state.logins[api.name]]}

    @app.patch("/_sim/providers/{provider}", tags=["simulator"])
    async def patch_provider(provider: str, patch: ProviderPatch) -> dict[str, Any]:
        api = provider_or_404(provider)
        current = api.settings
        for key, value in patch.model_dump(exclude_none=True).items():
            if key == "limits":
                value = [Limit.model_validate(item) for item in value]
                state.limiter.reset(api.name)  # new limits start with empty windows
            setattr(current, key, value)
        return {"provider": api.name, "access_ttl_s": current.access_ttl_s,
                "page_size": current.page_size,
                "limits": [limit.model_dump() for limit in current.limits],
                "subscriptions_required": current.subscriptions_required,
                "variant": current.variant}

    @app.post("/_sim/faults", tags=["simulator"], status_code=201)
    async def add_fault(spec: FaultSpec) -> dict[str, Any]:
        """Inject a fault. ``revoked`` and ``expired_token`` act at once on the matching
        grants (``applied``); the others wait for matching requests."""
        if spec.provider is not None:
            provider_or_404(spec.provider)
        if spec.user is not None:
            spec.user = wearer_or_404(spec.user).id
        if spec.kind in ("revoked", "expired_token"):
            grants = state.grants_matching(spec.provider, spec.user)
            if not grants:
                raise InvalidPayload("no live grant matches provider and user")
            for grant in grants:
                if spec.kind == "revoked":
                    state.revoke(grant)
                else:
                    state.expire(grant)
            return {"kind": spec.kind, "applied": len(grants)}
        return state.faults.add(spec).as_dict()

    @app.get("/_sim/faults", tags=["simulator"])
    async def list_faults() -> list[dict[str, Any]]:
        return state.faults.listing()

    @app.delete("/_sim/faults", tags=["simulator"])
    async def clear_faults() -> dict[str, int]:
        return {"cleared": state.faults.clear()}

    @app.delete("/_sim/faults/{fault_id}", tags=["simulator"])
    async def clear_fault(fault_id: int) -> dict[str, int]:
        cleared = state.faults.clear(fault_id)
        if not cleared:
            raise NotFound(f"no fault {fault_id}")
        return {"cleared": cleared}

    @app.get("/_sim/notifications", tags=["simulator"])
    async def notifications(provider: str | None = None,
                            user: str | None = None) -> list[dict[str, Any]]:
        return [n for n in state.notifications
                if (provider is None or n["provider"] == provider)
                and (user is None or n["user"] == user)]

    @app.get("/_sim/stats", tags=["simulator"])
    async def stats() -> dict[str, int]:
        """Counters: answers per provider and status, tokens issued and refreshed, refused
        refreshes, faults hit, notifications by status."""
        return dict(sorted(state.stats.items()))

    @app.get("/_sim/grants", tags=["simulator"])
    async def grants() -> list[dict[str, Any]]:
        return [g.as_dict() for g in state.grants.values()]

    app.add_middleware(_RequestCounter, state=state)
    return app
