"""Who may look at the console and who may act: logins, session cookies, CSRF, roles.

* **Logins** are ``GATEWAY_CONSOLE_USERS`` entries ``name:role:hash`` (``name:hash`` is a
  viewer), separated by whitespace or ``;`` (an Argon2 hash contains commas), with Argon2id
  hashes in the PHC string format (``auren console hash-password``), verified by argon2-cffi;
  or one of the service keys (``AUREN_API_KEYS``), whose role is
  ``GATEWAY_CONSOLE_KEY_ROLE`` (viewer unless set otherwise, or none to refuse keys).
* **Roles**: a viewer reads everything; an operator may also start ``auren validate`` and
  chat with NEUROS as a chosen user. Read-only is the default: acting needs the role.
* **Sessions** are an HS256 JSON Web Token (PyJWT) in a cookie that is ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/`` and ``Secure`` behind TLS (``https``, or
  ``X-Forwarded-Proto: https`` from a trusted proxy; ``GATEWAY_CONSOLE_SECURE_COOKIE``
  overrides), valid for ``GATEWAY_CONSOLE_SESSION_S``. It is signed with
  ``GATEWAY_CONSOLE_SECRET``, or a key drawn at start when that is unset (sessions then end with
  the process and are not shared between workers). Signing out revokes the token in this
  process.
* **CSRF**: every request that changes something carries the session's own random token in
  ``X-CSRF-Token`` (the page reads it from ``/console/api/session``, which another site cannot
  read), and an ``Origin`` or ``Sec-Fetch-Site`` that is not this site is refused; the login
  takes JSON only (a cross-site form cannot send it without a preflight) under the same origin
  rule. Failed logins are limited per client.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from auren.errors import Forbidden, RateLimited, Unauthorized
from auren.settings import Settings, secret_values

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
COOKIE = "auren_console"
CSRF_HEADER = "x-csrf-token"
_ALGORITHM = "HS256"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# Failed logins per client before 429, and the window they are counted in.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
_MAX_CLIENTS = 10_000
_HASHER = PasswordHasher()  # RFC 9106's low-memory profile: Argon2id, t=3, m=64 MiB, p=4


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: Role
    csrf: str
    token_id: str
    expires: int

    @property
    def may_act(self) -> bool:
        return self.role == "operator"

    def as_dict(self) -> dict[str, object]:
        return {"user": self.user, "role": self.role, "csrf": self.csrf,
                "expires": self.expires, "may": {"validate": self.may_act,
                                                 "chat": self.may_act}}


def hash_password(password: str) -> str:
    """An Argon2id PHC string for ``GATEWAY_CONSOLE_USERS``."""
    return _HASHER.hash(password)


def parse_accounts(text: str) -> dict[str, Account]:
    """``name:role:hash`` entries (``name:hash`` is a viewer), whitespace- or ``;``-separated.

    Raises:
        ValueError: a malformed entry, an unknown role, a hash that is not Argon2, a name
            given twice (a start-up error: a login must never be silently dropped).
    """
    accounts: dict[str, Account] = {}
    for entry in re.split(r"[\s;]+", text.strip()):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role: str = "viewer"
        if rest and not rest.startswith("$"):
            role, _, rest = rest.partition(":")
        if not _NAME.fullmatch(name):
            raise ValueError(f"GATEWAY_CONSOLE_USERS: {name!r} is not a login name "
                             "(1 to 64 of A-Z a-z 0-9 _ . @ -)")
        if role not in ROLES:
            raise ValueError(f"GATEWAY_CONSOLE_USERS: {name}: role must be viewer or operator")
        if not rest.startswith("$argon2"):
            raise ValueError(f"GATEWAY_CONSOLE_USERS: {name}: the hash must be an Argon2 PHC "
                             "string (auren console hash-password)")
        if name in accounts:
            raise ValueError(f"GATEWAY_CONSOLE_USERS: {name} is given twice")
        accounts[name] = Account(name, "operator" if role == "operator" else "viewer", rest)
    return accounts


class Authenticator:
    """Logins checked, sessions issued and read, CSRF tokens compared, failures limited."""

    def __init__(self, settings: Settings) -> None:
        users = settings.gateway_console_users
        self.accounts = parse_accounts(users.get_secret_value()) if users else {}
        self._keys = secret_values(settings.auren_api_keys)
        self._key_role: Role | None = (None if settings.gateway_console_key_role == "none"
                                       else settings.gateway_console_key_role)
        secret = settings.gateway_console_secret
        self._secret = (secret.get_secret_value() if secret is not None
                        else secrets.token_urlsafe(48))
        self.lifetime_s = settings.gateway_console_session_s
        self._secure = settings.gateway_console_secure_cookie
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._revoked: dict[str, int] = {}  # token id -> expiry, until it would expire anyway
        # A hash to verify against when the login name is unknown: the answer takes as long.
        self._decoy = _HASHER.hash(secrets.token_urlsafe(16))

    @property
    def configured(self) -> bool:
        """Whether anyone can sign in at all (logins, or service keys with a role)."""
        return bool(self.accounts) or (bool(self._keys) and self._key_role is not None)

    # --- login ------------------------------------------------------------------------------

    async def login(self, client: str, *, user: str | None, password: str | None,
                    key: str | None) -> Session:
        """A new session for a valid login name and password, or a service key.

        Raises:
            RateLimited: too many failures from this client within the window.
            Unauthorized: anything else wrong (one message: nothing says which part).
        """
        self._check_failures(client)
        role: Role | None = None
        name = ""
        if key is not None:
            if self._key_role is not None and any(
                    hmac.compare_digest(key.encode(), known.encode()) for known in self._keys):
                role, name = self._key_role, "service key"
        elif user is not None and password is not None:
            account = self.accounts.get(user)
            # Argon2 costs tens of ms of CPU: off the event loop.
            if await asyncio.to_thread(_verify, account.password_hash if account else
                                       self._decoy, password) and account is not None:
                role, name = account.role, account.name
        if role is None:
            self._fail(client)
            raise Unauthorized("wrong login name, password or key")
        self._failures.pop(client, None)
        return self._session(name, role)

    def _check_failures(self, client: str) -> None:
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, ()) if now - t < FAILURE_WINDOW_S]
        if len(recent) >= MAX_FAILURES:
            raise RateLimited("too many failed logins; wait a minute",
                              retry_after_s=int(FAILURE_WINDOW_S - (now - recent[0])) + 1)

    def _fail(self, client: str) -> None:
        now = time.monotonic()
        times = [t for t in self._failures.pop(client, []) if now - t < FAILURE_WINDOW_S]
        self._failures[client] = [*times, now]
        while len(self._failures) > _MAX_CLIENTS:
            self._failures.popitem(last=False)

    def _session(self, user: str, role: Role) -> Session:
        return Session(user, role, secrets.token_urlsafe(24), secrets.token_urlsafe(12),
                       int(time.time()) + self.lifetime_s)

    # --- the cookie -------------------------------------------------------------------------

    def token(self, session: Session) -> str:
        return jwt.encode({"sub": session.user, "role": session.role, "csrf": session.csrf,
                           "jti": session.token_id, "exp": session.expires},
                          self._secret, algorithm=_ALGORITHM)

    def read(self, cookie: str | None) -> Session:
        """The session a cookie carries.

        Raises:
            Unauthorized: no cookie, or one that is forged, expired or signed out.
        """
        if not cookie:
            raise Unauthorized("sign in to the console")
        try:
            claims = jwt.decode(cookie, self._secret, algorithms=[_ALGORITHM],
                                options={"require": ["sub", "role", "csrf", "jti", "exp"]})
        except jwt.PyJWTError:
            raise Unauthorized("the session is invalid or has expired; sign in again") from None
        if claims["role"] not in ROLES or claims["jti"] in self._revoked:
            raise Unauthorized("the session is invalid or has expired; sign in again")
        return Session(str(claims["sub"]), claims["role"], str(claims["csrf"]),
                       str(claims["jti"]), int(claims["exp"]))

    def revoke(self, session: Session) -> None:
        now = int(time.time())
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[session.token_id] = session.expires

    def secure_cookie(self, secure_transport: bool) -> bool:
        """Whether the cookie gets ``Secure`` (it is always HttpOnly and SameSite=Strict)."""
        return self._secure == "always" or (self._secure == "auto" and secure_transport)

    # --- acting ------------------------------------------------------------------------------

    @staticmethod
    def check_csrf(session: Session, token: str | None) -> None:
        """Raises Forbidden unless ``token`` is the session's own CSRF token."""
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise Forbidden("missing or wrong X-CSRF-Token")

    @staticmethod
    def check_operator(session: Session) -> None:
        if not session.may_act:
            raise Forbidden("read-only: this needs the operator role")


def check_same_origin(origin: str | None, fetch_site: str | None, host: str | None) -> None:
    """Refuse a state-changing request another site made (Forbidden): a browser's
    ``Sec-Fetch-Site`` other than same-origin, or an ``Origin`` whose host is not the one the
    request was sent to. Ports are not compared: a TLS proxy in front (``Host: $host``) drops
    the port the browser used."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    if origin is not None and (urlsplit(origin).hostname or "") != (
            urlsplit(f"//{host or ''}").hostname or ""):
        raise Forbidden("cross-origin request refused")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
