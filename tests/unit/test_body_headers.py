"""The JSON-only check reads the raw ASGI headers (app._body_and_media_type) instead of building
Litestar's ``Headers`` for every request; it must read them as ``Headers`` does."""

from __future__ import annotations

import pytest
from litestar.datastructures import Headers

from privacy_service.app import _body_and_media_type

HEADER_SETS = [
    [],
    [(b"content-length", b"0")],
    [(b"content-length", b" 0 ")],
    [(b"content-length", b"")],
    [(b"content-length", b"12"), (b"content-type", b"application/json")],
    [(b"Content-Length", b"12"), (b"Content-Type", b"Application/JSON; charset=utf-8")],
    [(b"content-type", b"text/plain"), (b"content-length", b"3")],
    [(b"content-type", b"application/merge-patch+json"), (b"content-length", b"2")],
    [(b"transfer-encoding", b"chunked"), (b"content-type", b"text/plain")],
    [(b"Transfer-Encoding", b"chunked")],
    # Sent twice: the first of each counts, as Headers.get gives it.
    [(b"content-type", b"application/json"), (b"content-type", b"text/plain"), (b"content-length", b"5")],
    [(b"content-type", b"text/plain"), (b"Content-Type", b"application/json"), (b"content-length", b"5")],
    [(b"content-length", b"0"), (b"content-length", b"7"), (b"content-type", b"text/plain")],
    [(b"content-length", b""), (b"content-length", b"7")],
    [(b"content-type", b""), (b"content-type", b"application/json"), (b"content-length", b"1")],
    # Latin-1 bytes and whitespace str.strip knows (a no-break space) but bytes.strip does not.
    [(b"content-length", b"\xa00"), (b"content-type", b"\xe9/json")],
    [(b"content-length", b"5"), (b"content-type", b" ; charset=utf-8")],
]


def _as_litestar_reads_them(raw: list[tuple[bytes, bytes]]) -> tuple[bool, str]:
    headers = Headers(raw)
    has_body = "transfer-encoding" in headers or headers.get("content-length", "").strip() not in ("", "0")
    return has_body, headers.get("content-type", "").split(";", 1)[0].strip().lower()


@pytest.mark.parametrize("raw", HEADER_SETS)
def test_the_raw_headers_are_read_as_litestars_headers_read_them(raw: list[tuple[bytes, bytes]]) -> None:
    assert _body_and_media_type(raw) == _as_litestar_reads_them(raw)
