"""The console's subjects area: look up a subject by e-mail, phone or external id (audited as a read); a subject's
records, kept data, legal holds and erasure.

Built by issue 17; the page's scopes are declared in ``access.PAGES["subjects"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class SubjectsConsole(Controller):
    path = f"{CONSOLE_PATH}/subjects"
    include_in_schema = False
