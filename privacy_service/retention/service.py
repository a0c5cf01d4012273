"""The retention rules engine, joined in one class for the run (``jobs.py``, which owns transactions).

Each concept lives in its own module: ``rules`` (what a rule makes due: per item and as SQL),
``tally`` (what a run counts), ``context`` (what the steps share), ``records`` (step 1: plan and purge
of records), ``subjects`` (step 2, with the legal duties that keep data), ``kept`` (step 3),
``housekeeping`` (steps 4 and 5) and ``runs`` (reading run reports). Never commits.

What a rule makes due. Each policy category has one rule: ``period`` after ``trigger``, then
``action``, unless a ``legal_duty`` still runs. The trigger's time (the *anchor*) is:

- ``occurred_at``: when the event a record describes took place (``records.occurred_at``), so
  imported history is due as soon as its period is over; a time in the future is refused at write
  (beyond ``retention_max_future_skew_seconds``), so it cannot stretch a period. Profile fields
  and identifiers occur when collected (the subject's ``created_at``), a privacy request when
  received.
- ``collected_at``: when the vault stored the data (``records.created_at``; a subject's
  ``created_at`` for profile fields and identifiers).
- ``account_closed_at``: the subject's; while the account is open, never.
- ``last_activity_at``: the subject's, or its ``created_at`` if no activity was ever recorded.
- ``request_completed_at``: a privacy request's ``completed_at``; for a record filed under such a
  category, its ``created_at`` (it is written when the request is answered).

Each item is then *live* (period running), *duty* (period over, a legal duty still keeps it) or
*due* (both over). A duty on a record's own time ends at the exact instant
(the latest such record's anchor plus the duty's period), not at the end of that day. Due data of
a subject under an active legal hold is skipped, like duty data.

What a run does, in order (each step batched, each batch one transaction):

1. ``records``: due records are deleted; for ``anonymise`` rules their (category, kind, month,
   amount decade) is counted into ``retention_aggregates`` in the same statement's transaction.
   Records are visited in physical order (PostgreSQL ``ctid`` pages, SQLite ``rowid`` ranges), so
   a batch is one range scan however the rows are spread.
2. ``subject_fields`` / ``subjects``: a subject with nothing live left is erased with
   :meth:`SubjectService.erase` (crypto-shredding); categories under a legal duty are kept,
   restricted, until the duty ends. A subject that still has live data loses only the profile
   fields and identifiers whose category is due.
3. ``restricted_records`` / ``restricted_subjects``: data kept after erasure whose date has
   passed is deleted; a subject whose last kept data goes loses its "retention" key too.
4. ``request_codes`` / ``request_tokens`` / ``request_exports``: expired credentials and export
   links are cleared; ``outbox``: sent and dead-lettered mail older than the configured age.
5. ``requests``: completed privacy requests, per the rule of :data:`REQUEST_CATEGORY` (row,
   history, queued mail and the request's data key).

No step removes what a later step counts, so a dry run (which changes nothing) counts exactly
what the real run does.

The SQL conditions are built from :mod:`retention.cutoffs`, so they agree exactly with
:func:`classify`, the per-item reference; the rare month-end anchors a bound cannot settle are
read and classified one by one.
"""

from __future__ import annotations

from privacy_service.retention.context import ACTOR
from privacy_service.retention.housekeeping import Housekeeping
from privacy_service.retention.kept import KeptSteps
from privacy_service.retention.records import RecordSteps, amount_band
from privacy_service.retention.rules import REQUEST_CATEGORY, State, classify
from privacy_service.retention.runs import get_run, list_runs, run_view
from privacy_service.retention.subjects import SubjectSteps
from privacy_service.retention.tally import MAX_ITEM_ERRORS, OUTBOX_KEY, SECRET_KEYS, Tally

__all__ = [
    "ACTOR",
    "MAX_ITEM_ERRORS",
    "OUTBOX_KEY",
    "REQUEST_CATEGORY",
    "SECRET_KEYS",
    "RetentionEngine",
    "State",
    "Tally",
    "amount_band",
    "classify",
    "get_run",
    "list_runs",
    "run_view",
]


class RetentionEngine(RecordSteps, SubjectSteps, KeptSteps, Housekeeping):
    """Every decision of one run, taken at ``now``; each method works inside the caller's transaction."""

    __slots__ = ()
