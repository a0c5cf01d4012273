"""Downstream-system use cases: the registry, the delivery log, and the systems' signed callbacks.

Services never commit. A callback that completes the last required answer completes its request in
the same transaction (through ``DsrService.finish_after_systems``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.crypto.fields import DecryptionFailed
from privacy_service.crypto.service import KeyService, KeyShredded
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.service import DsrService
from privacy_service.errors import Conflict, DataIntegrityError, Gone, InvalidInput, NotFound, Unauthenticated, redact
from privacy_service.policy.document import PolicyDocument
from privacy_service.subjects.service import check_depth
from privacy_service.systems import data, schemas, vault
from privacy_service.systems.events import emit
from privacy_service.systems.flows import FINAL, UNDELIVERED, Answer, DeliveryStatus, check_answer, owes_answer
from privacy_service.systems.models import CallbackNonce, Delivery, DeliveryAttempt, DownstreamSystem
from privacy_service.systems.network import RefusedDestination, Resolver, SystemResolver, check_destination
from privacy_service.systems.signing import SignatureError, verify

CURSOR_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
LOG_LINES = 20  # attempts shown per delivery


class InvalidSignature(Unauthenticated):
    slug = "invalid-signature"
    title = "The message is not signed with the system's key, or the signature is stale"


class ReplayedCallback(Conflict):
    slug = "replayed-callback"
    title = "This exact callback was already received"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# One answer for every refused destination, without addresses: registration is no DNS or network probe.
REFUSED_DESTINATION = (
    "callback_url must name a host that resolves to public internet addresses only, written as a DNS name, "
    "a dotted-decimal IPv4 address without leading zeros or a bracketed IPv6 address (loopback, private, "
    "link-local, multicast, reserved and cloud metadata addresses are refused)"
)
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
_DNS_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def _host_refused(host: str) -> bool:
    """A host written any way but a DNS name or a canonical IP address (``1.2.3.04``, ``0x7f.1``,
    ``2130706433``, ``1.2.3``): resolvers and URL parsers read these differently (``getaddrinfo``
    takes ``1.2.3.04`` as 1.2.3.4, httpx refuses to send to it), so one is never a destination."""
    if ":" in host:
        return not _is_ip(host)
    labels = host.rstrip(".").split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # ends in a number: an IPv4 address, so only the canonical form
        return not _is_ip(host)
    return len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_url(url: str, *, allow_http: bool) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise InvalidInput("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("callback_url must be an absolute http(s) URL")
    # The sender's own parser (httpx) must read the URL: one it cannot send would fail at every delivery.
    # Its reading of the host is the one checked here and resolved by check_destination, as at delivery.
    try:
        sent = httpx.URL(url)
        raw_host = sent.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError):  # ValueError covers idna.IDNAError and UnicodeError
        raise InvalidInput(REFUSED_DESTINATION) from None
    if _host_refused(raw_host.lower()) or sent.scheme != parts.scheme:
        raise InvalidInput(REFUSED_DESTINATION)
    if parts.username or parts.password or parts.fragment or sent.userinfo or sent.fragment:
        raise InvalidInput("callback_url must not contain credentials or a fragment")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise InvalidInput(
            "callback_url must use https (webhooks carry identities); plain http is accepted for loopback "
            "addresses, or everywhere with PRIVACY_SYSTEMS_ALLOW_HTTP=true"
        )


def system_out(system: DownstreamSystem) -> schemas.SystemOut:
    return schemas.SystemOut(
        id=system.id,
        name=system.name,
        callback_url=system.callback_url,
        request_types=list(system.request_types),
        categories=list(system.categories),
        identities=list(system.identities),
        timeout_seconds=system.timeout_seconds,
        required=system.required,
        key_id=system.key_id,
        created_at=system.created_at,
        removed_at=system.removed_at,
    )


@dataclass(slots=True)
class SystemService:
    session: AsyncSession
    keys: KeyService
    policy: PolicyDocument
    clock: Clock
    settings: Settings
    actor: Actor
    request_id: str | None = None
    # Completes the requests a callback or a removal leaves with every required answer in.
    dsr: DsrService | None = None
    # Resolves callback hosts for the destination check at registration.
    resolver: Resolver = field(default_factory=SystemResolver)

    def _audit(self, action: str, **detail: object) -> None:
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action=action,
            request_id=self.request_id,
            detail={key: str(value) if isinstance(value, uuid.UUID) else value for key, value in detail.items()},
        )

    async def _get(self, system_id: uuid.UUID) -> DownstreamSystem:
        system = await self.session.get(DownstreamSystem, system_id)
        if system is None:
            raise NotFound("no system with this id")
        return system

    # -- registry ------------------------------------------------------------------------

    async def add(self, body: schemas.SystemCreate) -> schemas.SystemCreated:
        check_url(body.callback_url, allow_http=self.settings.systems_allow_http)
        unknown = [i for i, key in enumerate(body.categories) if not self.policy.is_category(key)]
        if unknown:
            raise InvalidInput(
                "categories: not data categories in the published policy at position(s) "
                + ", ".join(str(i) for i in unknown[:20]),
                extra={"errors": [{"field": f"categories[{i}]", "message": "unknown category"} for i in unknown[:20]]},
            )
        # Last of the checks (a DNS lookup), and before this transaction's first statement.
        allow_private = self.settings.systems_allow_private_networks
        try:
            await check_destination(body.callback_url, self.resolver, allow_private=allow_private)
        except RefusedDestination:
            raise InvalidInput(REFUSED_DESTINATION) from None
        existing = await self.session.exec(
            select(DownstreamSystem.id).where(
                col(DownstreamSystem.name) == body.name, col(DownstreamSystem.removed_at).is_(None)
            )
        )
        if existing.first() is not None:
            raise Conflict("a system with this name is already registered")
        system_id = uuid.uuid4()
        secret, sealed = await vault.new_secret(self.session, self.keys, system_id)
        system = DownstreamSystem(
            id=system_id,
            name=body.name,
            callback_url=body.callback_url,
            request_types=_unique(list(body.request_types)),
            categories=_unique(list(body.categories)),
            identities=_unique(list(body.identities)),
            timeout_seconds=body.timeout_seconds,
            required=body.required,
            key_id=vault.new_key_id(),
            secret_ct=sealed,
            created_at=self.clock.now(),
        )
        self.session.add(system)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            raise Conflict("a system with this name is already registered") from None
        self._audit("systems.added", system_id=system.id, required=system.required, types=system.request_types)
        emit("system_added", category="configuration", outcome="success", system_id=str(system.id), system=system.name)
        return schemas.SystemCreated(system=system_out(system), signing_key=secret)

    async def list_systems(self, *, include_removed: bool = False) -> schemas.SystemPage:
        query = select(DownstreamSystem)
        if not include_removed:
            query = query.where(col(DownstreamSystem.removed_at).is_(None))
        rows = await self.session.exec(query.order_by(col(DownstreamSystem.name), col(DownstreamSystem.created_at)))
        return schemas.SystemPage(items=[system_out(s) for s in rows.all()])

    async def get(self, system_id: uuid.UUID) -> schemas.SystemOut:
        return system_out(await self._get(system_id))

    async def find(self, name: str) -> uuid.UUID:
        query = select(DownstreamSystem.id).where(
            col(DownstreamSystem.name) == name, col(DownstreamSystem.removed_at).is_(None)
        )
        found = (await self.session.exec(query)).first()
        if found is None:
            raise NotFound("no registered system with this name")
        return found

    async def remove(self, system_id: uuid.UUID) -> schemas.Removed:
        """Stop sending to a system: its key is shredded, its open deliveries no longer count, and
        requests that were waiting only for it complete now."""
        system = await self._get(system_id)
        if system.removed_at is not None:
            raise Gone("this system was already removed")
        now = self.clock.now()
        system.removed_at = now
        self.session.add(system)
        await vault.shred(self.session, self.keys, system.id)
        open_rows = (
            await self.session.exec(
                select(Delivery).where(
                    col(Delivery.system_id) == system.id,
                    col(Delivery.status) != DeliveryStatus.CANCELLED,
                    or_(col(Delivery.answer).is_(None), col(Delivery.answer).not_in([a.value for a in FINAL])),
                )
            )
        ).all()
        for delivery in open_rows:
            delivery.status, delivery.payload = DeliveryStatus.CANCELLED, None
            self.session.add(delivery)
        completed = 0
        if self.dsr is not None:
            for request_id in sorted({d.request_id for d in open_rows}):
                completed += await self.dsr.finish_after_systems(request_id)
        self._audit("systems.removed", system_id=system.id, cancelled=len(open_rows), completed=completed)
        emit("system_removed", category="configuration", outcome="success", system_id=str(system.id))
        return schemas.Removed(id=system.id, cancelled_deliveries=len(open_rows), completed_requests=completed)

    # -- the delivery log ----------------------------------------------------------------

    async def _views(self, rows: list[Delivery]) -> list[schemas.DeliveryView]:
        logs: dict[uuid.UUID, list[schemas.AttemptView]] = {d.id: [] for d in rows}
        if rows:
            attempts = await self.session.exec(
                select(DeliveryAttempt)
                .where(col(DeliveryAttempt.delivery_id).in_(list(logs)))
                .order_by(col(DeliveryAttempt.id).desc())
            )
            for attempt in attempts.all():
                lines = logs[attempt.delivery_id]
                if len(lines) < LOG_LINES:
                    lines.append(
                        schemas.AttemptView(
                            attempt.attempt, attempt.at, attempt.outcome, attempt.status_code, attempt.duration_ms
                        )
                    )
        return [
            schemas.DeliveryView(
                id=d.id,
                request_id=d.request_id,
                system_id=d.system_id,
                required=d.required,
                status=d.status,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at if d.status == DeliveryStatus.PENDING else None,
                last_error=d.last_error,
                created_at=d.created_at,
                delivered_at=d.delivered_at,
                answer=d.answer,
                answered_at=d.answered_at,
                answer_due_at=d.answer_due_at,
                log=logs[d.id][::-1],
            )
            for d in rows
        ]

    async def deliveries(
        self, system_id: uuid.UUID, *, status: str | None, after: str | None, limit: int
    ) -> schemas.DeliveryPage:
        await self._get(system_id)
        query = select(Delivery).where(col(Delivery.system_id) == system_id)
        if status is not None:
            if status not in {s.value for s in DeliveryStatus}:
                raise InvalidInput("status: not a delivery status (pending, sending, delivered, dead, cancelled)")
            query = query.where(col(Delivery.status) == status)
        if after is not None:
            created_text, _, id_text = after.partition("_")
            try:
                cursor_at, cursor_id = datetime.fromisoformat(created_text), uuid.UUID(id_text)
            except ValueError:
                raise InvalidInput("after: not a cursor returned by this endpoint") from None
            if cursor_at.tzinfo is None:
                raise InvalidInput("after: not a cursor returned by this endpoint")
            query = query.where(
                or_(
                    col(Delivery.created_at) > cursor_at,
                    (col(Delivery.created_at) == cursor_at) & (col(Delivery.id) > cursor_id),
                )
            )
        rows = list(
            (await self.session.exec(query.order_by(col(Delivery.created_at), col(Delivery.id)).limit(limit + 1))).all()
        )
        page = rows[:limit]
        cursor = f"{page[-1].created_at.strftime(CURSOR_TIME)}_{page[-1].id}" if len(rows) > limit else None
        return schemas.DeliveryPage(items=await self._views(page), next_cursor=cursor)

    async def retry(self, delivery_id: uuid.UUID) -> schemas.DeliveryView:
        """Send a dead-lettered webhook again (after the receiver was fixed), with a fresh retry budget."""
        delivery = await self.session.get(Delivery, delivery_id)
        if delivery is None:
            raise NotFound("no delivery with this id")
        if delivery.status != DeliveryStatus.DEAD:
            raise Conflict(f"only dead-lettered deliveries can be retried; this one is {delivery.status}")
        system = await self._get(delivery.system_id)
        if system.removed_at is not None or delivery.payload is None:
            raise Conflict("this delivery can no longer be sent (its system was removed or its data purged)")
        delivery.status, delivery.attempts = DeliveryStatus.PENDING, 0
        delivery.next_attempt_at = self.clock.now()
        self.session.add(delivery)
        self._audit("systems.delivery.retried", delivery_id=delivery.id, system_id=system.id)
        return (await self._views([delivery]))[0]

    # -- callbacks -----------------------------------------------------------------------

    def _reject(self, reason: str, delivery_id: uuid.UUID, system: DownstreamSystem | None = None) -> None:
        emit(
            "callback_rejected",
            category="authentication",
            outcome="failure",
            reason=reason,
            delivery_id=str(delivery_id),
            system_id=str(system.id) if system else None,
        )

    async def _remember(self, system_id: uuid.UUID, signature: bytes, now: datetime) -> bool:
        """Record an accepted signature; False if it was seen before (a replay)."""
        digest = hashlib.sha256(system_id.bytes + signature).digest()
        if await self.session.get(CallbackNonce, digest) is not None:
            return False
        # Older than the window (either side of the clock): refused as stale anyway, so forgotten.
        horizon = now - timedelta(seconds=2 * self.settings.systems_replay_window_seconds)
        await self.session.exec(
            delete(CallbackNonce).where(
                col(CallbackNonce.system_id) == system_id, col(CallbackNonce.received_at) < horizon
            )
        )
        self.session.add(CallbackNonce(digest=digest, system_id=system_id, received_at=now))
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            return False
        return True

    async def _lock_request(self, request_id: uuid.UUID) -> PrivacyRequest:
        # Callbacks for one request queue here, so the last answer always sees all the others.
        query = select(PrivacyRequest).where(col(PrivacyRequest.id) == request_id)
        if not self.settings.is_sqlite:
            query = query.with_for_update()
        request = (await self.session.exec(query)).one_or_none()
        if request is None:
            raise Gone("this request has been purged")
        return request

    async def callback(
        self,
        delivery_id: uuid.UUID,
        body: bytes,
        *,
        key_id: str | None,
        timestamp: str | None,
        signature: str | None,
    ) -> schemas.CallbackAccepted:
        """A system's signed answer: verified before anything in the body is read."""
        if not (key_id and timestamp and signature):
            self._reject("unsigned", delivery_id)
            raise InvalidSignature("sign the callback (X-Privacy-Key-Id, X-Privacy-Timestamp, X-Privacy-Signature)")
        delivery = await self.session.get(Delivery, delivery_id)
        if delivery is None:
            self._reject("unknown_delivery", delivery_id)
            raise NotFound("no delivery with this id")
        system = await self._get(delivery.system_id)
        if system.removed_at is not None or delivery.status == DeliveryStatus.CANCELLED:
            self._reject("removed", delivery_id, system)
            raise Gone("this system was removed; its answers are no longer accepted")
        if key_id != system.key_id:
            self._reject("unknown_key", delivery_id, system)
            raise InvalidSignature("this key id is not the key of the system this delivery went to")
        now = self.clock.now()
        try:
            secret = await vault.open_secret(self.session, self.keys, system)
        except (KeyShredded, DecryptionFailed) as exc:
            raise DataIntegrityError("the system's signing key could not be opened") from exc
        try:
            signed = verify(
                secret,
                body,
                timestamp=timestamp,
                signature=signature,
                now=now,
                window_seconds=self.settings.systems_replay_window_seconds,
            )
        except SignatureError as exc:
            self._reject(exc.reason, delivery_id, system)
            if exc.reason == "stale":
                raise InvalidSignature(
                    "the signature timestamp is outside the replay window; sign with the current time"
                ) from None
            raise InvalidSignature("the signature does not match the body and timestamp") from None
        request = await self._lock_request(delivery.request_id)
        if not await self._remember(system.id, signed, now):
            self._reject("replay", delivery_id, system)
            raise ReplayedCallback("this callback (same signature) was already accepted; sign a new one")
        try:
            answer = msgspec.json.decode(body, type=schemas.CallbackBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"callback body: {redact(str(exc))}") from None
        if answer.subject_request_id is not None and answer.subject_request_id != delivery.request_id:
            raise InvalidInput("subject_request_id is not the request this delivery was for")
        target = Answer(answer.request_status)
        check_answer(delivery.answer, target)
        if answer.data is not None:
            await self._store_data(request, delivery, system, answer.data, target, now)
        delivery.answer, delivery.answered_at = target, now
        if delivery.status in UNDELIVERED:
            # An answer proves the webhook arrived, whatever its sender managed to record.
            delivery.status, delivery.delivered_at, delivery.payload = DeliveryStatus.DELIVERED, now, None
        self.session.add(delivery)
        audit.record(
            self.session,
            at=now,
            actor=Actor("downstream", str(system.id)),
            action="systems.callback",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={
                "dsr_id": str(request.id),
                "delivery_id": str(delivery.id),
                "answer": target.value,
                "data": answer.data is not None,
            },
        )
        emit(
            "callback_accepted",
            category="privacy.downstream",
            outcome="success",
            delivery_id=str(delivery.id),
            dsr_id=str(request.id),
            system_id=str(system.id),
            system=system.name,
            answer=target.value,
        )
        if target in FINAL and self.dsr is not None and not owes_answer(delivery.status, delivery.answer):
            self.dsr.actor = Actor("downstream", str(system.id))
            await self.dsr.finish_after_systems(request.id)
        return schemas.CallbackAccepted(delivery_id=delivery.id, request_status=target.value, request=request.status)

    async def _store_data(
        self,
        request: PrivacyRequest,
        delivery: Delivery,
        system: DownstreamSystem,
        payload: dict[str, object] | list[object],
        answer: Answer,
        now: datetime,
    ) -> None:
        if answer != Answer.COMPLETED or request.type not in ("access", "portability"):
            raise InvalidInput(
                "data is accepted only with request_status 'completed' on access or portability requests"
            )
        check_depth(payload, "data")
        if request.subject_id is None:
            raise Conflict("this request has no customer to hold the data for")
        try:
            key = await self.keys.load_key(self.session, request.subject_id)
        except KeyShredded:
            raise Gone("the customer's data has been erased; the data cannot be stored") from None
        data.store(
            self.session,
            key,
            request_id=request.id,
            delivery_id=delivery.id,
            system_id=system.id,
            subject_id=request.subject_id,
            data=payload,
            now=now,
        )
