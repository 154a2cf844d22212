"""The one settings model.

Built once at start-up (``Settings()`` reads the environment) and passed down explicitly; nothing
in the package reads the environment on its own. Secret lists are comma-separated so that a
provider secret can be rotated by configuring the new one beside the old one.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A comma-separated list in the environment; every entry is a secret and never printed.
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]
PlainList = Annotated[tuple[str, ...], NoDecode]
# One line of text a reply may quote: no control characters.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
# The countries whose emergency number and crisis line NEUROS knows (auren.neuros.safety.replies
# holds them; a test keeps the two lists equal), and "intl" for no single country.
NeurosLocale = Literal["intl", "US", "CA", "GB", "IE", "AU", "NZ", "DE", "AT", "CH", "FR", "BE",
                       "NL", "ES", "SE", "NO", "DK", "FI", "IN", "SG", "BR", "ZA"]


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
    # The SQLite file's write-ahead log: truncated once it passes half of this, and whenever
    # the file is idle (auren.adapters.wal), so it stays below it.
    sqlite_wal_limit_bytes: int = Field(default=64 * 1_048_576, ge=1_048_576,
                                        le=16 * 1024 * 1_048_576)

    # --- TLS to the data plane ------------------------------------------------------------------
    # PostgreSQL: libpq's parameters in POSTGRES_URL (sslmode=verify-full&sslrootcert=FILE)
    # are honoured by every client (asyncpg, pg_dump, pg_restore); nothing more is needed.
    # Redis: a rediss:// URL speaks TLS; this CA file (PEM) verifies the server (None: the
    # system's CAs). The server's name is always checked.
    redis_ssl_ca_file: Path | None = None
    # Kafka: librdkafka's security.protocol; SSL and SASL_SSL verify the brokers against this
    # CA file (None: the system's CAs); SASL_* authenticate with the mechanism and credentials.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT")
    kafka_ssl_ca_file: Path | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

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
    # `auren infra up --fault-proxy`: the fault proxy's control port; its routes to Kafka,
    # PostgreSQL and Redis listen on the next three ports, Kafka's listener for them on the 4th.
    auren_fault_proxy_port: int = Field(default=8474, ge=1, le=65530)

    # --- full-stack data plane (read only when the URLs above are set) -------------------------
    # Kafka: events go to one topic keyed by user id, thin notifications (fetch jobs) to another;
    # both are created on start when missing. Production: replication 3, min.insync.replicas 2.
    kafka_events_topic: str = Field(default="biometric-events", min_length=1, max_length=249)
    kafka_notifications_topic: str = Field(default="biometric-notifications", min_length=1,
                                           max_length=249)
    kafka_partitions: int = Field(default=6, ge=1, le=10_000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=32)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    # retention.ms of the topics AUREN creates: how long a record (an erased person's too: an
    # append-only log cannot delete one record) stays in Kafka at most. None: the broker's.
    kafka_retention_hours: int | None = Field(default=168, ge=1, le=87_600)
    # How long a webhook waits for Kafka's delivery reports before its events go to the spool.
    bus_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # librdkafka's own bound on a record (retries included); finite, unlike its 300 s default.
    kafka_message_timeout_s: float = Field(default=30.0, ge=1, le=3600)
    kafka_sink_group: str = Field(default="auren-sink", min_length=1)
    # The most Kafka records the sink writes in one PostgreSQL transaction.
    sink_batch_records: int = Field(default=2000, ge=1, le=100_000)
    # `auren sink` serves /metrics and /health on this port while it runs (None: no HTTP).
    # The other services answer on their own ports; the sink has none, so Prometheus and the
    # container's health check need this one (9001 in deploy/).
    sink_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    sink_metrics_host: str = "127.0.0.1"
    postgres_pool_size: int = Field(default=10, ge=1, le=500)
    # Native range partitions (when TimescaleDB is absent): months created behind and ahead.
    postgres_partition_months_back: int = Field(default=12, ge=0, le=600)
    postgres_partition_months_ahead: int = Field(default=3, ge=1, le=120)
    # Redis: every key AUREN writes starts with the prefix and has a TTL.
    redis_key_prefix: str = Field(default="auren:", max_length=64)
    redis_dedup_ttl_s: int = Field(default=3 * 86_400, ge=1, le=90 * 86_400)
    # NEUROS's daily series shared between its processes: an entry is used only while the
    # user's event count is unchanged, and for at most this long after it was written.
    redis_summary_ttl_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    # Webhooks per second per provider and per source IP, over all bridges (0: no limit).
    webhook_rate_per_provider: int = Field(default=0, ge=0)
    webhook_rate_per_source: int = Field(default=0, ge=0)
    # The local spool that takes accepted events while Kafka is unreachable; full: 503.
    spool_max_bytes: int = Field(default=256 * 1_048_576, ge=65_536)
    # Circuit breakers (Kafka, PostgreSQL, Redis): open when, over the window, at least
    # min_calls were made and the failure rate reached the threshold; half-open after open_s.
    breaker_window_s: float = Field(default=10.0, gt=0, le=600)
    breaker_min_calls: int = Field(default=5, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_open_s: float = Field(default=5.0, gt=0, le=600)
    breaker_half_open_probes: int = Field(default=3, ge=1)
    # A call at least this slow counts as failed in the breaker's rate (0: never slow). Kafka:
    # a publish's delivery reports (a slow one is reported while still waiting, and when it
    # opens the breaker the batch goes to the spool at once); Redis: one batched round trip
    # (abandoned anyway at REDIS_TIMEOUT_S); PostgreSQL: one store operation. Also the stall
    # threshold: calls in flight, the oldest this old, and no success within it: open at once.
    kafka_slow_call_s: float = Field(default=1.0, ge=0, le=600)
    redis_slow_call_s: float = Field(default=0.25, ge=0, le=60)
    postgres_slow_call_s: float = Field(default=5.0, ge=0, le=600)

    # --- the path of one webhook -------------------------------------------------------------
    max_concurrent_webhooks: int = Field(default=50, ge=1, le=10_000)
    # How many more may wait for a slot, and for how long, before the answer is 503.
    max_queued_webhooks: int = Field(default=1000, ge=0, le=100_000)
    admission_wait_s: float = Field(default=2.0, gt=0, le=60)
    max_webhook_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    max_events_per_delivery: int = Field(default=5_000, ge=1, le=1_000_000)
    # Intraday samples (Garmin's sample maps, Terra's detailed heart rate and HRV) one delivery
    # may carry beside its summaries; past it they are skipped and reported, not refused. A
    # Garmin day of 15-second heart rate alone is 5,760 samples.
    max_samples_per_delivery: int = Field(default=20_000, ge=0, le=1_000_000)
    signature_tolerance_s: int = Field(default=300, ge=1, le=3600)
    # Group commit: the most deliveries one store transaction takes.
    batch_max_deliveries: int = Field(default=256, ge=1, le=10_000)
    store_timeout_s: float = Field(default=10.0, gt=0, le=300)
    dedup_cache_size: int = Field(default=100_000, ge=0)

    # --- retention and the raw payload archive (auren.services.retention) -------------------
    # Events whose start is older than this many days are removed on a schedule (None: kept
    # for ever). Full stack: by `auren sink` (whole monthly partitions dropped, the boundary
    # partition deleted from); embedded: by the bridge (bounded batched deletes).
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    # Opt-in: every verified delivery's raw body (and what re-parsing it needs), encrypted with
    # AUREN_ENCRYPTION_KEY, kept for RAW_RETENTION_DAYS after its receipt; `auren reprocess`
    # re-parses it with the current normalization code.
    archive_raw_payloads: bool = False
    raw_retention_days: int = Field(default=30, ge=1, le=36_500)
    # How often retention runs, and the most rows one SQLite delete transaction removes.
    retention_interval_s: float = Field(default=3600.0, ge=1, le=7 * 86_400)
    retention_batch_rows: int = Field(default=5000, ge=1, le=1_000_000)

    # --- read API auth ------------------------------------------------------------------------
    auren_api_keys: SecretList = ()
    # HS256 needs a key at least as long as its output (RFC 7518 §3.2).
    auren_jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    # Every user token must carry ``exp``, and may live at most this long: ``exp - iat`` (or,
    # without ``iat``, ``exp`` - now). ``aud`` and ``iss`` are checked when set.
    auren_jwt_max_lifetime_s: int = Field(default=86_400, ge=60, le=90 * 86_400)
    auren_jwt_audience: str | None = Field(default=None, min_length=1, max_length=256)
    auren_jwt_issuer: str | None = Field(default=None, min_length=1, max_length=256)

    # --- providers (comma-separated lists rotate secrets) --------------------------------------
    oura_client_secret: SecretList = ()
    oura_verification_token: SecretStr | None = None
    whoop_client_secret: SecretList = ()
    terra_signing_secret: SecretList = ()
    garmin_client_id: SecretList = ()
    fitbit_client_secret: SecretList = ()
    fitbit_verify_code: SecretStr | None = None
    polar_signature_secret: SecretList = ()
    # The only host a Polar notification's `url` may name (https, default port): a fetcher will
    # send the user's token to it.
    polar_api_host: str = Field(default="www.polaraccesslink.com", min_length=1,
                                max_length=253, pattern=r"^[A-Za-z0-9.-]+$")
    withings_enabled: bool = False
    withings_allowed_ips: PlainList = ()
    hae_api_keys: SecretList = ()
    standard_webhook_secret: SecretList = ()

    # --- connections: each person's accounts, linked by OAuth (auren.connections) ------------
    # Where the bridge is reachable from the outside: the OAuth redirect URI is
    # {AUREN_PUBLIC_URL}/api/v1/connect/{provider}/callback, Withings' notification callback
    # {AUREN_PUBLIC_URL}/webhooks/withings.
    auren_public_url: str = Field(default="http://127.0.0.1:8889", pattern=r"^https?://\S+$")
    # AES-256-GCM keys of the tokens at rest: base64 of 32 bytes, comma-separated; the first
    # encrypts, every one decrypts (rotation). Required outside embedded mode; embedded, one
    # is generated once and kept in <AUREN_DATA_DIR>/encryption.key (mode 0600).
    auren_encryption_key: SecretList = ()
    # The client credentials and endpoints of each provider's app; the defaults are the
    # providers' production values (S105: the token endpoints' names say "token", they are
    # URLs, not secrets). Where the webhook secret is the client secret (Oura,
    # WHOOP, Fitbit) one setting serves both, and Garmin's consumer key is its client id.
    oura_client_id: str | None = None
    oura_authorize_url: str = "https://cloud.ouraring.com/oauth/authorize"
    oura_token_url: str = "https://api.ouraring.com/oauth/token"  # noqa: S105
    oura_api_url: str = "https://api.ouraring.com"
    whoop_client_id: str | None = None
    whoop_authorize_url: str = "https://api.prod.whoop.com/oauth/oauth2/auth"
    whoop_token_url: str = "https://api.prod.whoop.com/oauth/oauth2/token"  # noqa: S105
    whoop_api_url: str = "https://api.prod.whoop.com/developer"
    fitbit_client_id: str | None = None
    fitbit_authorize_url: str = "https://www.fitbit.com/oauth2/authorize"
    fitbit_token_url: str = "https://api.fitbit.com/oauth2/token"  # noqa: S105
    fitbit_api_url: str = "https://api.fitbit.com"
    polar_client_id: str | None = None
    polar_client_secret: SecretStr | None = None
    polar_authorize_url: str = "https://flow.polar.com/oauth2/authorization"
    polar_token_url: str = "https://polarremote.com/v2/oauth2/token"  # noqa: S105
    polar_api_url: str = "https://www.polaraccesslink.com"
    withings_client_id: str | None = None
    withings_client_secret: SecretStr | None = None
    withings_authorize_url: str = "https://account.withings.com/oauth2_user/authorize2"
    withings_token_url: str = "https://wbsapi.withings.net/v2/oauth2"  # noqa: S105
    withings_api_url: str = "https://wbsapi.withings.net"
    garmin_client_secret: SecretStr | None = None
    garmin_authorize_url: str = "https://connect.garmin.com/oauth2Confirm"
    garmin_token_url: str = "https://diauth.garmin.com/di-oauth2-service/oauth/token"  # noqa: S105
    garmin_api_url: str = "https://apis.garmin.com"
    # Terra: the app's dev-id and API key on every call (Terra holds the device tokens).
    terra_dev_id: str | None = None
    terra_api_key: SecretStr | None = None
    terra_api_url: str = "https://api.tryterra.co/v2"
    # History fetched when an account is connected (within each provider's own reach).
    backfill_days: int = Field(default=30, ge=0, le=365)
    # How long a connect link (its signed state and PKCE verifier) stays usable.
    oauth_state_ttl_s: int = Field(default=600, ge=5, le=3600)
    # Tokens are refreshed this long before they expire.
    token_refresh_ahead_s: int = Field(default=300, ge=0, le=86_400)
    # How often each process reads the withdrawn consents again (the process that answered a
    # withdrawal screens at once; every other one within this).
    consent_refresh_s: float = Field(default=2.0, gt=0, le=300)

    # --- the fetcher: thin providers' notifications become data ------------------------------
    # Embedded, the bridge runs the fetcher in its own process (one bridge worker does); with
    # false, run `auren fetcher` beside it. The full stack always runs `auren fetcher`.
    fetcher_in_bridge: bool = True
    fetcher_concurrency: int = Field(default=4, ge=1, le=256)
    kafka_fetcher_group: str = Field(default="auren-fetcher", min_length=1)
    # One provider API call: the connection and the whole answer.
    fetch_connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    fetch_timeout_s: float = Field(default=20.0, gt=0, le=300)
    # A job that keeps failing is retried with exponential backoff and full jitter (base,
    # doubling, capped) until it has been tried this often, then it is a dead letter.
    fetch_max_attempts: int = Field(default=8, ge=1, le=100)
    fetch_retry_base_s: float = Field(default=10.0, gt=0, le=3600)
    fetch_retry_max_s: float = Field(default=1800.0, gt=0, le=86_400)
    # A rate limit's wait up to this long is waited in the job; longer, the job is rescheduled.
    fetch_max_inline_wait_s: float = Field(default=15.0, ge=0, le=600)
    # The providers' documented rate limits, times this (for an app granted more; the demo and
    # the benchmark raise it with the simulator's limits).
    fetch_rate_limit_scale: float = Field(default=1.0, gt=0, le=1000)
    # A claimed job is the fetcher's for this long (renewed while it runs); a fetcher that
    # died leaves it to be claimed again when the lease runs out.
    fetch_lease_s: float = Field(default=120.0, ge=1, le=3600)
    # How often an idle fetcher looks for due jobs.
    fetch_poll_s: float = Field(default=1.0, gt=0, le=60)
    # `auren fetcher` serves /metrics and /health on this port while it runs (None: no HTTP).
    fetcher_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    fetcher_metrics_host: str = "127.0.0.1"

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
    # The emergency answer names the local emergency number and a crisis line: NEUROS_LOCALE
    # (an ISO country code of the built-in table, or intl) chooses both, and the two overrides
    # replace either, e.g. for a country outside the table (with intl) or a regional service.
    neuros_locale: NeurosLocale = "intl"
    neuros_emergency_number: str | None = Field(default=None, min_length=2, max_length=60,
                                                pattern=_PRINTABLE)
    neuros_crisis_line: str | None = Field(default=None, min_length=3, max_length=200,
                                           pattern=_PRINTABLE)

    # --- Gateway (port 9000) and the validation toolkit: where each service answers ----------
    auren_neuros_url: str = "http://127.0.0.1:8000"
    auren_bridge_url: str = "http://127.0.0.1:8889"
    auren_legacy_url: str = "http://127.0.0.1:8888"
    auren_gateway_url: str = "http://127.0.0.1:9000"
    # The public base URL that fronts the gateway's /api/neuros/* and /api/bridge/* (a Vercel
    # deployment with deploy/vercel.json, or the TLS proxy's API host): `auren health` probes
    # both routes through it. None: those rows are n/a. (AUREN_PUBLIC_URL is the bridge's own
    # public address, where OAuth redirects come back.)
    auren_public_gateway_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # The longest the gateway waits for an upstream's answer (504 after) and to connect (502).
    gateway_timeout_s: float = Field(default=30.0, gt=0, le=300)
    gateway_connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    gateway_max_body_bytes: int = Field(default=2 * 1_048_576, ge=1024, le=64 * 1_048_576)
    # The control API of the fault proxy (`auren faultproxy`) that `auren faults` drives for
    # the slow, lossy, partition and gateway drills; None: those drills are n/a.
    auren_fault_proxy_url: str | None = None

    # Each upstream has a pool of its own: at most this many connections, and a request waits
    # at most pool_timeout_s for one of them (503 after) and write_timeout_s to send a body.
    gateway_pool_connections: int = Field(default=100, ge=1, le=10_000)
    gateway_pool_timeout_s: float = Field(default=5.0, gt=0, le=60)
    gateway_write_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Request bodies are read whole before an upstream connection is taken (a slow client
    # never holds one); this bounds the bytes all of them may hold at once (503 beyond).
    gateway_buffer_bytes: int = Field(default=128 * 1_048_576, ge=1_048_576,
                                      le=16 * 1024 * 1_048_576)

    # --- the operations console (the gateway's `/`) ------------------------------------------
    # Logins: "name:role:hash" entries (role viewer or operator; "name:hash" is a viewer)
    # separated by whitespace or ";", with Argon2id hashes (`auren console hash-password`).
    gateway_console_users: SecretStr | None = None
    # What signing in with a service key (AUREN_API_KEYS) allows: none refuses keys.
    gateway_console_key_role: Literal["none", "viewer", "operator"] = "viewer"
    # Signs the session cookies (>= 32 characters). Unset: a key drawn at start, so sessions
    # end with the process and are not shared between gateway workers.
    gateway_console_secret: SecretStr | None = Field(default=None, min_length=32)
    gateway_console_session_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    # Secure cookies: auto (when the request came over https, or a trusted proxy says so),
    # always, or never (plain-http development only).
    gateway_console_secure_cookie: Literal["auto", "always", "never"] = "auto"
    # How often the console reads every service's /health and /metrics while someone watches
    # (every 5 s otherwise, so the last hour of traffic is always there).
    gateway_console_poll_s: float = Field(default=1.0, ge=0.2, le=60)
    # The longest `auren validate --quick` started from the console may run before it is
    # stopped; and where validation reports are written and listed.
    gateway_validate_timeout_s: float = Field(default=1800.0, ge=10, le=86_400)
    auren_reports_dir: Path = Path("reports")
    # The sink's /metrics (SINK_METRICS_PORT), for the consumer lag; None: not shown.
    auren_sink_url: str | None = None

    # --- every HTTP server (bridge, legacy bridge, NEUROS, gateway) -------------------------
    # From a connection's first byte (or its opening) to the end of a request's headers; the
    # longest gap between two bytes of a request body and the longest a whole body may take;
    # how long an idle keep-alive connection stays open. Past any of them the connection is
    # closed (with a 408 when part of a request had arrived).
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    http_body_idle_timeout_s: float = Field(default=10.0, gt=0, le=600)
    http_body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    http_keepalive_timeout_s: float = Field(default=5.0, gt=0, le=600)
    # Peers (addresses or CIDRs) whose X-Forwarded-For is believed; empty: none is.
    trusted_proxies: PlainList = ()
    # HTTPS: a service given a certificate (chain) and its key in PEM serves TLS 1.2+ only
    # (`auren serve NAME --ssl-certfile F --ssl-keyfile F` overrides them). Both or neither.
    auren_ssl_certfile: Path | None = None
    auren_ssl_keyfile: Path | None = None

    # --- `auren docs generate`: who the service documents (docs/services/) name --------------
    auren_team_owner: str = Field(default="AUREN platform team", min_length=1, max_length=200)
    auren_team_contact: str = Field(default="ops@auren.example", min_length=1, max_length=200)

    # --- process ------------------------------------------------------------------------------
    log_level: str = "INFO"
    # One JSON line per HTTP request (method, path without query or user id, status,
    # duration, request id) at INFO on the logger auren.access.
    access_log: bool = True
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # How often a service makes its dependencies' round trips for /health, in the background;
    # /health answers from the latest (0: each /health makes them itself, and waits for them).
    health_refresh_s: float = Field(default=1.0, ge=0, le=60)

    _split = field_validator(
        "auren_api_keys",
        "oura_client_secret",
        "whoop_client_secret",
        "terra_signing_secret",
        "garmin_client_id",
        "fitbit_client_secret",
        "polar_signature_secret",
        "withings_allowed_ips",
        "trusted_proxies",
        "hae_api_keys",
        "standard_webhook_secret",
        "auren_encryption_key",
        mode="before",
    )(_split_csv)

    @field_validator("neuros_locale", mode="before")
    @classmethod
    def _locale_case(cls, value: Any) -> Any:
        # "gb", "Gb" and "GB" are one country; "INTL" is intl.
        if isinstance(value, str):
            value = value.strip()
            return "intl" if value.lower() == "intl" else value.upper()
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # a bad entry is a start-up error
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.auren_ssl_certfile is None) != (self.auren_ssl_keyfile is None):
            raise ValueError("AUREN_SSL_CERTFILE and AUREN_SSL_KEYFILE go together: set both "
                             "or neither")
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return self

    # --- erasure (`DELETE /api/v1/users/{id}`, `auren erase`) ---------------------------------
    # A failing step is tried again after a backoff (doubling from the base, a minute at most)
    # until it has failed this often; then the erasure is failed (a new request resumes it).
    erasure_max_attempts: int = Field(default=8, ge=1, le=100)
    erasure_retry_base_s: float = Field(default=2.0, gt=0, le=600)
    # How long a process holds an erasure it runs (renewed while it runs): a killed process's
    # erasure is resumed by the next one after this.
    erasure_lease_s: float = Field(default=30.0, ge=1, le=3600)
    # How often each process re-reads the erasure ledger and looks for erasures to run; the
    # ledger step waits twice this before the stores are erased.
    erasure_poll_s: float = Field(default=1.0, gt=0, le=60)
    # The longest one step may take (the Kafka step waits for the sink to pass the topics' end).
    erasure_step_timeout_s: float = Field(default=300.0, gt=0, le=86_400)

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
