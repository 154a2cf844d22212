"""Schemathesis hooks (loaded through ``SCHEMATHESIS_HOOKS``) for the API fuzzing test.

Webhooks are signed over their raw bytes, so a request generated from the document alone never
gets past the signature check, and the fuzzing would only ever test ``401``. This hook signs
every generated webhook POST that carries the provider's signature headers, with the secrets the
servers were started with (the environment of the Schemathesis process): the generated bodies,
headers and queries then reach each provider's parser. A request generated without a signature
header (the coverage phase's "missing header" cases) is left as it is and must get its ``401``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

from auren.providers import PROVIDER_CLASSES
from auren.services.bridge import webhook_provider
from auren.settings import Settings
from auren.sim.render import UnsignedDelivery, resolve_providers

_TARGETS = {target.name: target
            for target in resolve_providers(Settings(), PROVIDER_CLASSES)[0]}
# Apple's key and Polar's signature are optional in the document (another header or an unsigned
# PING may stand for them): signed when the generated request carries them.
_OPTIONAL = {"apple": ("api-key",), "polar": ("polar-webhook-signature",)}


def _raw_body(case: Any) -> bytes | None:
    """The exact bytes the request will carry: a ``bytes`` body as it is, a JSON one as
    ``requests`` spells it (``json.dumps(..., allow_nan=False)``, UTF-8). The body itself is
    left alone: Schemathesis re-validates a body a hook replaces, and would take a JSON object
    turned into bytes for an invalid one. None for a body with no JSON spelling."""
    if isinstance(case.body, bytes):
        return case.body
    if case.media_type != "application/json":
        return None
    try:
        return json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return None


def _negated_headers(case: Any) -> bool:
    meta = case.meta
    if meta is None:
        return False
    header = meta.components.get(ParameterLocation.HEADER)
    return header is not None and header.mode.is_negative


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "POST":
        return
    name = webhook_provider(case.path)
    target = _TARGETS.get(name or "")
    if name is None or target is None:
        return
    if _negated_headers(case):
        return  # an invalid header is what this case tests: signing would make it valid
    present = {k.lower(): k for k in case.headers or {}}
    needed = PROVIDER_CLASSES[name].signature_headers or _OPTIONAL.get(name, ())
    if not needed or any(header not in present for header in needed):
        return
    raw = _raw_body(case)
    if raw is None:
        return
    unsigned = UnsignedDelivery(raw, uuid.uuid4().hex, 0,
                                {"msg_id": f"msg_{uuid.uuid4().hex}", "event": "EXERCISE"})
    signed = target.sign(unsigned, "fuzz", time.time()).headers
    for header in needed:
        del case.headers[present[header]]
    case.headers.update({k: v for k, v in signed.items() if k != "content-type"})
