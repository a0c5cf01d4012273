"""Console sessions: an operator key exchanged once for a server-side session.

The browser holds a random token (256 bits) in an HttpOnly, SameSite=Strict cookie; the database holds
its SHA-256 only, so a copy of the table opens no session. Every request re-checks the session against
its operator key: ended (signed out), idle for ``console_idle_minutes``, older than
``console_absolute_hours``, or its key revoked or expired, the session ends there (server-side, for
every copy of the cookie). Its scopes are those the key held at sign-in, narrowed to what it holds now.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.operators.models import Operator
from privacy_service.operators.service import AuthenticatedOperator
from privacy_service.web.console.models import ConsoleSession

SESSION_COOKIE = "privacy_console"
CONSOLE_PATH = "/console"
# last_seen_at is written at most this often (a page view is not a write each time); the idle timeout
# is therefore exact to within this margin.
TOUCH_SECONDS = 30


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The operator behind a live console session, with the scopes the session may use now."""

    session_id: uuid.UUID
    operator: AuthenticatedOperator
    expires_at: datetime

    @property
    def scopes(self) -> frozenset[str]:
        return self.operator.scopes


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def start_session(
    session: AsyncSession, operator: AuthenticatedOperator, settings: Settings, now: datetime
) -> tuple[str, ConsoleSession]:
    """A new session for a key that was just checked; returns the token (the cookie's value, never stored)."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id=uuid.uuid4(),
        token_hash=token_hash(token),
        operator_id=operator.id,
        scopes=" ".join(sorted(operator.scopes)),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=settings.console_absolute_hours),
    )
    session.add(row)
    audit.record(
        session,
        at=now,
        actor=operator.actor,
        action="console.sign_in",
        detail={"session_id": str(row.id), "scopes": sorted(operator.scopes)},
    )
    return token, row


def _end_reason(row: ConsoleSession, operator: Operator | None, settings: Settings, now: datetime) -> str | None:
    if row.ended_at is not None:
        return row.end_reason or "ended"
    if operator is None or operator.revoked_at is not None:
        return "revoked"
    if operator.expires_at is not None and operator.expires_at <= now:
        return "key_expired"
    if now >= row.expires_at:
        return "absolute"
    if now - row.last_seen_at >= timedelta(minutes=settings.console_idle_minutes):
        return "idle"
    return None


async def resume_session(session: AsyncSession, token: str, settings: Settings, now: datetime) -> SignedIn | None:
    """The live session for a cookie's token, or None (and a session found but no longer live is ended)."""
    found = (
        await session.exec(
            select(ConsoleSession, Operator)
            .join(Operator, col(Operator.id) == col(ConsoleSession.operator_id))
            .where(col(ConsoleSession.token_hash) == token_hash(token))
        )
    ).one_or_none()
    if found is None:
        return None
    row, operator = found
    reason = _end_reason(row, operator, settings, now)
    if reason is not None:
        if row.ended_at is None:
            row.ended_at, row.end_reason = now, reason
            session.add(row)
            audit.record(
                session,
                at=now,
                actor=Actor("operator", str(row.operator_id)),
                action="console.session_ended",
                detail={"session_id": str(row.id), "reason": reason},
            )
        return None
    if (now - row.last_seen_at).total_seconds() >= TOUCH_SECONDS:
        row.last_seen_at = now
        session.add(row)
    scopes = frozenset(row.scopes.split()) & frozenset(operator.scopes.split())
    return SignedIn(row.id, AuthenticatedOperator(operator.id, operator.name, scopes), row.expires_at)


async def end_replaced(session: AsyncSession, token: str, now: datetime) -> None:
    """Signing in again in a browser ends the session its old cookie named: one browser, one session,
    and a token planted in the browser before sign-in never becomes a signed-in session."""
    await session.exec(
        update(ConsoleSession)
        .where(col(ConsoleSession.token_hash) == token_hash(token), col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=now, end_reason="replaced")
    )


async def end_session(session: AsyncSession, signed_in: SignedIn, now: datetime) -> None:
    """Sign-out: the session ends server-side, so every copy of its cookie stops working."""
    await session.exec(
        update(ConsoleSession)
        .where(col(ConsoleSession.id) == signed_in.session_id, col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=now, end_reason="signed_out")
    )
    audit.record(
        session,
        at=now,
        actor=signed_in.operator.actor,
        action="console.sign_out",
        detail={"session_id": str(signed_in.session_id)},
    )
