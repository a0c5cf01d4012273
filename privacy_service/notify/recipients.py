"""Recipients resolved when a message is delivered, not when it is queued.

A verification code for a phone identity goes to the e-mail on file of the customer holding that
phone. Looking that up at intake (and on resend, both public) would make a known phone measurably
slower to answer than an unknown one: an oracle for which numbers are customers. So those messages
are queued without an address, the same way for every phone, and the delivery finds it here; with
no customer holding the phone (or no e-mail on file) the message is dropped unsent.
"""

from __future__ import annotations

import uuid

from sqlmodel import col, select

from privacy_service.crypto.fields import Binding
from privacy_service.crypto.service import PRIMARY, KeyService
from privacy_service.db import Database
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.service import SUBJECTS

PHONE_ON_FILE = "phone_on_file"


class NoRecipient(Exception):
    """Nobody to send the message to: it is dropped, not retried."""


async def resolve(db: Database, keys: KeyService, rule: str, owner_id: uuid.UUID | None) -> str:
    """The address for a message queued with ``recipient=rule`` by the request ``owner_id``."""
    if rule != PHONE_ON_FILE or owner_id is None:
        raise NoRecipient(f"no recipient rule {rule!r} for this message")
    async with db.transaction() as session:
        request = await session.get(PrivacyRequest, owner_id)
        if request is None or request.identity_kind != "phone":
            raise NoRecipient("the request is gone or has no phone identity")
        query = select(Subject).where(
            col(Subject.phone_bidx) == request.identity_bidx, col(Subject.status) == SubjectStatus.ACTIVE
        )
        subject = (await session.exec(query)).first()
        if subject is None or subject.email_ct is None:
            raise NoRecipient("no customer with an e-mail on file holds this phone")
        key = await keys.load_key(session, subject.id, PRIMARY)
    return key.open(subject.email_ct, Binding(SUBJECTS, subject.id, None, "email")).decode()
