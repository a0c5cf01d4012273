"""The access / portability answer, streamed: JSON, or CSV files in a ZIP.

Nothing is assembled in memory: records are read, decrypted and written in batches, each batch in
its own short transaction, so a subject with 10,000 records costs the memory of one batch.
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec
from sqlalchemy import select as sa_select
from sqlmodel import col

from privacy_service.connections.flow import ConnectedRows, found_rows
from privacy_service.crypto.fields import Binding, DataKey
from privacy_service.crypto.service import KeyService
from privacy_service.db import Database
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.spreadsheet import csv_text
from privacy_service.subjects.models import Record
from privacy_service.subjects.schemas import SubjectOut
from privacy_service.subjects.service import RECORDS
from privacy_service.systems.data import for_export as systems_data

BATCH = 500
RECORD_COLUMNS = (Record.id, Record.kind, Record.category, Record.occurred_at, Record.created_at, Record.data_ct)
_encode = msgspec.json.Encoder().encode


async def _record_batches(db: Database, keys: KeyService, subject_id: uuid.UUID) -> AsyncIterator[list[dict[str, Any]]]:
    after: uuid.UUID | None = None
    while True:
        async with db.transaction() as session:
            key: DataKey = await keys.load_key(session, subject_id)
            # Columns, not ORM entities: building 10,000 tracked instances cost more than decrypting them.
            query = (
                sa_select(*map(col, RECORD_COLUMNS))
                .where(col(Record.subject_id) == subject_id, col(Record.restricted).is_(False))
                .order_by(col(Record.id))
                .limit(BATCH)
            )
            if after is not None:
                query = query.where(col(Record.id) > after)
            rows = (await (await session.connection()).execute(query)).all()
        if not rows:
            return
        yield [
            {
                "id": str(row.id),
                "kind": row.kind,
                "category": row.category,
                "occurred_at": row.occurred_at.isoformat(),
                "created_at": row.created_at.isoformat(),
                "data": msgspec.json.decode(key.open(row.data_ct, Binding(RECORDS, subject_id, row.id, "data"))),
            }
            for row in rows
        ]
        after = rows[-1].id
        if len(rows) < BATCH:
            return


async def _datasets(
    db: Database, keys: KeyService, request_id: uuid.UUID
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """What the connected databases returned: dataset -> collection -> rows."""
    async with db.transaction() as session:
        return await found_rows(session, keys, request_id)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _dataset_files(found: ConnectedRows) -> list[tuple[str, list[list[Any]]]]:
    """One CSV per collection, ``datasets/<dataset>/<collection>.csv`` (names made safe for a path;
    two collections whose safe names meet are numbered)."""
    files: list[tuple[str, list[list[Any]]]] = []
    taken: set[str] = set()
    for fides_key, collections in sorted(found.items()):
        for name, rows in sorted(collections.items()):
            stem = f"datasets/{_UNSAFE.sub('_', fides_key)}/{_UNSAFE.sub('_', name).strip('_.') or 'collection'}"
            path, n = f"{stem}.csv", 1
            while path in taken:
                n += 1
                path = f"{stem}_{n}.csv"
            taken.add(path)
            columns = sorted({column for row in rows for column in row})
            table: list[list[Any]] = [columns]
            for row in rows:
                table.append([_cell(row.get(column)) for column in columns])
            files.append((path, table))
    return files


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else _encode(value).decode()


def _header(request: PrivacyRequest) -> dict[str, Any]:
    return {
        "id": str(request.id),
        "type": request.type,
        "regime": request.regime,
        "received_at": request.received_at.isoformat(),
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
    }


async def json_export(
    db: Database,
    keys: KeyService,
    request: PrivacyRequest,
    subject: SubjectOut,
    processing: dict[str, Any],
    history: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    yield b'{"request":' + _encode(_header(request))
    yield b',"subject":' + _encode(subject)
    yield b',"records":['
    first = True
    async for batch in _record_batches(db, keys, subject.id):
        # One chunk per batch: a send per record cost more than the record itself.
        yield (b"" if first else b",") + b",".join(_encode(item) for item in batch)
        first = False
    yield b'],"requests":' + _encode(history)
    # What downstream systems returned, labelled by system.
    yield b',"systems":' + _encode(await systems_data(db, keys, request.id, subject.id))
    # What the connected databases held, by dataset and collection.
    yield b',"datasets":' + _encode(await _datasets(db, keys, request.id))
    yield b',"processing":' + _encode(processing) + b"}"


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file: zipfile streams into it and we drain it as we go."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


def _csv_bytes(rows: list[list[Any]]) -> bytes:
    # The customer opens these in a spreadsheet: their own data must not run there as formulas.
    return csv_text(rows).encode()


async def zip_export(
    db: Database,
    keys: KeyService,
    request: PrivacyRequest,
    subject: SubjectOut,
    processing: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    identifier_categories: Mapping[str, str],
) -> AsyncIterator[bytes]:
    """The answer as CSV files in a ZIP; ``identifier_categories``: the policy's category of each
    identifier (e-mail, phone, external id), so every row of profile.csv names its category."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED)
    write: Callable[[str, bytes], None] = archive.writestr
    profile_rows: list[list[Any]] = [["field", "category", "value"]]
    for kind in ("email", "phone", "external_id"):
        value = getattr(subject, kind)
        if value is not None:
            profile_rows.append([kind, identifier_categories.get(kind, ""), value])
    for name, value in subject.profile.items():
        shown = value if isinstance(value, str | int | float | bool) else _encode(value).decode()
        profile_rows.append([name, subject.profile_categories.get(name, ""), shown])
    write("profile.csv", _csv_bytes(profile_rows))
    yield sink.drain()
    with archive.open("records.csv", mode="w", force_zip64=True) as handle:
        handle.write(_csv_bytes([["id", "kind", "category", "occurred_at", "created_at", "data"]]))
        async for batch in _record_batches(db, keys, subject.id):
            handle.write(
                _csv_bytes(
                    [
                        [
                            i["id"],
                            i["kind"],
                            i["category"],
                            i["occurred_at"],
                            i["created_at"],
                            _encode(i["data"]).decode(),
                        ]
                        for i in batch
                    ]
                )
            )
            yield sink.drain()
    write("requests.json", _encode(history))
    write("systems.json", _encode(await systems_data(db, keys, request.id, subject.id)))
    for path, table in _dataset_files(await _datasets(db, keys, request.id)):
        write(path, _csv_bytes(table))
    write("processing.json", _encode(processing))
    write("request.json", _encode(_header(request)))
    archive.close()
    yield sink.drain()
