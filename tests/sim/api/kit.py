"""Helpers for the provider API simulator's tests: a real ``auren sim providers`` process, a
capturing notification receiver, and each provider's OAuth dance through authlib.

Expected values come from ``generate_users`` with the simulator's seed and calendar and from
the providers' documented units, never from the simulator's own rendering code.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from authlib.common.security import generate_token

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 fork and warns (through an "always" filter of its own)
    # when it falls back to httpx, which it still supports; AUREN uses httpx.
    import authlib.deprecate  # noqa: F401 - installs its filter before ours

    warnings.filterwarnings("ignore", "The httpx module is deprecated")
    from authlib.integrations.httpx_client import OAuth2Client

from auren.settings import Settings
from auren.sim.api.app import clients_from_settings
from auren.sim.wearers import UserHistory, generate_users
from tests.helpers import free_port

SEED = 7
USERS = 80  # each test module uses its own 16 (tests/sim/api/test_*.py: BASE)
DAYS = 40
FUTURE = 10
END = date(2026, 3, 1)
REDIRECT = "http://127.0.0.1:9/callback"

# The secrets a bridge would be configured with; the simulator reads the same variables.
ENV = {
    "OURA_CLIENT_SECRET": "oura-client-secret",
    "WHOOP_CLIENT_SECRET": "whoop-client-secret",
    "FITBIT_CLIENT_SECRET": "fitbit-client-secret",
    "POLAR_SIGNATURE_SECRET": "polar-signature-secret",
    "TERRA_SIGNING_SECRET": "terra-signing-secret",
    "GARMIN_CLIENT_ID": "garmin-consumer-key",
    "WITHINGS_ENABLED": "true",
    "OURA_VERIFICATION_TOKEN": "oura-verify",
    "FITBIT_VERIFY_CODE": "fitbit-verify",
}
SETTINGS = Settings.model_validate({k.lower(): v for k, v in ENV.items()})
CLIENTS = clients_from_settings(SETTINGS)


def histories() -> list[UserHistory]:
    """What the simulator generated: the same call with its seed and calendar."""
    return generate_users(USERS, DAYS + FUTURE, SEED, end_date=END + timedelta(days=FUTURE))


# --- a notification receiver --------------------------------------------------------------------


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Captured] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> list[Captured]:
        with self.lock:
            taken, self.requests[:] = list(self.requests), []
        return taken

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Captured]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    break
            time.sleep(0.05)
        return self.take()


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """An HTTP server that records every request and answers like a bridge (204 for Fitbit,
    200 for HEAD and Withings, 202 otherwise)."""
    port = free_port()
    sink = Receiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def _record(self, body: bytes) -> None:
            with sink.lock:
                sink.requests.append(Captured(self.command, self.path,
                                              {k.lower(): v for k, v in self.headers.items()},
                                              body))

        def do_HEAD(self) -> None:
            self._record(b"")
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            self._record(body)
            status = 204 if "fitbit" in self.path else 200 if "withings" in self.path else 202
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the simulator process ------------------------------------------------------------------------


@dataclass
class Sim:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.url + path, timeout=30, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()

    def advance(self, user: str, days: int = 1) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("POST", f"/_sim/users/{user}/advance",
                                            params={"days": days})
        return result

    def fault(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("POST", "/_sim/faults", json=spec)
        return result

    def patch(self, provider: str, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("PATCH", f"/_sim/providers/{provider}", json=values)
        return result


@contextlib.contextmanager
def run_sim(tmp_path: Path, bridge: str | None = None,
            env: dict[str, str] | None = None, *, port: int | None = None,
            end: date = END, users: int = USERS) -> Iterator[Sim]:
    """``auren sim providers`` on a free port (or ``port``); stopped by its pid."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items()
                if not k.endswith(("_SECRET", "_URL", "_KEYS", "_SERVERS", "_TOKEN", "_CODE",
                                   "_CLIENT_ID", "_IPS", "_ENABLED"))}
    full_env.update(ENV)
    full_env.update(env or {})
    args = [sys.executable, "-m", "auren", "sim", "providers", "--port", str(port),
            "--seed", str(SEED), "--users", str(users), "--days", str(DAYS),
            "--future-days", str(FUTURE), "--end-date", end.isoformat()]
    if bridge:
        args += ["--bridge", bridge]
    log_path = tmp_path / f"sim-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    sim = Sim(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("simulator exited: " + log_path.read_text(errors="replace"))
            try:
                if httpx.get(sim.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("simulator not ready: " + log_path.read_text(errors="replace"))
            time.sleep(0.1)
        yield sim
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# --- OAuth dances -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    authorize: str
    token: str
    auth_method: str  # authlib's token_endpoint_auth_method
    pkce: bool
    scope: str | None
    enveloped: bool = False  # Withings: {"status": 0, "body": {...}} and action=requesttoken


FLOWS = {
    "oura": Flow("/oura/oauth/authorize", "/oura/oauth/token", "client_secret_post", True,
                 "daily spo2 personal heartrate"),
    "whoop": Flow("/whoop/oauth/oauth2/auth", "/whoop/oauth/oauth2/token", "client_secret_post",
                  True, "read:recovery read:sleep read:cycles read:profile offline"),
    "fitbit": Flow("/fitbit/oauth2/authorize", "/fitbit/oauth2/token", "client_secret_basic",
                   True, "sleep heartrate activity profile temperature oxygen_saturation "
                         "respiratory_rate"),
    "polar": Flow("/polar/oauth2/authorization", "/polar/v2/oauth2/token",
                  "client_secret_basic", False, "accesslink.read_all"),
    "withings": Flow("/withings/oauth2_user/authorize2", "/withings/v2/oauth2",
                     "client_secret_post", False, "user.metrics,user.activity,user.sleepevents",
                     enveloped=True),
    "garmin": Flow("/garmin/oauth2Confirm", "/garmin/di-oauth2-service/oauth/token",
                   "client_secret_post", True, None),
}


def _unwrap(response: httpx.Response) -> httpx.Response:
    """Withings' token answers are enveloped; an OAuth client sees the body (or an error)."""
    payload = orjson.loads(response.content)
    if payload.get("status") == 0:
        inner = payload["body"]
    else:
        inner = {"error": str(payload.get("status")), "error_description": payload.get("error")}
    response._content = orjson.dumps(inner)
    return response


@dataclass
class Connection:
    provider: str
    user: str | None
    client: OAuth2Client
    token: dict[str, Any]
    sim: Sim

    @property
    def access(self) -> str:
        return str(self.token["access_token"])

    def url(self, path: str) -> str:
        return f"{self.sim.url}/{self.provider}{path}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url(path), headers={"authorization": f"Bearer {self.access}",
                                                  **kwargs.pop("headers", {})},
                         timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url(path), headers={"authorization": f"Bearer {self.access}",
                                                   **kwargs.pop("headers", {})},
                          timeout=kwargs.pop("timeout", 30), **kwargs)

    def refresh(self) -> dict[str, Any]:
        flow = FLOWS[self.provider]
        extra = {"action": "requesttoken"} if flow.enveloped else {}
        self.token = dict(self.client.refresh_token(self.sim.url + flow.token,
                                                    refresh_token=self.token["refresh_token"],
                                                    **extra))
        return self.token


# Every OAuth client a test made; closed after the test (tests/sim/api/conftest.py).
OPEN_CLIENTS: list[OAuth2Client] = []


def oauth_client(provider: str, **kwargs: Any) -> OAuth2Client:
    flow = FLOWS[provider]
    client = CLIENTS[provider]
    oauth = OAuth2Client(client.client_id, client.client_secret, scope=flow.scope,
                         redirect_uri=REDIRECT, token_endpoint_auth_method=flow.auth_method,
                         code_challenge_method="S256" if flow.pkce else None, timeout=30,
                         **kwargs)
    OPEN_CLIENTS.append(oauth)
    if flow.enveloped:
        oauth.register_compliance_hook("access_token_response", _unwrap)
        oauth.register_compliance_hook("refresh_token_response", _unwrap)
    return oauth


def authorize(sim: Sim, provider: str, user: str | None, *, verifier: str | None = None,
              **params: str) -> tuple[OAuth2Client, str, str, str | None]:
    """The consent redirect: (client, Location, state, code_verifier)."""
    flow = FLOWS[provider]
    oauth = oauth_client(provider)
    verifier = verifier or (generate_token(64) if flow.pkce else None)
    if user is not None:
        params["sim_user"] = user
    url, state = oauth.create_authorization_url(sim.url + flow.authorize,
                                                code_verifier=verifier, **params)
    answer = httpx.get(url, follow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text
    return oauth, answer.headers["location"], state, verifier


def connect(sim: Sim, provider: str, user: str | None, **params: str) -> Connection:
    """The whole dance: consent, code exchange (PKCE where the provider has it)."""
    oauth, location, state, verifier = authorize(sim, provider, user, **params)
    extra = {"action": "requesttoken"} if FLOWS[provider].enveloped else {}
    token = oauth.fetch_token(sim.url + FLOWS[provider].token, authorization_response=location,
                              state=state, code_verifier=verifier, **extra)
    return Connection(provider, user, oauth, dict(token), sim)


def terra_headers() -> dict[str, str]:
    client = CLIENTS["terra"]
    return {"dev-id": client.client_id, "x-api-key": client.client_secret}


def user_id(index: int) -> str:
    return f"sim-{SEED}-{index:04d}"
