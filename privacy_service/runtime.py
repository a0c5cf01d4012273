"""The long-lived objects one process needs, built once from settings (API, worker and CLI)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from privacy_service.audit.service import AuditSink, record
from privacy_service.clock import Clock, SystemClock
from privacy_service.config import ConfigError, KeyProviderKind, Settings
from privacy_service.connections.engines import engines
from privacy_service.crypto.fields import BlindIndexer
from privacy_service.crypto.keys import KeyProvider, KeyringError, LocalKeyring, VaultTransitProvider
from privacy_service.crypto.service import KeyService
from privacy_service.db import Database
from privacy_service.dsr.deadlines import DeadlineRules, build_deadline_rules
from privacy_service.notify.mailer import Mailer, SmtpMailer
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.loader import PolicyError, load_policy
from privacy_service.systems.network import Resolver, SystemResolver


@dataclass
class Runtime:
    settings: Settings
    db: Database
    provider: KeyProvider
    indexer: BlindIndexer
    policy: PolicyDocument
    audit_key: bytes
    mailer: Mailer
    deadlines: DeadlineRules
    clock: Clock = field(default_factory=SystemClock)
    audit_sink: AuditSink = record  # where SubjectService sends audit events (a benchmark swaps it)
    # DNS for webhook destinations (systems.network); tests put a fake here.
    resolver: Resolver = field(default_factory=SystemResolver)

    @property
    def keys(self) -> KeyService:
        return KeyService(self.provider, self.indexer, self.clock)

    def derived_secret(self, purpose: str) -> bytes:
        """A secret for one purpose (the portal's CSRF tokens, the names of shared rate-limit keys), the
        same in every process of a deployment: an HMAC of the purpose under the audit key, which
        every process already shares. One-way, so no purpose's secret reveals the audit key or another's."""
        return hmac.new(self.audit_key, f"privacy-service/{purpose}/v1".encode(), hashlib.sha256).digest()

    async def close(self) -> None:
        # Connected databases' pools too (connections.engines): nothing stays open past the process's work.
        await engines.dispose_all()
        await self.db.dispose()


def build_key_provider(settings: Settings, *, create_keyring: bool = True) -> tuple[KeyProvider, LocalKeyring | None]:
    """The configured KEK provider and, for the local keyring, the keyring (it also holds other keys)."""
    if settings.key_provider is KeyProviderKind.VAULT:
        assert settings.vault_token is not None  # noqa: S101 - enforced by load_settings
        provider = VaultTransitProvider.from_settings(
            settings.vault_url,
            settings.vault_token.get_secret_value(),
            settings.vault_transit_key,
            settings.vault_transit_mount,
        )
        return provider, None
    if not create_keyring and not settings.keyring_path.exists():
        raise ConfigError(
            f"keyring file {settings.keyring_path} does not exist: restore it, or run `privacy-service db upgrade` "
            "to create one on first set-up (a new keyring cannot read data written under another)"
        )
    try:
        keyring = LocalKeyring.open_or_create(settings.keyring_path)
    except KeyringError as exc:
        raise ConfigError(str(exc)) from None
    return keyring, keyring


def build_runtime(
    settings: Settings,
    *,
    provider: KeyProvider | None = None,
    clock: Clock | None = None,
    create_keyring: bool = True,
) -> Runtime:
    """Build the process's objects. Long-running processes pass ``create_keyring=False`` so that a
    missing keyring (say, a forgotten volume) stops them instead of silently starting a new one."""
    keyring: LocalKeyring | None = provider if isinstance(provider, LocalKeyring) else None
    if provider is None:
        provider, keyring = build_key_provider(settings, create_keyring=create_keyring)
    index_key = keyring.blind_index_key if keyring else None
    if settings.blind_index_key_source == "env" and settings.blind_index_key is not None:
        index_key = base64.b64decode(settings.blind_index_key.get_secret_value())
    if index_key is None:
        raise ConfigError("no blind-index key: set PRIVACY_BLIND_INDEX_KEY_SOURCE=env and PRIVACY_BLIND_INDEX_KEY")
    if settings.audit_key is not None:
        audit_key = base64.b64decode(settings.audit_key.get_secret_value())
    elif keyring is not None:
        audit_key = keyring.audit_key
    else:
        raise ConfigError("no audit key: set PRIVACY_AUDIT_KEY")
    try:
        policy = load_policy(settings.policy_dir)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    return Runtime(
        settings=settings,
        db=Database(settings),
        provider=provider,
        indexer=BlindIndexer(index_key),
        policy=policy,
        audit_key=audit_key,
        mailer=SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        ),
        deadlines=build_deadline_rules(policy),
        clock=clock or SystemClock(),
    )
