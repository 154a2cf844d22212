"""One provider API call, made the way every call must be made.

* **Finite timeouts** on connecting and on the whole answer (``FETCH_CONNECT_TIMEOUT_S``,
  ``FETCH_TIMEOUT_S``); redirects are never followed (a token must not travel on).
* **Rate limits first**: the call counts itself against the provider's documented limits
  (``auren.connections.limits``) and waits when a window is full; a provider's own 429 is
  honoured with its ``Retry-After``. A wait up to ``FETCH_MAX_INLINE_WAIT_S`` is waited here;
  a longer one ends the call with :class:`~auren.errors.UpstreamRateLimited`, and the job is
  rescheduled for when the window opens.
* **Expired tokens**: a 401 (Withings: status 401 in an HTTP 200) makes the session ask for a
  fresh token once (the fetcher's single-flight refresh) and try again; a second 401 means the
  grant is gone (:class:`~auren.errors.GrantInvalid`).
* **Transient failures** (a 5xx, a timeout, a dropped connection, a body cut off or not JSON)
  are tried again twice with jittered backoff, then end the call with
  :class:`~auren.errors.UpstreamFailed`, and the job's own backoff takes over.
* Anything else the provider refuses (403, 400 …) is :class:`~auren.errors.UpstreamRejected`.

Each provider's answers are read by its dialect: OAuth's plain HTTP statuses, or Withings'
``{"status": N, "body": …}`` inside an HTTP 200. No token or body value is ever logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from auren.connections.limits import RateLimiter
from auren.connections.metrics import FetcherMetrics
from auren.errors import GrantInvalid, UpstreamFailed, UpstreamRateLimited, UpstreamRejected

Dialect = Literal["http", "withings"]
# Seconds a 429 or Withings' 601 without Retry-After is waited.
DEFAULT_RETRY_AFTER_S = 60.0
QUICK_RETRIES = 2
# Inline rate-limit waits one call may take before it gives the wait to its job.
_MAX_INLINE_WAITS = 3
# Withings' statuses that mean the token is not (or no longer) good.
_WITHINGS_AUTH = frozenset({100, 101, 102, 200, 401})
_WITHINGS_RATE = 601


@dataclass(frozen=True, slots=True)
class CallPolicy:
    timeout: httpx.Timeout
    max_inline_wait_s: float
    quick_backoff_s: float = 0.5


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


class _Auth(Exception):
    pass


class _Rate(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class _Transient(Exception):
    pass


TokenSource = Callable[[bool], Awaitable[str]]


def jitter(upper: float) -> float:
    """A random share of ``upper`` seconds: retries that failed together spread out. (Not
    cryptography: the standard generator is the right tool.)"""
    return random.uniform(0, max(0.0, upper))  # noqa: S311


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), 86_400.0)


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _Transient("the answer is not JSON (cut off or malformed)") from None


def read(dialect: Dialect, response: httpx.Response, allow: frozenset[int]) -> Any:
    """The answer's payload, or the exception saying what the answer means."""
    status = response.status_code
    if status == 429:
        raise _Rate(_retry_after(response.headers))
    if status == 401:
        raise _Auth()
    if status >= 500:
        raise _Transient(f"HTTP {status}")
    if status in allow:
        return None
    if status >= 300:
        raise UpstreamRejected(f"HTTP {status}")
    payload = _json(response)
    if dialect == "withings":
        if not isinstance(payload, dict) or not isinstance(payload.get("status"), int):
            raise _Transient("the answer has no Withings status (cut off or malformed)")
        code = payload["status"]
        if code == 0:
            return payload.get("body")
        if code in _WITHINGS_AUTH:
            raise _Auth()
        if code == _WITHINGS_RATE:
            raise _Rate(DEFAULT_RETRY_AFTER_S)
        if code in (522, 2555):  # Withings' timeout and unknown-error statuses
            raise _Transient(f"Withings status {code}")
        raise UpstreamRejected(f"Withings status {code}")
    return payload


class ProviderHttp:
    """The process's one HTTP client for provider APIs, with its limiter and metrics."""

    def __init__(self, policy: CallPolicy, limiter: RateLimiter, metrics: FetcherMetrics, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self.limiter = limiter
        self.metrics = metrics
        self._sleep = sleep
        self.client = httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False,
                                        trust_env=False,
                                        limits=httpx.Limits(max_connections=100))

    async def close(self) -> None:
        await self.client.aclose()

    def session(self, provider: str, user: str, base_url: str, dialect: Dialect,
                token: TokenSource | None) -> Session:
        return Session(self, provider, user, base_url.rstrip("/"), dialect, token)


class Session:
    """One job's calls to one provider's API on behalf of one person."""

    def __init__(self, http: ProviderHttp, provider: str, user: str, base_url: str,
                 dialect: Dialect, token: TokenSource | None) -> None:
        self._http = http
        self.provider = provider
        self._user = user
        self.base_url = base_url
        self._dialect = dialect
        self._token = token
        self.calls = 0

    def url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else self.base_url + path

    async def _gate(self) -> None:
        """Wait for room in the provider's documented limits (or give the wait to the job)."""
        http = self._http
        for _ in range(_MAX_INLINE_WAITS + 1):
            wait = await http.limiter.acquire(self.provider, self._user)
            if not wait:
                return
            http.metrics.waited(self.provider, "auren", wait)
            if wait > http.policy.max_inline_wait_s:
                raise UpstreamRateLimited(f"{self.provider}: AUREN's count of the documented "
                                          "rate limit is full", retry_after_s=int(wait) + 1)
            await http._sleep(wait)
        raise UpstreamRateLimited(f"{self.provider}: rate limit", retry_after_s=1)

    async def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                   data: Mapping[str, Any] | None = None, json: Any = None,
                   headers: Mapping[str, str] | None = None,
                   allow: frozenset[int] = frozenset(), bearer: bool = True) -> Any:
        """The payload of a successful answer (None for a status in ``allow``, or an empty
        body); raises the exception tree as the module's docstring says. ``bearer``: send
        the person's access token (not for calls the app makes in its own name)."""
        answer = await self.request(method, path, params=params, data=data, json=json,
                                    headers=headers, allow=allow, bearer=bearer)
        return answer.body

    async def request(self, method: str, path: str, *,
                      params: Mapping[str, Any] | None = None,
                      data: Mapping[str, Any] | None = None, json: Any = None,
                      headers: Mapping[str, str] | None = None,
                      allow: frozenset[int] = frozenset(), bearer: bool = True) -> Answer:
        """As :meth:`call`, with the answer's status and headers."""
        http = self._http
        url = self.url(path)
        refreshed = False
        failures = 0
        waits = 0
        last = "no answer"
        while True:
            await self._gate()
            request_headers = {"accept": "application/json", **(headers or {})}
            if bearer and self._token is not None:
                request_headers["authorization"] = f"Bearer {await self._token(refreshed)}"
            started = time.perf_counter()
            self.calls += 1
            try:
                response = await http.client.request(method, url, params=params, data=data,
                                                     json=json, headers=request_headers)
                http.metrics.request(self.provider, str(response.status_code),
                                     time.perf_counter() - started)
                return Answer(response.status_code, read(self._dialect, response, allow),
                              response.headers)
            except _Auth:
                if refreshed or self._token is None or not bearer:
                    raise GrantInvalid(f"{self.provider} refused the access token (401) after "
                                       "a refresh") from None
                refreshed = True
                continue
            except _Rate as exc:
                http.metrics.waited(self.provider, "provider", exc.seconds)
                waits += 1
                if exc.seconds > http.policy.max_inline_wait_s or waits > _MAX_INLINE_WAITS:
                    raise UpstreamRateLimited(f"{self.provider}: rate limited (429)",
                                              retry_after_s=int(exc.seconds) + 1) from None
                await http._sleep(exc.seconds)
                continue
            except _Transient as exc:
                last = str(exc)
            except httpx.TimeoutException:
                http.metrics.request(self.provider, "timeout", time.perf_counter() - started)
                last = "timed out"
            except httpx.HTTPError as exc:
                http.metrics.request(self.provider, "error", time.perf_counter() - started)
                last = type(exc).__name__
            failures += 1
            if failures > QUICK_RETRIES:
                raise UpstreamFailed(f"{self.provider}: {last}", retry_after_s=5)
            # Full jitter: calls that failed together do not come back together.
            await http._sleep(jitter(http.policy.quick_backoff_s * 2 ** failures))
