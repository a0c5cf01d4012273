"""Operator text in breach documents (issue 16, item 14 and the register half of item 13).

Incident texts come from whoever files or edits an incident, and the Art. 33 documents are opened by
the DPO and the authority: markup in those texts must reach them as text, in Markdown as in HTML.
"""

from __future__ import annotations

import csv
import io

import pytest
from httpx import AsyncClient

from tests.breach_support import assess, create

SCRIPT = "<script>alert(document.cookie)</script>"
IMAGE = '<img src=x onerror="alert(1)">'
LINK = "[open the report](javascript:alert(1))"
FORMULA = '=HYPERLINK("https://evil.example","x")'


async def _documents(client: AsyncClient, auth: dict[str, str]) -> tuple[str, dict[str, dict[str, str]]]:
    breach = await create(
        client,
        auth,
        title=f"Mailbox {SCRIPT}",
        description=f"A rule forwarded mail. {IMAGE} {LINK}",
        mitigation=f"Rule removed {SCRIPT}",
        consequences=f"Phishing *quoting* `real` tickets | {IMAGE}",
    )
    await assess(client, auth, breach["id"])
    notice = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": f"DPC form {IMAGE}"},
        headers=auth,
    )
    assert notice.status_code == 201, notice.text
    documents: dict[str, dict[str, str]] = notice.json()["documents"]
    return breach["id"], documents


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_markdown_notice_carries_operator_markup_as_text(
    client: AsyncClient, auth: dict[str, str], language: str
) -> None:
    _, documents = await _documents(client, auth)
    markdown = await client.get(documents[language]["markdown"], headers=auth)
    assert markdown.status_code == 200, markdown.text
    body = markdown.text
    for raw in ("<script", "<img", "[open the report](", 'onerror="alert(1)">'):
        assert raw not in body
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in body
    assert "\\[open the report\\](javascript:alert(1))" in body
    assert "Phishing \\*quoting\\* \\`real\\` tickets \\|" in body


async def test_html_notice_carries_operator_markup_as_text(client: AsyncClient, auth: dict[str, str]) -> None:
    _, documents = await _documents(client, auth)
    html = await client.get(documents["en"]["html"], headers=auth)
    assert html.status_code == 200
    assert "<script>alert" not in html.text
    assert "<img src=x" not in html.text
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in html.text


async def test_breach_documents_name_their_charset_once(client: AsyncClient, auth: dict[str, str]) -> None:
    _, documents = await _documents(client, auth)
    markdown = await client.get(documents["en"]["markdown"], headers=auth)
    html = await client.get(documents["en"]["html"], headers=auth)
    register = await client.get("/v1/breaches/register.csv", headers=auth)
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert register.headers["content-type"] == "text/csv; charset=utf-8"


async def test_register_csv_neutralises_formulas_in_incident_texts(client: AsyncClient, auth: dict[str, str]) -> None:
    breach = await create(client, auth, title=FORMULA)
    register = await client.get("/v1/breaches/register.csv", headers=auth)
    [row] = [r for r in csv.DictReader(io.StringIO(register.text, newline="")) if r["id"] == breach["id"]]
    assert row["title"] == "'" + FORMULA
