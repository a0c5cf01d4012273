"""Settings, read from ``PRIVACY_*`` environment variables or a ``.env`` file.

Invalid settings raise :class:`ConfigError` with one line naming the setting, so the
CLI can print it and exit instead of showing a traceback.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line meant for an operator."""


class KeyProviderKind(StrEnum):
    LOCAL = "local"
    VAULT = "vault"


# "N/min", "N/s" or "N/hour", optional "burst B"; per process. PRIVACY_RATE_LIMITS (JSON) overrides
# individual entries, e.g. '{"intake": "100/min"}'.
DEFAULT_RATE_LIMITS: dict[str, str] = {
    "default": "60/min burst 20",
    "operator": "6000/min burst 600",
    # Rejected operator keys per client address; past it, any key from there gets 429 unchecked.
    "auth_failed": "10/min burst 10",
    "intake": "20/min burst 10",
    "verify": "30/min burst 10",
    "resend": "5/min burst 2",
    "download": "30/min burst 10",
    "callback": "600/min burst 100",
    # Operator console sign-in (web/console): attempts per client address, and failed keys per address
    # before it is locked out (one more attempt per refill: 5/hour is one every 12 minutes).
    "console_sign_in": "20/min burst 10",
    "console_sign_in_failed": "5/hour burst 5",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRIVACY_", env_file=".env", extra="ignore", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./var/privacy.db"
    # SQLite only: the per-subject key store lives in its own file, attached to every
    # connection, so that a copy of the data file alone never holds a data key.
    keystore_path: Path | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)

    key_provider: KeyProviderKind = KeyProviderKind.LOCAL
    keyring_path: Path = Path("./var/keyring.json")
    vault_url: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_transit_mount: str = "transit"
    vault_transit_key: str = "privacy-service"
    # Blind-index key: "keyring" keeps it in the local keyring file (separate from the KEKs);
    # "env" takes it from PRIVACY_BLIND_INDEX_KEY (base64, >= 32 bytes).
    blind_index_key_source: Literal["keyring", "env"] = "keyring"
    blind_index_key: SecretStr | None = None
    # HMAC key for signed audit checkpoints (base64, >= 32 bytes); defaults to the local keyring's.
    audit_key: SecretStr | None = None
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    base_url: str = "http://127.0.0.1:8000"
    policy_dir: Path = Path("./policies")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_from: str = "privacy@wallet.example"

    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    # How long each SMTP command may wait for the relay (connect, MAIL, RCPT, DATA, ...).
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    operator_email: str = "privacy-ops@wallet.example"

    rotation_batch_size: int = Field(default=500, ge=1, le=100_000)

    # Data-subject requests.
    dsr_default_regime: Literal["gdpr", "ccpa", "pipl"] = "gdpr"
    # The law the portal's form preselects for a visitor reading it in a language (else the default
    # above); the visitor can change it. JSON, e.g. PRIVACY_DSR_DEFAULT_REGIME_BY_LANGUAGE='{"zh": "pipl"}'.
    dsr_default_regime_by_language: dict[str, Literal["gdpr", "ccpa", "pipl"]] = {"zh": "pipl"}  # copied per instance
    dsr_auto_approve: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["access", "portability", "rectify"]
    )
    dsr_code_ttl_minutes: int = Field(default=15, ge=1, le=1440)
    dsr_code_max_attempts: int = Field(default=5, ge=1, le=20)
    dsr_resend_cooldown_seconds: int = Field(default=60, ge=0, le=3600)
    # Mail-bombing and lock-out (see ratelimit.code_quota): codes sent again per request; code
    # mails to one identity in any 24 hours, in all and for callers from one source network (IPv4 /24,
    # IPv6 /64); of the day's mails, those held for networks that have had none yet.
    dsr_resend_max_per_request: int = Field(default=3, ge=0, le=20)
    dsr_codes_per_identity_per_day: int = Field(default=10, ge=1, le=1000)
    dsr_codes_per_identity_and_address_per_day: int = Field(default=3, ge=1, le=1000)
    dsr_codes_reserved_for_new_networks: int = Field(default=5, ge=0, le=1000)
    dsr_unverified_expiry_days: int = Field(default=7, ge=1, le=90)
    dsr_token_ttl_days: int = Field(default=7, ge=1, le=90)
    # How long a browser opened with a code sent to a confirmed request's identity may read it (issue 20).
    dsr_answer_access_hours: int = Field(default=24, ge=1, le=24 * 90)
    dsr_export_ttl_days: int = Field(default=7, ge=1, le=90)
    dsr_digest_days: int = Field(default=7, ge=1, le=60)

    # Worker schedules (cron, UTC) and loops.
    worker_digest_cron: str = "0 8 * * *"
    worker_expiry_cron: str = "15 * * * *"
    # Confirmations of receipt (CCPA acknowledgement clock): recorded, reminded, escalated.
    worker_acknowledgement_cron: str = "*/10 * * * *"
    # The worker rewrites this file every N seconds from inside its scheduler; `worker --check` (the
    # container healthcheck) fails when it is older than three intervals. Default: the temp directory
    # (a tmpfs in the compose file, whose root file system is read-only).
    worker_heartbeat_path: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "privacy-worker.json")
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0, le=300)
    # The worker's check of the audit chain (from the newest signed checkpoint), recorded for /metrics.
    audit_verify_cron: str = "30 4 * * *"
    outbox_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    outbox_max_attempts: int = Field(default=8, ge=1, le=50)
    # Mail delivery (docs/operations/mail-delivery.md): which processes send (both: the API right after
    # a commit, workers every outbox_poll_seconds; several of each never send a message twice at once:
    # a lane sends only within its lease, see notify.jobs), messages per SMTP connection, and batches
    # sent in parallel per process.
    outbox_delivery: Literal["api", "worker", "both"] = "both"
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=3600)
    outbox_batch_size: int = Field(default=100, ge=1, le=1000)
    outbox_concurrency: int = Field(default=4, ge=1, le=32)
    # A claimed batch is a process's for this long; after a crash its messages go out again (same Message-ID).
    # A lane sends within three quarters of it (notify.jobs); at least OUTBOX_LEASE_SMTP_TIMEOUTS x smtp timeout.
    outbox_lease_seconds: float = Field(default=120.0, ge=1, le=3600)
    # PostgreSQL: the worker vacuums a queue table (outbox, audit events, webhook deliveries) once it
    # has this many dead rows, checking every queue_vacuum_seconds (0: never; leave it to autovacuum).
    queue_vacuum_seconds: float = Field(default=30.0, ge=0, le=86400)
    queue_vacuum_dead_rows: int = Field(default=20_000, ge=1)

    # Downstream systems (webhooks and their signed callbacks).
    systems_replay_window_seconds: int = Field(default=300, ge=10, le=3600)
    systems_max_attempts: int = Field(default=8, ge=1, le=50)
    systems_retry_base_seconds: float = Field(default=30.0, gt=0, le=3600)
    systems_delivery_concurrency: int = Field(default=8, ge=1, le=100)
    systems_answer_days: int = Field(default=7, ge=1, le=90)
    # Webhooks carry identities: plain http is refused except to loopback unless this is set.
    systems_allow_http: bool = False
    # Callback URLs must resolve to public internet addresses (checked at registration and before each
    # POST); true allows loopback and private networks, for development and tests only.
    systems_allow_private_networks: bool = False
    # Connected data stores (issue 18): seconds a connection test waits for its database in all.
    connections_test_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Networks (CIDR) a connected database may be on, e.g. ["10.20.0.0/16"]; empty: any address but
    # link-local/cloud metadata ones (169.254.0.0/16, fe80::/10), which are always refused (connections.targets).
    connections_allowed_networks: list[str] = Field(default_factory=list, max_length=100)
    # Connection tasks (connections.runner): attempts before a task needs an operator, the backoff's base,
    # and how long one task may take on a connected database.
    connections_max_attempts: int = Field(default=6, ge=1, le=50)
    connections_retry_base_seconds: float = Field(default=30.0, gt=0, le=3600)
    connections_task_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    # GET /metrics (scope metrics:read) answers from a snapshot this many seconds old at most.
    metrics_cache_seconds: float = Field(default=30.0, ge=0, le=3600)

    # Retention purge (README "Retention"): schedule, batch size and the safety thresholds.
    retention_cron: str = "0 3 * * *"
    # Rows per transaction of a purge (subjects and requests: this / 100). A batch of 10,000 record deletes
    # took ~5 ms on PostgreSQL, of which ~1.5 ms was its transaction (commit, report, audit event).
    retention_batch_size: int = Field(default=50_000, ge=1, le=100_000)
    # A run that would purge more than this share of records/subjects/requests is refused (--force).
    retention_alert_percent: float = Field(default=25.0, gt=0, le=100)
    retention_alert_min_rows: int = Field(default=1000, ge=0)  # smaller tables are never refused
    retention_max_rows_per_run: int = Field(default=2_000_000, ge=1)
    retention_max_future_skew_seconds: int = Field(default=300, ge=0, le=86_400)
    retention_outbox_max_age_days: int = Field(default=30, ge=1, le=3650)
    # Expired codes/tokens/export links are cleared this long after expiry (users get "expired", not "wrong").
    retention_secret_grace_hours: int = Field(default=24, ge=0, le=720)

    # Breaches (issue 7): worker cadence and the audit-stream monitoring thresholds.
    breach_clock_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    breach_dispatch_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    breach_dispatch_batch: int = Field(default=200, ge=1, le=5000)
    breach_monitor_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    breach_monitor_read_subjects: int = Field(default=200, ge=1)  # distinct subjects one operator reads...
    breach_monitor_read_minutes: int = Field(default=10, ge=1, le=1440)  # ...within this many minutes
    breach_monitor_integrity_failures: int = Field(default=3, ge=1)
    breach_monitor_integrity_minutes: int = Field(default=60, ge=1, le=10080)
    breach_monitor_auth_failures: int = Field(default=20, ge=1)
    breach_monitor_auth_minutes: int = Field(default=5, ge=1, le=1440)
    breach_monitor_cooldown_minutes: int = Field(default=60, ge=1, le=10080)  # one draft per signal per period

    # Signs the request portal's CSRF tokens (any long random string). Unset: a key derived from the
    # audit key, the same in every process of a deployment (a form from one process posts to another).
    csrf_secret: SecretStr | None = None
    # Operator console sessions (web/console): ended after this long without a request, and this long
    # after sign-in whatever happens.
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    console_absolute_hours: int = Field(default=12, ge=1, le=7 * 24)

    rate_limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    trusted_proxies: int = Field(default=0, ge=0, le=5)
    # Shared limits (docs/operations/scaling.md): rate limits, failed-key lock-outs and code-mail quotas
    # are counted in this Redis (e.g. redis://127.0.0.1:6379/0), one count for every API process. Unset:
    # each process counts in its own memory, fine for one process. Out of reach: request limits fall
    # back to per-process counts, code mails are refused with 503 until it answers.
    redis_url: SecretStr | None = None
    # Prefix of every Redis key written (several deployments may share one Redis).
    redis_prefix: str = Field(default="privacy-service:", min_length=1, max_length=100)

    @field_validator("allowed_origins", "dsr_auto_approve", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("rate_limits")
    @classmethod
    def _limits_parse(cls, value: dict[str, str]) -> dict[str, str]:
        from privacy_service.ratelimit import Limit

        for name, text in value.items():
            try:
                Limit.parse(text)
            except (ValueError, KeyError):
                raise ValueError(f"{name}: expected like '30/min burst 10'") from None
        return {**DEFAULT_RATE_LIMITS, **value}

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("connections_allowed_networks")
    @classmethod
    def _networks_are_cidr(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError("each entry is a network in CIDR notation, e.g. 10.20.0.0/16") from None
        return value

    @field_validator("blind_index_key", "audit_key")
    @classmethod
    def _key_is_long_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64") from None
            if len(raw) < 32:
                raise ValueError("must decode to at least 32 bytes")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        raw = self.database_url.split("///", 1)[1].split("?", 1)[0]
        return Path(raw)

    @property
    def resolved_keystore_path(self) -> Path:
        if self.keystore_path is not None:
            return self.keystore_path
        data = self.sqlite_path or Path("./var/privacy.db")
        return data.with_name(data.stem + "-keys" + (data.suffix or ".db"))


# The outbox lease in SMTP timeouts, at least: a lane sends within three quarters of its lease
# (notify.jobs), a window that then holds six SMTP commands that each take almost the whole timeout
# (connect, EHLO, MAIL, RCPT, DATA, the message): a slow relay still gets a message per batch out.
OUTBOX_LEASE_SMTP_TIMEOUTS = 8


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into one readable line."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PRIVACY_" + "_".join(str(part) for part in first["loc"]).upper()
        raise ConfigError(f"invalid setting {name}: {first['msg']}") from None
    if settings.outbox_lease_seconds < OUTBOX_LEASE_SMTP_TIMEOUTS * settings.smtp_timeout_seconds:
        raise ConfigError(
            "invalid setting PRIVACY_OUTBOX_LEASE_SECONDS: must be at least "
            f"{OUTBOX_LEASE_SMTP_TIMEOUTS} x PRIVACY_SMTP_TIMEOUT_SECONDS "
            f"({OUTBOX_LEASE_SMTP_TIMEOUTS * settings.smtp_timeout_seconds:g} s), so that a batch's "
            "sending window holds a message on a relay that answers just inside the timeout"
        )
    if settings.blind_index_key_source == "env" and settings.blind_index_key is None:
        raise ConfigError("invalid setting PRIVACY_BLIND_INDEX_KEY: required when PRIVACY_BLIND_INDEX_KEY_SOURCE=env")
    if settings.key_provider is KeyProviderKind.VAULT:
        if settings.vault_token is None:
            raise ConfigError("invalid setting PRIVACY_VAULT_TOKEN: required when PRIVACY_KEY_PROVIDER=vault")
        if settings.audit_key is None:
            raise ConfigError("invalid setting PRIVACY_AUDIT_KEY: required when PRIVACY_KEY_PROVIDER=vault")
        if settings.blind_index_key_source != "env":
            raise ConfigError(
                "invalid setting PRIVACY_BLIND_INDEX_KEY_SOURCE: must be 'env' when PRIVACY_KEY_PROVIDER=vault"
            )
    return settings
