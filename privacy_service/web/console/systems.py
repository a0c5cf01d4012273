"""The console's systems area: downstream systems, their delivery health, retrying a dead delivery.

Built by issue 17; the page's scopes are declared in ``access.PAGES["systems"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class SystemsConsole(Controller):
    path = f"{CONSOLE_PATH}/systems"
    include_in_schema = False
