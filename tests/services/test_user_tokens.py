"""User tokens (JWT) against real bridge processes: a token must carry ``exp``, may not live
longer than ``AUREN_JWT_MAX_LIFETIME_S``, and must name the configured audience and issuer.
Tokens are made here with PyJWT as an identity provider would, signed with the server's secret.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.helpers import ServerProcess, run_server

SECRET = "user-token-secret-for-tests-0123456789abcdef"
LIFETIME_S = 3600
AUDIENCE = "auren-read-api"
ISSUER = "https://id.example.test/"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("tokens")
    base = {"AUREN_JWT_SECRET": SECRET, "AUREN_JWT_MAX_LIFETIME_S": str(LIFETIME_S)}
    with run_server("bridge", tmp, {**base, "AUREN_JWT_AUDIENCE": AUDIENCE,
                                    "AUREN_JWT_ISSUER": ISSUER}) as strict, \
            run_server("bridge", tmp, base) as plain:
        yield {"strict": strict, "plain": plain}


def _token(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _read(server: ServerProcess, token: str, user: str = "alice") -> httpx.Response:
    return httpx.get(f"{server.base_url}/api/v1/users/{user}/events",
                     headers={"authorization": f"Bearer {token}"}, timeout=10)


def _refused(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"], response.json()


def test_a_token_within_every_rule_reads_its_own_user_only(servers):
    now = int(time.time())
    token = _token(sub="alice", iat=now, exp=now + LIFETIME_S, aud=AUDIENCE, iss=ISSUER)
    assert _read(servers["strict"], token).status_code == 200
    assert _read(servers["strict"], token, user="bob").status_code == 403
    # Without aud/iss configured, the plain server does not look at them.
    assert _read(servers["plain"], token).status_code == 200
    assert _read(servers["plain"], _token(sub="alice", exp=now + 60)).status_code == 200


def test_a_token_without_exp_is_refused(servers):
    now = int(time.time())
    for server in servers.values():
        _refused(_read(server, _token(sub="alice", iat=now, aud=AUDIENCE, iss=ISSUER)),
                 "no exp claim")


def test_a_token_living_longer_than_the_bound_is_refused(servers):
    now = int(time.time())
    claims = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER}
    for server in servers.values():
        # By exp - iat, even when little of it is left...
        _refused(_read(server, _token(**claims, iat=now - 2 * LIFETIME_S, exp=now + 60)),
                 "lives longer")
        # ...and by exp - now without iat.
        _refused(_read(server, _token(**claims, exp=now + 10 * LIFETIME_S)), "lives longer")
        _refused(_read(server, _token(**claims, exp=now - 3600)), "expired")
        # Exactly the bound is accepted.
        assert _read(server, _token(**claims, iat=now, exp=now + LIFETIME_S)).status_code == 200


def test_audience_and_issuer_are_checked_when_configured(servers):
    now = int(time.time())
    strict = servers["strict"]
    good = {"sub": "alice", "iat": now, "exp": now + 600}
    _refused(_read(strict, _token(**good, iss=ISSUER)), "no aud claim")
    _refused(_read(strict, _token(**good, aud="another-api", iss=ISSUER)), "audience")
    _refused(_read(strict, _token(**good, aud=AUDIENCE)), "no iss claim")
    _refused(_read(strict, _token(**good, aud=AUDIENCE, iss="https://evil.test/")), "issuer")
    assert _read(strict, _token(**good, aud=[AUDIENCE, "other"], iss=ISSUER)).status_code == 200


def test_a_token_signed_otherwise_is_refused(servers):
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 60, "aud": AUDIENCE, "iss": ISSUER}
    forged = jwt.encode(claims, "another-secret-0123456789abcdef0123456789", algorithm="HS256")
    _refused(_read(servers["strict"], forged), "invalid token")
    unsigned = jwt.encode(claims, None, algorithm="none")
    _refused(_read(servers["strict"], unsigned), "invalid token")
