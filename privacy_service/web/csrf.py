"""CSRF protection for the HTML forms (the portal's and the console's): one mechanism, Litestar's
double-submit CSRF middleware, mounted per router so that the ``/v1`` API stays free of it.

The tokens are signed with ``PRIVACY_CSRF_SECRET`` if set, else with ``derived_secret`` (the runtime's,
from the audit key): the same in every process, so a form served by one API process is accepted by
another. Each router has its own cookie, scoped to its path.
"""

from __future__ import annotations

from litestar.config.csrf import CSRFConfig
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware

from privacy_service.config import Settings

CSRF_FIELD = "_csrf_token"  # the hidden form field the templates fill in (Litestar's default name)


def csrf_middleware(
    settings: Settings, derived_secret: bytes, *, cookie_name: str, cookie_path: str
) -> DefineMiddleware:
    secret = settings.csrf_secret.get_secret_value() if settings.csrf_secret else derived_secret.hex()
    config = CSRFConfig(
        secret=secret,
        cookie_name=cookie_name,
        cookie_path=cookie_path,
        cookie_secure=settings.base_url.startswith("https://"),
        cookie_httponly=True,
        cookie_samesite="strict",
    )
    return DefineMiddleware(CSRFMiddleware, config=config)
