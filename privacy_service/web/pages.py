"""Rendering HTML pages with Jinja2 (autoescaped). Templates never hold inline scripts or styles."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import jinja2

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
