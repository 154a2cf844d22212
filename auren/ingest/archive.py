"""The raw payload archive (``ARCHIVE_RAW_PAYLOADS``): a verified delivery's payload, sealed.

What is kept of a webhook is what parsing it again needs: the raw body, the query, the few
headers that providers' parsers read (:data:`PARSE_HEADERS`), the time it was received (parsers
judge every instant against it) and, in the clear beside the sealed part, the provider, the
delivery key and the users its items name (to find, expire and erase it). Credentials are not
kept (``api-key``, ``authorization``, signatures): the delivery was verified when it arrived,
and a re-parse needs no proof again. Health Auto Export binds a user through its API key;
re-parsing gives the user the delivery named instead (``Provider.reparse``).

Sealed: zlib (so the Kafka record and the row stay small: measured on the simulator's payloads
of each provider, 1.0x on a 63-byte Withings form to 5.3x on a 2.4 KB native delivery of 14
events), then AES-256-GCM with the token key (``AUREN_ENCRYPTION_KEY``, the same rotation list and
cipher as the tokens, ``auren.connections.crypto``), the provider and delivery key as
associated data so a sealed payload copied to another row does not open. A payload that is
still larger than :data:`MAX_SEALED_CHARS` sealed is not archived (counted), so that a record
never outgrows what Kafka accepts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import orjson

from auren.connections.crypto import TokenCipher
from auren.events import Delivery, RawPayload, iso, parse_time
from auren.providers.base import WebhookRequest

# The request headers a provider's ``parse`` reads (``verify`` reads the others).
PARSE_HEADERS = ("content-type", "webhook-id", "polar-webhook-event", "x-auren-user-id")
# Sealed text beyond this is not archived: the Kafka record carrying it must stay below the
# producer's 1,000,000-byte message limit with the delivery's events beside it.
MAX_SEALED_CHARS = 512 * 1024
# zlib's fastest level: this runs on the webhook's path. A seal cost 12-23 µs per payload of
# the simulator's (measured on a shared 2-core machine).
_LEVEL = 1


def _context(provider: str, delivery_key: str) -> str:
    return f"raw-payload|{provider}|{delivery_key}"


@dataclass(frozen=True, slots=True)
class Unsealed:
    """An archived payload opened: the request to parse again, when and for whom."""

    provider: str
    delivery_key: str
    received_at: datetime
    user_ids: tuple[str, ...]
    request: WebhookRequest


class PayloadSealer:
    """Seals a verified delivery's payload on the webhook's path, and opens it to re-parse."""

    def __init__(self, cipher: TokenCipher) -> None:
        self._cipher = cipher
        self.too_large = 0  # payloads not archived because even sealed they were too large

    def seal(self, request: WebhookRequest, delivery: Delivery,
             received_at: datetime) -> RawPayload | None:
        """The delivery's archive entry; None when it is too large to archive."""
        headers = {name: request.headers[name] for name in PARSE_HEADERS
                   if name in request.headers}
        head = orjson.dumps({"headers": headers, "query": dict(request.query)})
        # orjson escapes every newline inside strings: the first one ends the head.
        packed = zlib.compress(head + b"\n" + request.body, _LEVEL)
        sealed = self._cipher.encrypt(packed, _context(delivery.provider, delivery.delivery_key))
        if len(sealed) > MAX_SEALED_CHARS:
            self.too_large += 1
            return None
        users = dict.fromkeys([e.user_id for e in delivery.events]
                              + [j.user_id for j in delivery.fetch_jobs])
        return RawPayload(delivery.provider, delivery.delivery_key, iso(received_at),
                          tuple(users), sealed)

    def open(self, raw: RawPayload) -> Unsealed:
        """Raises ``TokenUnreadable`` when no configured key opens it (or it was altered),
        ``ValueError`` when its content is not what :meth:`seal` writes."""
        packed = self._cipher.decrypt(raw.sealed, _context(raw.provider, raw.delivery_key))
        try:
            head, _, body = zlib.decompress(packed).partition(b"\n")
            meta = orjson.loads(head)
            headers, query = meta["headers"], meta["query"]
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"archived payload is malformed: {type(exc).__name__}") from None
        if not isinstance(headers, dict) or not isinstance(query, dict):
            raise ValueError("archived payload is malformed")
        request = WebhookRequest(method="POST", headers=headers, query=query, body=body)
        return Unsealed(raw.provider, raw.delivery_key, parse_time(raw.received_at),
                        raw.user_ids, request)
