"""A system's signing key: generated here, shown once, kept sealed (the service must sign with it).

HMAC needs the key itself, so it cannot be stored hashed like an operator key. It is sealed with
AES-GCM under a data key owned by the system's id (purpose ``system``), wrapped by the KEK like every
other data key; removing the system shreds that data key.
"""

from __future__ import annotations

import secrets
import uuid

from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding
from privacy_service.crypto.service import KeyService
from privacy_service.systems.models import DownstreamSystem

PURPOSE = "system"
KEY_PREFIX = "pss_"
KEY_ID_PREFIX = "sk_"


def _binding(system_id: uuid.UUID) -> Binding:
    return Binding("systems", system_id, None, "signing_key")


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


async def new_secret(session: AsyncSession, keys: KeyService, system_id: uuid.UUID) -> tuple[str, bytes]:
    """A fresh signing key (returned once, in clear) and its ciphertext for the system's row."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    data_key = await keys.create_key(session, system_id, PURPOSE)
    return secret, data_key.seal(secret.encode(), _binding(system_id))


async def open_secret(session: AsyncSession, keys: KeyService, system: DownstreamSystem) -> bytes:
    """The HMAC key bytes (the ``pss_...`` string as UTF-8)."""
    data_key = await keys.load_key(session, system.id, PURPOSE)
    return data_key.open(system.secret_ct, _binding(system.id))


async def shred(session: AsyncSession, keys: KeyService, system_id: uuid.UUID) -> None:
    await keys.shred(session, system_id, PURPOSE)
