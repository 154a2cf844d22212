"""Who may read a user's data: one rule shared by the read API and NEUROS.

- ``Authorization: Bearer <key>`` with a key from ``AUREN_API_KEYS``: a service, any user.
- ``Authorization: Bearer <JWT>`` (HS256, ``AUREN_JWT_SECRET``) whose ``sub`` is the user: that
  user only (403 for another). The token must carry ``exp`` (a token without one would be
  valid forever) and live no longer than ``AUREN_JWT_MAX_LIFETIME_S`` (``exp - iat``, or
  ``exp`` - now without ``iat``); ``aud`` and ``iss`` must match ``AUREN_JWT_AUDIENCE`` and
  ``AUREN_JWT_ISSUER`` when those are set (and are not looked at otherwise).
- Nothing configured: loopback clients only, so an unconfigured install never serves health
  data to the network.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from auren.errors import Forbidden, Unauthorized
from auren.privacy.base import key_id
from auren.settings import Settings, secret_values


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _BearerMissing(Unauthorized):
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="auren"'}


# Clock difference tolerated on exp, nbf and iat, both ways.
LEEWAY_S = 30


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called, as the audit log names them: ``key:<id>`` (a service key's digest, never
    the key), ``jwt:<subject>`` (a person's own token) or ``loopback`` (nothing configured);
    ``service``: may act for anyone."""

    actor: str
    service: bool
    subject: object = None


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a user token must satisfy besides its signature."""

    max_lifetime_s: int = 86_400
    audience: str | None = None
    issuer: str | None = None


class ReadAuth:
    def __init__(self, api_keys: tuple[str, ...], jwt_secret: str | None,
                 rules: TokenRules | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self._keys = tuple(k.encode() for k in api_keys)
        self._key_ids = tuple(key_id(k) for k in api_keys)
        self._jwt_secret = jwt_secret
        self._rules = rules or TokenRules()
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadAuth:
        secret = settings.auren_jwt_secret
        return cls(secret_values(settings.auren_api_keys),
                   secret.get_secret_value() if secret else None,
                   TokenRules(settings.auren_jwt_max_lifetime_s, settings.auren_jwt_audience,
                              settings.auren_jwt_issuer))

    @property
    def configured(self) -> bool:
        return bool(self._keys or self._jwt_secret)

    def identify(self, authorization: str | None, client_host: str | None) -> Principal:
        """Who the caller is; Unauthorized (401) or Forbidden (403) for anyone the rule
        refuses outright."""
        if not self.configured:
            if is_loopback(client_host):
                return Principal("loopback", service=True)
            raise Forbidden("no API keys or JWT secret configured: loopback clients only")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _BearerMissing("a Bearer token is required")
        token = token.strip()
        presented = token.encode()
        matched: str | None = None
        for key, kid in zip(self._keys, self._key_ids, strict=True):
            if hmac.compare_digest(key, presented):
                matched = kid
        if matched is not None:
            return Principal(matched, service=True)
        if self._jwt_secret is None:
            raise Unauthorized("unknown API key")
        subject = self._subject(token, self._jwt_secret)
        return Principal(f"jwt:{subject}", service=False, subject=subject)

    def authorize(self, authorization: str | None, client_host: str | None,
                  user_id: str) -> Principal:
        """Raises Unauthorized (401) or Forbidden (403) unless the caller may act for user_id."""
        return self.require(self.identify(authorization, client_host), user_id)

    @staticmethod
    def require(principal: Principal, user_id: str) -> Principal:
        """Forbidden (403) unless ``principal`` may act for ``user_id``."""
        if not principal.service and principal.subject != user_id:
            raise Forbidden("token is not for this user")
        return principal

    @staticmethod
    def require_service(principal: Principal) -> Principal:
        """A service key (or, with nothing configured, a loopback client): never a person's
        token, whatever its subject (403)."""
        if not principal.service:
            raise Forbidden("a service key is required")
        return principal

    def _subject(self, token: str, secret: str) -> object:
        """The verified token's ``sub``; Unauthorized for any token the rules refuse."""
        rules = self._rules
        required = ["sub", "exp", *(["aud"] if rules.audience else []),
                    *(["iss"] if rules.issuer else [])]
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], leeway=LEEWAY_S,
                                audience=rules.audience, issuer=rules.issuer,
                                options={"require": required,
                                         "verify_aud": rules.audience is not None,
                                         "verify_iss": rules.issuer is not None})
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"invalid token: no {exc.claim} claim") from None
        except jwt.ExpiredSignatureError:
            raise Unauthorized("invalid token: expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("invalid token: not for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("invalid token: not from this issuer") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        # Both are numbers once decode accepted them (it validates exp and iat).
        issued = claims.get("iat")
        start = float(issued) if isinstance(issued, int | float) else self._clock()
        if float(claims["exp"]) - start > rules.max_lifetime_s + LEEWAY_S:
            raise Unauthorized("invalid token: lives longer than AUREN_JWT_MAX_LIFETIME_S")
        return claims.get("sub")
