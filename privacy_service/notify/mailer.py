"""Mail transport behind a small protocol: real SMTP (aiosmtplib) in production and tests.

Delivery is at least once (see :mod:`notify.jobs`), so a receiver may get a message twice after a
crash. Every message carries a ``Message-ID`` built from its outbox row id and the sender's domain,
the same on every attempt, so mail systems and people can recognise the second copy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import idna

# Why a message can never be delivered by this server (kept in the outbox row's last_error).
SMTPUTF8_UNSUPPORTED = "smtputf8_unsupported: a non-ASCII address needs SMTPUTF8, which the mail server lacks"


class MailError(Exception):
    """Delivery failed; retried with backoff unless ``permanent`` (retrying cannot help)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str
    outbox_id: uuid.UUID  # the outbox row: gives the Message-ID, the same on every attempt


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


def ascii_domain(address: str) -> str:
    """``address`` with its domain as IDNA A-labels (punycode), the form every SMTP server accepts.

    Only a non-ASCII local part then still needs SMTPUTF8. An address whose domain is not valid
    IDNA is returned as it is (the server answers for it).
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def message_id(outbox_id: uuid.UUID, sender: str) -> str:
    domain = ascii_domain(sender).rpartition("@")[2] or "localhost"
    return f"<{outbox_id}@{domain}>"


@dataclass(frozen=True, slots=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ascii_domain(mail.to)
        message["Subject"] = mail.subject
        message["Message-ID"] = message_id(mail.outbox_id, self.sender)
        message.set_content(mail.body)
        try:
            # aiosmtplib asks for SMTPUTF8 itself when an address needs it and the server offers it.
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPNotSupported:
            # Raised before any mail is handed over when the server lacks SMTPUTF8: no retry helps.
            raise MailError(SMTPUTF8_UNSUPPORTED, permanent=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(type(exc).__name__) from None
