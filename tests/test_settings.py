from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from auren.settings import Settings, secret_values


def test_defaults_run_embedded(monkeypatch: pytest.MonkeyPatch):
    for name in ("POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "AUREN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded
    assert settings.max_concurrent_webhooks == 50
    assert settings.max_webhook_bytes == 1_048_576
    assert settings.auren_data_dir == Path(".auren")
    assert settings.sqlite_path == Path(".auren/auren.sqlite3")


def test_environment_names_and_secret_lists(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("MAX_CONCURRENT_WEBHOOKS", "7")
    monkeypatch.setenv("OURA_CLIENT_SECRET", " old-secret , new-secret ,")
    monkeypatch.setenv("WITHINGS_ALLOWED_IPS", "10.0.0.0/8,192.0.2.7")
    monkeypatch.setenv("SOMETHING_UNRELATED", "ignored")
    settings = Settings()
    assert not settings.embedded
    assert settings.max_concurrent_webhooks == 7
    assert secret_values(settings.oura_client_secret) == ("old-secret", "new-secret")
    assert settings.withings_allowed_ips == ("10.0.0.0/8", "192.0.2.7")


def test_secrets_never_appear_in_repr():
    settings = Settings(_env_file=None, whoop_client_secret="s3cr3t-value",
                        postgres_url="postgresql://u:p4ss@h/db")
    assert "s3cr3t-value" not in repr(settings)
    assert "p4ss" not in repr(settings)


@pytest.mark.parametrize(("field", "value"), [("max_concurrent_webhooks", 0),
                                              ("max_webhook_bytes", 10),
                                              ("auren_jwt_secret", "too-short")])
def test_invalid_values_are_refused_at_start_up(field: str, value: object):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{field: value})
