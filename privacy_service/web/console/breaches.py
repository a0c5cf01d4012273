"""The console's breaches area: the incident list and an incident's workspace: facts, ENISA assessment, decisions, the
72 h clock, the Art. 33 document, subject notifications, the register.

Built by issue 17; the page's scopes are declared in ``access.PAGES["breaches"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class BreachesConsole(Controller):
    path = f"{CONSOLE_PATH}/breaches"
    include_in_schema = False
