"""Sign the audit chain's head with the audit key (``audit_head.mac``).

A database that already holds sealed events has its current head signed here, with the audit key the
service is configured with (``PRIVACY_AUDIT_KEY`` or the keyring file's), so the sealer goes on
extending it; the chain up to that point is as trustworthy as it was before (run ``audit verify``
first if in doubt). Without the key the upgrade stops and says so, rather than leave a head that
every later seal would refuse.

Revision ID: 0007_audit
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import base64

import sqlalchemy as sa
from alembic import context, op

from privacy_service.audit.checkpoints import head_mac
from privacy_service.config import ConfigError, Settings, load_settings
from privacy_service.crypto.keys import KeyringError, LocalKeyring

revision = "0007_audit"
down_revision = "0006"
branch_labels = None
depends_on = None

_HEAD = sa.table(
    "audit_head",
    sa.column("id"),
    sa.column("seq"),
    sa.column("hash", sa.LargeBinary()),
    sa.column("mac", sa.LargeBinary()),
)


def _audit_key(settings: Settings) -> bytes:
    if settings.audit_key is not None:
        return base64.b64decode(settings.audit_key.get_secret_value())
    try:
        return LocalKeyring(settings.keyring_path).audit_key
    except KeyringError as exc:
        raise ConfigError(
            f"the audit log holds sealed events, so its head must be signed with the audit key, which is not "
            f"available ({exc}): set PRIVACY_KEYRING_PATH or PRIVACY_AUDIT_KEY as the service uses them"
        ) from None


def upgrade() -> None:
    op.add_column("audit_head", sa.Column("mac", sa.LargeBinary(), nullable=True))
    head = op.get_bind().execute(sa.select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).one_or_none()
    if head is None or head.seq == 0:
        return
    settings: Settings = context.config.attributes.get("settings") or load_settings()
    mac = head_mac(_audit_key(settings), head.seq, head.hash)
    op.execute(_HEAD.update().where(_HEAD.c.id == 1).values(mac=mac))


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("mac")
