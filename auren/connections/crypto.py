"""Tokens at rest and connect states: AES-256-GCM encryption and HMAC signatures.

A person's OAuth tokens are stored encrypted with AES-256-GCM (an AEAD: a ciphertext that was
altered, or moved to another connection's row, does not decrypt). The associated data is the
connection's identity (``provider:provider user id``), so a token copied into another row is
refused. Keys come from ``AUREN_ENCRYPTION_KEY``, a comma-separated rotation list of 32-byte
keys in base64: the first encrypts, every one decrypts, and each ciphertext names the key that
made it (the first four bytes of the key's SHA-256), so rotation is: add the new key first,
keep the old one until every row was rewritten (each refresh rewrites its row), then drop it.

Without a key, the embedded (development) mode generates one once and keeps it in
``<AUREN_DATA_DIR>/encryption.key`` with mode 0600; anywhere else a missing key is a start-up
error, because tokens encrypted with a key nobody kept are lost.

A connect link's ``state`` is signed with a key derived from the first key (HKDF-SHA256), and
verified against the keys derived from each. The erasure ledger names erased people by keyed
digests under another derived key (``pseudonyms``): keep a retired key in the list for as
long as its ledger entries must still be recognised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auren.settings import Settings, secret_values

KEY_FILE = "encryption.key"
KEY_BYTES = 32
_FORMAT = b"\x01"  # version of the ciphertext layout: format, key id, nonce, sealed text
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


class TokenUnreadable(ValueError):
    """A stored ciphertext no configured key opens (a key was dropped too early, or the row
    was tampered with): the person must connect again."""


def parse_key(text: str) -> bytes:
    """A key as configured: base64 (standard or URL-safe, padding optional) of 32 bytes."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("AUREN_ENCRYPTION_KEY entries must be base64 of 32 bytes") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"AUREN_ENCRYPTION_KEY entries must be {KEY_BYTES} bytes, "
                         f"not {len(raw)}")
    return raw


def generate_key() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)).decode()


def load_or_create(path: Path) -> str:
    """The key kept at ``path``, made once (mode 0600) when there is none; processes starting
    together agree on one. The key is written whole to a file of its own first and then linked
    into place (atomic, and refused when the path exists), so nobody ever reads a key file
    that is still being written: the losers read the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip()
    key = generate_key()
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        draft.unlink(missing_ok=True)
    return key


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]


def _state_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"auren connect state").derive(key)


def _ledger_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"auren erasure ledger").derive(key)


class TokenCipher:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._keys = [(_key_id(key), AESGCM(key)) for key in keys]
        self._state_keys = [_state_key(key) for key in keys]
        self._ledger_keys = [_ledger_key(key) for key in keys]

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCipher:
        """The configured keys; embedded without one, the data directory's own.

        Raises:
            ValueError: no key outside embedded mode, or a key that is not 32 bytes of base64.
        """
        texts = secret_values(settings.auren_encryption_key)
        if not texts:
            if not settings.embedded:
                raise ValueError("AUREN_ENCRYPTION_KEY is required with POSTGRES_URL, "
                                 "REDIS_URL or KAFKA_BOOTSTRAP_SERVERS set: the OAuth tokens "
                                 "are encrypted with it (generate one with `openssl rand "
                                 "-base64 32`)")
            texts = (load_or_create(settings.auren_data_dir / KEY_FILE),)
        return cls([parse_key(text) for text in texts])

    def encrypt(self, plaintext: bytes, context: str) -> str:
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, plaintext, context.encode())
        return base64.urlsafe_b64encode(_FORMAT + key_id + nonce + sealed).decode()

    def decrypt(self, text: str, context: str) -> bytes:
        """Raises TokenUnreadable when no key opens it for ``context``."""
        try:
            blob = base64.urlsafe_b64decode(text.encode())
        except (binascii.Error, ValueError):
            raise TokenUnreadable("stored token is not base64") from None
        head = 1 + _KEY_ID_BYTES + _NONCE_BYTES
        if len(blob) <= head or blob[:1] != _FORMAT:
            raise TokenUnreadable("stored token has an unknown format")
        key_id, nonce, sealed = blob[1:1 + _KEY_ID_BYTES], blob[1 + _KEY_ID_BYTES:head], \
            blob[head:]
        # The named key first; the others too, should two keys share an id prefix.
        candidates = sorted(self._keys, key=lambda entry: entry[0] != key_id)
        for _, aead in candidates:
            try:
                return aead.decrypt(nonce, sealed, context.encode())
            except InvalidTag:
                continue
        raise TokenUnreadable("no configured AUREN_ENCRYPTION_KEY opens the stored token")

    def sign(self, payload: bytes) -> str:
        mac = hmac.new(self._state_keys[0], payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def pseudonyms(self, text: str) -> list[str]:
        """Keyed digests (HMAC-SHA256 under a key derived from each configured key, the first
        key's first) naming ``text`` without revealing it: what the erasure ledger keeps of an
        erased person. Without the key, nobody can tell whose they are, even by guessing ids."""
        return [hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
                for key in self._ledger_keys]

    def verify(self, payload: bytes, signature: str) -> bool:
        presented = signature.encode()
        matched = False
        for key in self._state_keys:
            mac = hmac.new(key, payload, hashlib.sha256).digest()
            matched |= hmac.compare_digest(
                base64.urlsafe_b64encode(mac).decode().rstrip("=").encode(), presented)
        return matched
