"""The one settings model.

Built once at start-up (``Settings()`` reads the environment) and passed down explicitly; nothing
in the package reads the environment on its own. Secret lists are comma-separated so that a
provider secret can be rotated by configuring the new one beside the old one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A comma-separated list in the environment; every entry is a secret and never printed.
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]
PlainList = Annotated[tuple[str, ...], NoDecode]


def _split_csv(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every knob AUREN has. Field names are the environment variable names (case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    # --- data plane: with none of the three set, everything runs embedded -------------------
    postgres_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    kafka_bootstrap_servers: str | None = None
    auren_data_dir: Path = Path("./.auren")

    # --- `auren infra`: the loopback servers it starts for dev and CI --------------------------
    auren_kafka_port: int = Field(default=9092, ge=1, le=65535)
    auren_kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    auren_postgres_port: int = Field(default=5432, ge=1, le=65535)
    auren_redis_port: int = Field(default=6379, ge=1, le=65535)
    # None: a random one is generated once per data dir and kept there (mode 0600).
    auren_postgres_password: SecretStr | None = None
    auren_kafka_heap_mb: int = Field(default=512, ge=128, le=32_768)
    # Where Maven's Kafka jars are cached across data dirs (None: ~/.cache/auren).
    auren_infra_cache_dir: Path | None = None

    # --- the path of one webhook -------------------------------------------------------------
    max_concurrent_webhooks: int = Field(default=50, ge=1, le=10_000)
    # How many more may wait for a slot, and for how long, before the answer is 503.
    max_queued_webhooks: int = Field(default=1000, ge=0, le=100_000)
    admission_wait_s: float = Field(default=2.0, gt=0, le=60)
    max_webhook_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    max_events_per_delivery: int = Field(default=5_000, ge=1, le=1_000_000)
    signature_tolerance_s: int = Field(default=300, ge=1, le=3600)
    # Group commit: the most deliveries one store transaction takes.
    batch_max_deliveries: int = Field(default=256, ge=1, le=10_000)
    store_timeout_s: float = Field(default=10.0, gt=0, le=300)
    dedup_cache_size: int = Field(default=100_000, ge=0)

    # --- read API auth ------------------------------------------------------------------------
    auren_api_keys: SecretList = ()
    # HS256 needs a key at least as long as its output (RFC 7518 §3.2).
    auren_jwt_secret: SecretStr | None = Field(default=None, min_length=32)

    # --- providers (comma-separated lists rotate secrets) --------------------------------------
    oura_client_secret: SecretList = ()
    oura_verification_token: SecretStr | None = None
    whoop_client_secret: SecretList = ()
    terra_signing_secret: SecretList = ()
    garmin_client_id: SecretList = ()
    fitbit_client_secret: SecretList = ()
    fitbit_verify_code: SecretStr | None = None
    polar_signature_secret: SecretList = ()
    withings_enabled: bool = False
    withings_allowed_ips: PlainList = ()
    hae_api_keys: SecretList = ()
    standard_webhook_secret: SecretList = ()

    # --- NEUROS (port 8000) -------------------------------------------------------------------
    # builtin: the deterministic engine phrases every reply (no network). openai: any
    # OpenAI-compatible server at NEUROS_LLM_BASE_URL. anthropic: the Messages API.
    neuros_llm: Literal["builtin", "openai", "anthropic"] = "builtin"
    neuros_llm_base_url: str | None = None
    neuros_llm_model: str = ""
    neuros_llm_api_key: SecretStr | None = None
    # The whole LLM phase (tool rounds included) must finish within this, else builtin phrasing.
    neuros_llm_timeout_s: float = Field(default=6.0, gt=0, le=120)
    neuros_llm_max_tokens: int = Field(default=300, ge=16, le=4096)
    neuros_llm_tool_rounds: int = Field(default=2, ge=0, le=5)
    neuros_rate_per_minute: int = Field(default=30, ge=1, le=1_000_000)
    neuros_max_message_chars: int = Field(default=2000, ge=16, le=100_000)
    neuros_max_body_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    # Earlier messages of the conversation given as context (user and assistant both count).
    neuros_history_messages: int = Field(default=6, ge=0, le=50)

    # --- process ------------------------------------------------------------------------------
    log_level: str = "INFO"
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)

    _split = field_validator(
        "auren_api_keys",
        "oura_client_secret",
        "whoop_client_secret",
        "terra_signing_secret",
        "garmin_client_id",
        "fitbit_client_secret",
        "polar_signature_secret",
        "withings_allowed_ips",
        "hae_api_keys",
        "standard_webhook_secret",
        mode="before",
    )(_split_csv)

    @property
    def embedded(self) -> bool:
        """True when no external data-plane server is configured."""
        return not (self.postgres_url or self.redis_url or self.kafka_bootstrap_servers)

    @property
    def sqlite_path(self) -> Path:
        return self.auren_data_dir / "auren.sqlite3"


def secret_values(secrets: tuple[SecretStr, ...]) -> tuple[str, ...]:
    """The plain values of a secret list, for building verifiers at start-up."""
    return tuple(s.get_secret_value() for s in secrets)
