"""Breach use cases, joined in one service for the routes, jobs and benches.

Each concept lives in its own module: ``incidents`` (record an incident and change its facts),
``assessment`` (the ENISA severity score and the decisions), ``notifications`` (the supervisory
authority, the people affected, the public), ``closing`` (open duties, close) and ``register`` (views,
the Art. 33(5) register, versions, CSV); ``clocks`` holds the legal clocks and ``context`` what the
use cases share. Services never commit: the request (or job) owns the transaction.
"""

from __future__ import annotations

from privacy_service.breaches.assessment import Assessment
from privacy_service.breaches.clocks import authority_clock, human_span
from privacy_service.breaches.closing import Closing, OpenDuties, open_duties
from privacy_service.breaches.incidents import Incidents
from privacy_service.breaches.notifications import (
    AlreadyNotified,
    LateNotification,
    Notifications,
    NotRequired,
    document_links,
)
from privacy_service.breaches.register import Register

__all__ = [
    "AlreadyNotified",
    "BreachService",
    "LateNotification",
    "NotRequired",
    "OpenDuties",
    "authority_clock",
    "document_links",
    "human_span",
    "open_duties",
]


class BreachService(Incidents, Assessment, Notifications, Closing, Register):
    """Every breach use case on one object (built per HTTP request or job; see ``breaches.routes``)."""

    __slots__ = ()
