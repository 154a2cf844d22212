"""Tokens at rest: AES-256-GCM bound to their connection, a rotation list of keys, the embedded
key made once with mode 0600, and no key at all refused outside embedded mode."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from auren.connections.crypto import (
    KEY_FILE,
    TokenCipher,
    TokenUnreadable,
    generate_key,
    load_or_create,
    parse_key,
)
from auren.settings import Settings

OLD, NEW = generate_key(), generate_key()


def cipher(*keys: str) -> TokenCipher:
    return TokenCipher([parse_key(k) for k in keys])


def test_tokens_round_trip_and_are_bound_to_their_connection():
    sealed = cipher(OLD).encrypt(b"access-token-value", "oura:u1")
    assert b"access-token-value" not in base64.urlsafe_b64decode(sealed)
    assert cipher(OLD).decrypt(sealed, "oura:u1") == b"access-token-value"
    with pytest.raises(TokenUnreadable):
        cipher(OLD).decrypt(sealed, "oura:u2")  # moved to another row
    tampered = bytearray(base64.urlsafe_b64decode(sealed))
    tampered[-1] ^= 1
    with pytest.raises(TokenUnreadable):
        cipher(OLD).decrypt(base64.urlsafe_b64encode(bytes(tampered)).decode(), "oura:u1")
    with pytest.raises(TokenUnreadable):
        cipher(OLD).decrypt("not base64 !", "oura:u1")


def test_rotation_encrypts_with_the_first_key_and_decrypts_with_any():
    before = cipher(OLD).encrypt(b"t", "c")
    rotated = cipher(NEW, OLD)
    assert rotated.decrypt(before, "c") == b"t"
    after = rotated.encrypt(b"t", "c")
    assert cipher(NEW).decrypt(after, "c") == b"t"
    with pytest.raises(TokenUnreadable):
        cipher(OLD).decrypt(after, "c")
    with pytest.raises(TokenUnreadable):
        cipher(NEW).decrypt(before, "c")  # the old key dropped too early


def test_state_signatures_verify_with_any_key_of_the_list():
    signature = cipher(OLD).sign(b"state")
    assert cipher(NEW, OLD).verify(b"state", signature)
    assert not cipher(NEW).verify(b"state", signature)
    assert not cipher(OLD).verify(b"other", signature)


@pytest.mark.parametrize("text", ["", "short", base64.b64encode(b"x" * 16).decode(),
                                  "!!!!" * 11])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text):
    with pytest.raises(ValueError, match="AUREN_ENCRYPTION_KEY"):
        parse_key(text)


def test_url_safe_and_unpadded_keys_are_accepted():
    raw = os.urandom(32)
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


def test_embedded_mode_makes_one_key_once_with_mode_0600(tmp_path: Path):
    settings = Settings(_env_file=None, auren_data_dir=tmp_path)
    results: list[TokenCipher] = []
    threads = [threading.Thread(target=lambda: results.append(TokenCipher.from_settings(
        settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = results[0].encrypt(b"t", "c")
    assert all(c.decrypt(sealed, "c") == b"t" for c in results)  # every process agrees
    assert load_or_create(path) == path.read_text().strip()


def test_no_key_outside_embedded_mode_is_a_start_up_error(tmp_path: Path):
    settings = Settings(_env_file=None, auren_data_dir=tmp_path,
                        postgres_url="postgresql://u@127.0.0.1:1/db")
    with pytest.raises(ValueError, match="AUREN_ENCRYPTION_KEY is required"):
        TokenCipher.from_settings(settings)
    assert not (tmp_path / KEY_FILE).exists()
    keyed = Settings(_env_file=None, auren_data_dir=tmp_path,
                     postgres_url="postgresql://u@127.0.0.1:1/db",
                     auren_encryption_key=f"{NEW},{OLD}")
    assert TokenCipher.from_settings(keyed).decrypt(cipher(OLD).encrypt(b"t", "c"), "c") == b"t"
