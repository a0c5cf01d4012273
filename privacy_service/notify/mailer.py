"""Mail transport behind a small protocol: real SMTP (aiosmtplib) in production and tests.

A delivery run sends a claimed batch over one connection (:meth:`Mailer.connect`): one TCP and
SMTP handshake (and TLS, and login) per batch instead of per message, which was most of what a
message cost. Delivery is at least once (see :mod:`notify.jobs`), so a receiver may get a message
twice after a crash. Every message carries a ``Message-ID`` built from its outbox row id and the
sender's domain, the same on every attempt, so mail systems and people can recognise the second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Protocol, Self

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


class MailConnection(Protocol):
    async def send(self, mail: Mail) -> None:
        """Hand one message to the server; :class:`MailError` if it was not accepted."""


class Mailer(Protocol):
    def connect(self) -> contextlib.AbstractAsyncContextManager[MailConnection]:
        """A session for a batch of messages, closed when the block ends."""


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
    timeout: float = 10.0  # each SMTP command's (PRIVACY_SMTP_TIMEOUT_SECONDS)

    def connect(self) -> SmtpConnection:
        return SmtpConnection(self)

    def compose(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ascii_domain(mail.to)
        message["Subject"] = mail.subject
        message["Message-ID"] = message_id(mail.outbox_id, self.sender)
        message.set_content(mail.body)
        return message


class SmtpConnection:
    """One SMTP session: opened at the first message (a batch of dropped messages opens none), opened
    again if the server closes it between messages, QUIT at the end.

    If the server cannot be reached at all, the rest of the batch fails at once with the same reason
    instead of waiting out a connection timeout per message (each is retried with backoff).
    """

    def __init__(self, mailer: SmtpMailer) -> None:
        self._mailer = mailer
        self._smtp: aiosmtplib.SMTP | None = None
        self._unreachable: str | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()

    async def _session(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        if self._unreachable is not None:
            raise MailError(self._unreachable)
        mailer = self._mailer
        smtp = aiosmtplib.SMTP(
            hostname=mailer.host,
            port=mailer.port,
            username=mailer.username,
            password=mailer.password,
            start_tls=mailer.starttls,
            timeout=mailer.timeout,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._unreachable = type(exc).__name__
            raise MailError(self._unreachable) from None
        self._smtp = smtp
        return smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def send(self, mail: Mail) -> None:
        try:
            smtp = await self._session()
            # aiosmtplib asks for SMTPUTF8 itself when an address needs it and the server offers it.
            await smtp.send_message(self._mailer.compose(mail))
        except asyncio.CancelledError:
            # Cut off mid-command (the lane's lease deadline, a shutdown): the session is in an unknown
            # state, so it is closed at once rather than QUIT politely (which could wait a whole timeout).
            self._drop()
            raise
        except aiosmtplib.SMTPNotSupported:
            # Raised before any mail is handed over when the server lacks SMTPUTF8: no retry helps.
            raise MailError(SMTPUTF8_UNSUPPORTED, permanent=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # A refused message leaves the session usable (aiosmtplib resets the envelope); a dropped
            # connection is opened again for the next message.
            raise MailError(type(exc).__name__) from None
