"""deploy/vercel.json: a Vercel deployment forwards /api/neuros/* and /api/bridge/* to the
gateway's public host (deploy/nginx/auren.conf) under the same prefixes the gateway serves, the
rest of the path kept as it was."""

from __future__ import annotations

import json
import re

from auren.services.gateway import upstreams
from auren.settings import Settings
from tests.deploy.tools import DEPLOY

FRONTED = ("neuros", "bridge")


def _document() -> dict[str, object]:
    document = json.loads((DEPLOY / "vercel.json").read_text())
    assert isinstance(document, dict)
    return document


def test_only_known_keys_and_one_rewrite_per_fronted_prefix():
    document = _document()
    assert set(document) <= {"$schema", "rewrites", "headers"}
    rewrites = document["rewrites"]
    assert isinstance(rewrites, list)
    assert [r["source"] for r in rewrites] == [f"/api/{name}/:path*" for name in FRONTED]
    for rewrite in rewrites:
        assert set(rewrite) == {"source", "destination"}


def test_rewrites_reach_the_gateways_prefixes_on_its_public_host():
    prefixes = set(upstreams(Settings()))
    nginx = (DEPLOY / "nginx" / "auren.conf").read_text()
    api_host = re.findall(r"server_name (api\.\S+);", nginx)[0]
    rewrites = _document()["rewrites"]
    assert isinstance(rewrites, list)
    for rewrite in rewrites:
        match = re.fullmatch(r"/api/(\w+)/:path\*", rewrite["source"])
        assert match and match.group(1) in prefixes, rewrite
        # Same prefix, the rest of the path carried over, HTTPS to the proxy's API host.
        assert rewrite["destination"] == f"https://{api_host}/api/{match.group(1)}/:path*"
