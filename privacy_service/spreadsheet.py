"""CSV cells a spreadsheet will not run: every CSV the service writes goes through :func:`csv_cell`.

A cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return in front of one) is
read by Excel, LibreOffice and Google Sheets as a formula, e.g. ``=HYPERLINK("https://evil", "x")``
in a customer's own profile. Such text is written with a leading apostrophe (OWASP "CSV
injection"), which spreadsheets show as text and do not display; the value stays readable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: Any) -> str:
    """``value`` as CSV cell text: ``None`` is empty, anything else its ``str``, neutralised."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """Rows as CSV text, every cell through :func:`csv_cell`."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()
