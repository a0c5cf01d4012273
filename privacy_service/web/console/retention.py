"""The console's retention area: the purge: dry-run preview, a run started and followed live, run reports, the safety
threshold and a forced run with a reason.

Built by issue 17; the page's scopes are declared in ``access.PAGES["retention"]``.
"""

from __future__ import annotations

from litestar import Controller

from privacy_service.web.console.sessions import CONSOLE_PATH


class RetentionConsole(Controller):
    path = f"{CONSOLE_PATH}/retention"
    include_in_schema = False
