"""The console's audit area: audit search by subject, actor, action and time, and verifying the chain.

Built by issue 17; the page's scopes are declared in ``access.PAGES["audit"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class AuditConsole(Controller):
    path = f"{CONSOLE_PATH}/audit"
    include_in_schema = False
