"""Each provider's OAuth 2.0 authorization code flow, through authlib.

authlib builds the authorization URL (with PKCE's S256 challenge where the provider takes one),
exchanges the code and refreshes tokens, authenticating AUREN's app the way each provider
wants (HTTP Basic or the form body). Providers that deviate from OAuth's wire format are
corrected with authlib's compliance hooks, in one hook per client so their order is fixed:

* every token answer: a 429 is the provider's rate limit (``Retry-After``), a 5xx or a body
  that is not a JSON object is a failure to retry, never a token;
* Withings answers HTTP 200 with ``{"status": N, "body": …}``: status 0 is the token, 601 its
  rate limit, anything else an error in OAuth's shape;
* Fitbit's token errors are ``{"errors": [{"errorType", "message"}], "success": false}``;
* an error answer in no known shape still becomes an OAuth error (``invalid_grant`` for 400 and
  401), so that a refused grant is always told apart from an outage.

Errors leave as the exception tree: :class:`~auren.errors.GrantInvalid` (the person's grant is
gone: a code, a refresh token refused), :class:`~auren.errors.UpstreamFailed` (retry later) or
:class:`~auren.errors.UpstreamRejected` (AUREN's request or credentials refused for good).
Token values never reach a log line or an error message.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import authlib.deprecate  # noqa: F401 - installs its "always" filter before ours below
import httpx
import orjson

from auren.connections.base import Tokens
from auren.errors import GrantInvalid, UpstreamFailed, UpstreamRateLimited, UpstreamRejected

with warnings.catch_warnings():
    # authlib 1.9 prefers its httpx2 fork and warns when it falls back to httpx, which it
    # still supports; AUREN uses httpx everywhere else.
    warnings.filterwarnings("ignore", "The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

AuthMethod = Literal["client_secret_post", "client_secret_basic"]
# Errors that mean the person's grant (a code, a refresh or access token) is no longer good.
_GRANT_ERRORS = frozenset({"invalid_grant", "invalid_token", "expired_token", "access_denied",
                           "unauthorized"})
_DEFAULT_RETRY_S = 60


@dataclass(frozen=True, slots=True)
class OAuthSpec:
    provider: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None
    auth_method: AuthMethod
    pkce: bool
    # Extra form fields of every token request (Withings: action=requesttoken).
    token_params: Mapping[str, str] = field(default_factory=dict)
    # The shape of the token answers: OAuth's, Withings' envelope or Fitbit's error format.
    dialect: Literal["oauth", "withings", "fitbit"] = "oauth"
    # Polar issues no refresh tokens (a refresh grant is unsupported).
    refreshable: bool = True


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A token endpoint's answer: the tokens, the scopes granted and the other fields (the
    provider's user id travels there for Fitbit, Polar and Withings)."""

    tokens: Tokens
    scopes: tuple[str, ...]
    extra: dict[str, Any]


def _clean(text: Any) -> str:
    """An error description as OAuth allows it (authlib refuses other characters)."""
    value = str(text or "")[:200]
    return "".join(c for c in value if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isascii() and value.isdigit() else _DEFAULT_RETRY_S


def _as_oauth(spec: OAuthSpec, response: httpx.Response) -> httpx.Response:
    """The compliance hook of every token answer (see the module's docstring)."""
    name = spec.provider
    if response.status_code == 429:
        raise UpstreamRateLimited(f"{name}: the token endpoint's rate limit",
                                  retry_after_s=_retry_after(response))
    if response.status_code >= 500:
        raise UpstreamFailed(f"{name}: the token endpoint answered {response.status_code}",
                             retry_after_s=5)
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise UpstreamFailed(f"{name}: the token endpoint's answer is not JSON",
                             retry_after_s=5) from None
    if not isinstance(payload, dict):
        raise UpstreamFailed(f"{name}: the token endpoint's answer is not an object",
                             retry_after_s=5)
    if spec.dialect == "withings":
        status = payload.get("status")
        if status == 0 and isinstance(payload.get("body"), dict):
            payload = payload["body"]
        elif status == 601:
            raise UpstreamRateLimited(f"{name}: too many requests (601)",
                                      retry_after_s=_DEFAULT_RETRY_S)
        else:
            kind = "invalid_request" if status in (503, 2554) else "invalid_grant"
            payload = {"error": kind, "error_description": _clean(payload.get("error"))}
    elif spec.dialect == "fitbit" and isinstance(payload.get("errors"), list):
        first = payload["errors"][0] if payload["errors"] else {}
        first = first if isinstance(first, dict) else {}
        payload = {"error": str(first.get("errorType") or "invalid_request"),
                   "error_description": _clean(first.get("message"))}
    if "error" in payload:
        payload["error_description"] = _clean(payload.get("error_description"))
    elif response.status_code >= 400 or "access_token" not in payload:
        kind = "invalid_grant" if response.status_code in (400, 401) else "invalid_response"
        payload = {"error": kind, "error_description": f"HTTP {response.status_code}"}
    response._content = orjson.dumps(payload)
    return response


def _client(spec: OAuthSpec, redirect_uri: str | None, bounds: httpx.Timeout
            ) -> AsyncOAuth2Client:
    client = AsyncOAuth2Client(
        spec.client_id, spec.client_secret, token_endpoint_auth_method=spec.auth_method,
        scope=spec.scope, redirect_uri=redirect_uri,
        code_challenge_method="S256" if spec.pkce else None, timeout=bounds,
        follow_redirects=False, trust_env=False)

    def hook(response: httpx.Response) -> httpx.Response:
        return _as_oauth(spec, response)

    client.register_compliance_hook("access_token_response", hook)
    client.register_compliance_hook("refresh_token_response", hook)
    return client


def authorization_url(spec: OAuthSpec, redirect_uri: str, state: str,
                      verifier: str | None, bounds: httpx.Timeout) -> str:
    client = _client(spec, redirect_uri, bounds)
    url, _ = client.create_authorization_url(spec.authorize_url, state=state,
                                             code_verifier=verifier if spec.pkce else None)
    return str(url)


def _answer(spec: OAuthSpec, token: Mapping[str, Any], now: datetime,
            previous_refresh: str | None = None) -> TokenAnswer:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise UpstreamFailed(f"{spec.provider}: the token answer has no access token",
                             retry_after_s=5)
    expires_in = token.get("expires_in")
    expires_at = (now + timedelta(seconds=float(expires_in))
                  if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
                  and expires_in > 0 else None)
    refresh = token.get("refresh_token")
    scope = token.get("scope")
    scopes = tuple(s for s in str(scope).replace(",", " ").split() if s) if scope else ()
    extra = {k: v for k, v in token.items()
             if k not in ("access_token", "refresh_token", "expires_in", "expires_at",
                          "scope", "token_type")}
    return TokenAnswer(Tokens(access, refresh if isinstance(refresh, str) and refresh else
                              previous_refresh, expires_at,
                              str(token.get("token_type") or "bearer").lower()), scopes, extra)


async def _call(spec: OAuthSpec, what: str, coroutine: Any) -> Mapping[str, Any]:
    try:
        return dict(await coroutine)
    except OAuthError as exc:
        error = str(exc.error or "")
        if error in _GRANT_ERRORS:
            raise GrantInvalid(f"{spec.provider} refused the {what}: {error}") from None
        if error == "invalid_client":
            raise UpstreamRejected(f"{spec.provider} refused AUREN's client credentials "
                                   f"({what})") from None
        raise UpstreamRejected(f"{spec.provider} refused the {what}: {error or 'error'}") \
            from None
    except httpx.TimeoutException:
        raise UpstreamFailed(f"{spec.provider}: the token endpoint timed out",
                             retry_after_s=5) from None
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"{spec.provider}: token endpoint {type(exc).__name__}",
                             retry_after_s=5) from None
    except ValueError:
        raise UpstreamFailed(f"{spec.provider}: the token endpoint's answer is unusable",
                             retry_after_s=5) from None


async def exchange(spec: OAuthSpec, redirect_uri: str, code: str, verifier: str | None,
                   bounds: httpx.Timeout) -> TokenAnswer:
    """The authorization code for tokens."""
    now = datetime.now(UTC)
    async with _client(spec, redirect_uri, bounds) as client:
        token = await _call(spec, "authorization code", client.fetch_token(
            spec.token_url, grant_type="authorization_code", code=code,
            code_verifier=verifier if spec.pkce else None, **spec.token_params))
    return _answer(spec, token, now)


async def refresh(spec: OAuthSpec, refresh_token: str, bounds: httpx.Timeout) -> TokenAnswer:
    """New tokens for ``refresh_token``. Providers that rotate refresh tokens answer a new
    one; one that answers none keeps the old."""
    now = datetime.now(UTC)
    async with _client(spec, None, bounds) as client:
        token = await _call(spec, "refresh token", client.refresh_token(
            spec.token_url, refresh_token=refresh_token, **spec.token_params))
    return _answer(spec, token, now, previous_refresh=refresh_token)
