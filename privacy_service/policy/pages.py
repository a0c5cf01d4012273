"""Serving rendered policy bytes: language negotiation, a render cache, ETag/Last-Modified and 304s.

A policy changes only when the process loads new files, so every (content, language, format) is
rendered once and served as bytes with precomputed headers; the request path only negotiates and
compares validators.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any

from litestar import Response
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.render import JSON_MEDIA_TYPE, JSONLD_MEDIA_TYPE, encode, policy_jsonld, policy_view

CURRENT_CACHE_CONTROL = "public, max-age=300"
# A published version never changes.
VERSION_CACHE_CONTROL = "public, max-age=86400, immutable"
FORMATS: Mapping[str, str] = {"json": JSON_MEDIA_TYPE, "jsonld": JSONLD_MEDIA_TYPE}


@dataclass(frozen=True, slots=True)
class Page:
    """Rendered bytes and the response headers that go with them."""

    body: bytes
    media_type: str
    etag: str
    last_modified: datetime
    headers: Mapping[str, str]

    def not_modified(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        """RFC 9110 §13.1: If-None-Match (weak comparison) wins over If-Modified-Since."""
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or self.etag in tags
        if if_modified_since is not None:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False
            if since.tzinfo is None:
                return False
            return self.last_modified <= since
        return False


def make_page(
    body: bytes,
    media_type: str,
    *,
    language: str,
    last_modified: datetime,
    cache_control: str,
    extra_headers: Mapping[str, str] | None = None,
) -> Page:
    """A page whose strong ETag is a hash of its bytes (so it changes exactly when they do)."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    last_modified = last_modified.astimezone(UTC).replace(microsecond=0)
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(last_modified, usegmt=True),
        "Cache-Control": cache_control,
        "Content-Language": language,
        "Vary": "Accept-Language",
        **(extra_headers or {}),
    }
    return Page(body=body, media_type=media_type, etag=etag, last_modified=last_modified, headers=headers)


def respond(page: Page, request_headers: Mapping[str, str]) -> Response[bytes]:
    if page.not_modified(request_headers.get("if-none-match"), request_headers.get("if-modified-since")):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=dict(page.headers))
    return Response(content=page.body, media_type=page.media_type, headers=dict(page.headers))


class PageCache:
    """Rendered pages by key (content hash, language, format); bounded, oldest dropped first."""

    def __init__(self, max_entries: int = 64) -> None:
        self._pages: OrderedDict[tuple[str, ...], Page] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], build: Callable[[], Page]) -> Page:
        page = self._pages.get(key)
        if page is not None:
            return page
        page = build()
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self._max:
                self._pages.popitem(last=False)
        return page


def _primary(tag: str) -> str:
    return tag.strip().lower().replace("_", "-").split("-", 1)[0]


@lru_cache(maxsize=512)
def _from_accept_language(header: str, supported: tuple[str, ...]) -> str:
    choices: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:32]):
        tag, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and tag.strip():
            choices.append((-quality, index, tag.strip()))
    for _, _, tag in sorted(choices):
        if tag == "*":
            return supported[0]
        if _primary(tag) in supported:
            return _primary(tag)
    return supported[0]


def negotiate_language(explicit: str | None, accept_language: str | None, supported: Sequence[str]) -> str:
    """``?lang=`` first, then ``Accept-Language`` by q-value; anything unsupported gets the default."""
    languages = tuple(supported)
    if explicit:
        primary = _primary(explicit)
        return primary if primary in languages else languages[0]
    if accept_language:
        return _from_accept_language(accept_language[:512], languages)
    return languages[0]


def effective_since(document: PolicyDocument, now: datetime) -> datetime:
    """Last-Modified of the current policy: its effective date, or the files' change if later.

    The file time matters when the files are edited without a new effective date: a client that
    revalidates with If-Modified-Since alone must not be told that nothing changed.
    """
    effective = datetime.combine(document.effective_date, time.min, tzinfo=UTC)
    if document.modified_at is not None:
        effective = max(effective, document.modified_at)
    return min(effective, now)


def current_policy_page(
    cache: PageCache, document: PolicyDocument, language: str, fmt: str, *, base_url: str, now: datetime
) -> Page:
    def build() -> Page:
        body: Any
        if fmt == "jsonld":
            body = policy_jsonld(document, language, base_url)
        else:
            body = policy_view(document, language)
        return make_page(
            encode(body),
            FORMATS[fmt],
            language=language,
            last_modified=effective_since(document, now),
            cache_control=CURRENT_CACHE_CONTROL,
        )

    return cache.get((document.content_hash, language, fmt), build)
