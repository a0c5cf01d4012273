"""The portal's words in each language, the visitor's language, and dates in that language (Babel).

The policy's own words (categories, rights, regimes, profile fields) come from ``notice.<lang>.yaml``;
the words of the portal itself come from ``messages/<lang>.yaml`` beside this file. Every catalog
must have exactly the keys of the default one (checked when the app starts and in the tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from babel import Locale
from babel.dates import format_date, format_time, get_datetime_format
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from privacy_service.policy.pages import negotiate_language

MESSAGES = Path(__file__).parent / "messages"
LANGUAGE_COOKIE = "privacy_lang"
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600


def _load(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise TypeError(f"messages/{path.relative_to(MESSAGES)}: expected a mapping")
    return raw


def _merge(into: dict[str, Any], fragment: Mapping[str, Any], where: str) -> None:
    """Adds a fragment's keys; a key both define (a leaf, or a leaf against a section) is an error."""
    for key, value in fragment.items():
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, Mapping):
            _merge(into[key], value, f"{where}{key}.")
        else:
            raise ValueError(f"messages: {where}{key} is defined twice")


@lru_cache(maxsize=8)
def messages(language: str) -> Mapping[str, Any]:
    """The portal's and the console's catalog for one language (a nested mapping; templates read
    ``m.section.key``): ``messages/<lang>.yaml``, with the fragments in ``messages/<lang>/*.yaml`` merged in
    (one per console area, so each area's words live beside each other)."""
    catalog = _load(MESSAGES / f"{language}.yaml")
    for fragment in sorted((MESSAGES / language).glob("*.yaml")):
        _merge(catalog, _load(fragment), "")
    return catalog


def _keys(tree: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _keys(value, path + ".")
        else:
            yield path


def check_catalogs(languages: Sequence[str]) -> None:
    """Every policy language has a catalog with the same keys as the first; else ValueError."""
    base = set(_keys(messages(languages[0])))
    for language in languages[1:]:
        if not (MESSAGES / f"{language}.yaml").is_file():
            raise ValueError(f"the policy lists language {language!r} but the portal has no messages/{language}.yaml")
        keys = set(_keys(messages(language)))
        if keys != base:
            missing = ", ".join(sorted(base - keys)[:5]) or "-"
            extra = ", ".join(sorted(keys - base)[:5]) or "-"
            raise ValueError(f"messages/{language}.yaml: missing {missing}; not in {languages[0]}: {extra}")


def _supported(choice: str | None, supported: Sequence[str]) -> str | None:
    if not choice:
        return None
    language = negotiate_language(choice[:35], None, supported)
    return language if language == choice[:35].lower().replace("_", "-").split("-", 1)[0] else None


def chosen_by_query(connection: ASGIConnection[Any, Any, Any, Any], supported: Sequence[str]) -> str | None:
    """A supported ``?lang=``, which the portal then remembers in a cookie."""
    return _supported(connection.query_params.get("lang"), supported)


def remembered_choice(
    connection: ASGIConnection[Any, Any, Any, Any], language: str, *, path: str, samesite: Literal["lax", "strict"]
) -> list[Cookie]:
    """The cookie that remembers a ``?lang=`` choice for the next pages under ``path`` (none without a choice).
    The portal and the console differ only in ``path`` and ``samesite``; HttpOnly, a year, and Secure behind
    https are the same for both."""
    if chosen_by_query(connection, connection.app.state.policy.languages) != language:
        return []
    return [
        Cookie(
            key=LANGUAGE_COOKIE,
            value=language,
            path=path,
            max_age=LANGUAGE_COOKIE_MAX_AGE,
            httponly=True,
            samesite=samesite,
            secure=connection.app.state.runtime.settings.base_url.startswith("https://"),
        )
    ]


def requested_language(connection: ASGIConnection[Any, Any, Any, Any], supported: Sequence[str]) -> str | None:
    """The language the visitor chose: ``?lang=`` first, then the cookie that remembers it."""
    return chosen_by_query(connection, supported) or _supported(connection.cookies.get(LANGUAGE_COOKIE), supported)


def visitor_language(
    connection: ASGIConnection[Any, Any, Any, Any], supported: Sequence[str], preferred: str | None = None
) -> str:
    """The visitor's choice, else ``preferred`` (a request's own language), else ``Accept-Language``."""
    chosen = requested_language(connection, supported)
    if chosen is not None:
        return chosen
    if preferred in supported:
        return str(preferred)
    return negotiate_language(None, connection.headers.get("accept-language"), supported)


def format_locale(language: str) -> str:
    """The locale (BCP 47) dates are written in for a language, e.g. ``en-IE``: the catalog's ``times.locale``."""
    return str(messages(language)["times"]["locale"])


def _babel(language: str) -> Locale:
    return Locale.parse(format_locale(language), sep="-")


def long_date(value: datetime, language: str) -> str:
    """A day as people write it (``1 March 2026``, ``2026年3月1日``); days are UTC days."""
    return format_date(value.astimezone(UTC).date(), "long", locale=_babel(language))


def date_time(value: datetime, language: str, zone: tzinfo) -> str:
    """A moment as the language writes it, in ``zone``: ``3 December 2026, 07:57``, ``2026年12月3日 15:57``."""
    locale = _babel(language)
    moment = value.astimezone(zone)
    pattern = str(get_datetime_format("medium", locale=locale)).replace("'", "")
    time = format_time(moment, "short", tzinfo=zone, locale=locale)
    return pattern.format(time, format_date(moment.date(), "long", locale=locale))


@dataclass(frozen=True, slots=True)
class LocalTime:
    """A moment for a ``<time>`` element: ISO 8601 in UTC for the browser, text in the policy's zone."""

    iso: str
    text: str


def local_time(value: datetime, language: str, zone: tzinfo) -> LocalTime:
    """The server writes the moment in the policy's zone; portal.js rewrites it in the browser's own."""
    return LocalTime(iso=value.astimezone(UTC).isoformat(), text=date_time(value, language, zone))


def language_links(languages: Sequence[str], page_path: str, current: str) -> list[dict[str, Any]]:
    """The language switcher of a page (portal or console): each language by its own name, linking to this page."""
    return [
        {
            "code": code,
            "name": messages(code)["language_name"],
            "href": f"{page_path}?lang={code}",
            "current": code == current,
        }
        for code in languages
    ]
