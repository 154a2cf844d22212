"""Who may read a user's data: one rule shared by the read API and NEUROS.

- ``Authorization: Bearer <key>`` with a key from ``AUREN_API_KEYS``: a service, any user.
- ``Authorization: Bearer <JWT>`` (HS256, ``AUREN_JWT_SECRET``) whose ``sub`` is the user: that
  user only (403 for another).
- Nothing configured: loopback clients only, so an unconfigured install never serves health
  data to the network.
"""

from __future__ import annotations

import hmac
import ipaddress

import jwt

from auren.errors import Forbidden, Unauthorized
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


class ReadAuth:
    def __init__(self, api_keys: tuple[str, ...], jwt_secret: str | None) -> None:
        self._keys = tuple(k.encode() for k in api_keys)
        self._jwt_secret = jwt_secret

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadAuth:
        secret = settings.auren_jwt_secret
        return cls(secret_values(settings.auren_api_keys),
                   secret.get_secret_value() if secret else None)

    @property
    def configured(self) -> bool:
        return bool(self._keys or self._jwt_secret)

    def authorize(self, authorization: str | None, client_host: str | None, user_id: str) -> None:
        """Raises Unauthorized (401) or Forbidden (403) unless the caller may act for user_id."""
        if not self.configured:
            if is_loopback(client_host):
                return
            raise Forbidden("no API keys or JWT secret configured: loopback clients only")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _BearerMissing("a Bearer token is required")
        token = token.strip()
        presented = token.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, presented)
        if matched:
            return
        if self._jwt_secret is None:
            raise Unauthorized("unknown API key")
        try:
            claims = jwt.decode(token, self._jwt_secret, algorithms=["HS256"],
                                options={"require": ["sub"]}, leeway=30)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if claims.get("sub") != user_id:
            raise Forbidden("token is not for this user")
