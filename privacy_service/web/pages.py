"""Rendering HTML pages with Jinja2 (autoescaped). Templates never hold inline scripts or styles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from litestar import Response
from litestar.datastructures import Cookie

from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.pages import CURRENT_CACHE_CONTROL, Page, PageCache, effective_since, make_page
from privacy_service.policy.render import policy_view

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
HTML_MEDIA_TYPE = "text/html"  # Litestar adds "; charset=utf-8"
HTML_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in text.split("\n\n") if part.strip()]


environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["paragraphs"] = _paragraphs


def html_response(
    template: str,
    context: Mapping[str, Any],
    *,
    csp: str,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    cookies: list[Cookie] | None = None,
) -> Response[bytes]:
    """A page holding one visitor's (or operator's) data: rendered from ``template``, under ``csp``, in the
    context's language and never cached. The portal and the console both answer through it, so neither can
    drift from the other on these headers."""
    body = environment.get_template(template).render(**context).encode()
    return Response(
        content=body,
        status_code=status_code,
        media_type=HTML_MEDIA_TYPE,
        headers={
            "Content-Security-Policy": csp,
            "Content-Language": str(context["language"]),
            "Cache-Control": "no-store",
            **(headers or {}),
        },
        cookies=cookies or [],
    )


def render_privacy_notice(document: PolicyDocument, language: str) -> bytes:
    """The notice as an accessible HTML page: the same view the JSON endpoint publishes."""
    languages = [
        {"code": code, "name": document.notices[code].labels.language_name, "current": code == language}
        for code in document.languages
    ]
    html = environment.get_template("policy/privacy.html").render(
        language=language,
        view=policy_view(document, language),
        labels=document.notices[language].labels.model_dump(),
        languages=languages,
    )
    return html.encode()


def privacy_notice_page(cache: PageCache, document: PolicyDocument, language: str, *, now: datetime) -> Page:
    def build() -> Page:
        return make_page(
            render_privacy_notice(document, language),
            HTML_MEDIA_TYPE,
            language=language,
            last_modified=effective_since(document, now),
            cache_control=CURRENT_CACHE_CONTROL,
            extra_headers={"Content-Security-Policy": HTML_CSP},
        )

    return cache.get((document.content_hash, language, "html"), build)
