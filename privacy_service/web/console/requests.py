"""The console's requests area: the requests queue and a request's page: filters, keyset pages, history, the verified
identity, the customer's note, the changes as a diff, the deadline and extensions; approve, deny, extend, cancel.

Built by issue 17; the page's scopes are declared in ``access.PAGES["requests"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class RequestsConsole(Controller):
    path = f"{CONSOLE_PATH}/requests"
    include_in_schema = False
