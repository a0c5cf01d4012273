"""Message templates per language (``templates/<lang>/<name>.txt``; first line ``Subject: ...``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, TemplateNotFound, select_autoescape
from jinja2.runtime import new_context

LANGUAGES = ("en", "zh")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Plain-text mail: HTML escaping would corrupt it, and nothing rendered here is ever HTML.
    # The templates ship with the package: no need to stat their files on every message.
    return Environment(
        loader=PackageLoader("privacy_service.notify", "templates"),
        auto_reload=False,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
    )


@lru_cache(maxsize=128)
def _template(name: str, language: str) -> tuple[Template, dict[str, Any]]:
    """The compiled template for (name, one of LANGUAGES), looked up once (the English one where the
    language has none), with its globals as one plain dict: Jinja's own render merges them from a
    ``ChainMap`` on every call, which cost as much as rendering the code mail itself."""
    try:
        template = _environment().get_template(f"{language}/{name}.txt")
    except TemplateNotFound:
        template = _environment().get_template(f"en/{name}.txt")
    return template, dict(template.globals)


def render(name: str, language: str, **context: Any) -> tuple[str, str]:
    """Return (subject, body) for a template in the language, falling back to English."""
    lang = language if language in LANGUAGES else "en"
    template, template_globals = _template(name, lang)
    environment = template.environment
    try:
        # What Template.render does, with the globals merged once (see _template).
        text = environment.concat(
            template.root_render_func(
                new_context(environment, template.name, template.blocks, context, False, template_globals)
            )
        )
    except Exception:
        environment.handle_exception()
    first, _, body = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"template {lang}/{name} must start with 'Subject:'")
    return first.removeprefix("Subject:").strip(), body.lstrip("\n")
