"""What a run counts: per report entry (the keys of ``schemas.RuleReport``), batch by batch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from privacy_service.retention import schemas
from privacy_service.retention.rules import REQUEST_CATEGORY

MAX_ITEM_ERRORS = 100


@dataclass(slots=True)
class Tally:
    """Counts per report entry (the keys of schemas.RuleReport), added up batch by batch."""

    counts: dict[str, schemas.Counts] = field(default_factory=dict)
    errors: list[schemas.ItemError] = field(default_factory=list)

    def __getitem__(self, key: str) -> schemas.Counts:
        found = self.counts.get(key)
        if found is None:
            found = self.counts[key] = schemas.Counts()
        return found

    def add(self, other: Tally) -> None:
        for key, counts in other.counts.items():
            mine = self[key]
            for name in counts.__struct_fields__:
                setattr(mine, name, getattr(mine, name) + getattr(counts, name))
        self.errors.extend(other.errors)

    def error(self, key: str, item_id: uuid.UUID, exc: BaseException) -> None:
        self[key].errors += 1
        self.errors.append(schemas.ItemError(key, item_id, type(exc).__name__))

    def acted(self) -> int:
        return sum(c.purged + c.anonymised + c.restricted for c in self.counts.values())


def record_key(category: str) -> str:
    return f"records:{category}"


def field_key(category: str) -> str:
    return f"subject_fields:{category}"


SUBJECTS_KEY = "subjects"
RESTRICTED_RECORDS_KEY = "restricted_records"
RESTRICTED_SUBJECTS_KEY = "restricted_subjects"
REQUESTS_KEY = f"requests:{REQUEST_CATEGORY}"
OUTBOX_KEY = "outbox"
SECRET_KEYS = ("request_codes", "request_tokens", "request_exports")


@dataclass(frozen=True, slots=True)
class Totals:
    """The frame of a run's report: rows per table a run may purge, per record category, and
    the records whose category the policy does not know."""

    tables: dict[str, int]
    records: dict[str, int]
    unknown: dict[str, int]
