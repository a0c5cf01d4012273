"""``privacy-service systems add|list|remove`` as a real subprocess on a fresh SQLite database."""

from __future__ import annotations

import re
from pathlib import Path

from privacy_service.config import Settings
from tests.integration.test_cli import ROOT, cli, cli_all, ok, one_line_error

KEY_LINE = re.compile(r"^pss_[A-Za-z0-9_-]{43}$")
# A public address literal: the test machine has no DNS, and the default refuses private networks.
PUBLIC_ADDRESS = "93.184.215.14"


def test_add_list_remove(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/privacy.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    ok(cli(settings, "db", "upgrade"))
    added = ok(
        cli(
            settings,
            "systems", "add", "--name", "helpdesk", "--url", f"https://{PUBLIC_ADDRESS}/privacy",
            "--types", "access,erase", "--categories", "system.support_ticket,user.contact.email",
            "--identities", "email", "--timeout", "5", "--optional",
        )
    )  # fmt: skip
    key = added.stdout.strip().splitlines()[-1]
    assert KEY_LINE.match(key), added.stdout
    assert "not shown again" in added.stderr
    listed = ok(cli(settings, "systems", "list"))
    assert "helpdesk" in listed.stdout
    assert "erase" in listed.stdout
    assert key not in listed.stdout
    one_line_error(
        cli(settings, "systems", "add", "--name", "x", "--url", "https://x.example", "--types", "access",
            "--categories", "user.unknown_thing"),
        "categories",
    )  # fmt: skip
    one_line_error(
        cli(settings, "systems", "add", "--name", "x", "--url", "http://x.example", "--types", "access",
            "--categories", "user.name"),
        "https",
    )  # fmt: skip
    refused = ("http://127.0.0.1:5432/", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/")
    for result in cli_all(
        settings,
        *(("systems", "add", "--name", "x", "--url", url, "--types", "access", "--categories", "user.name")
          for url in refused),
    ):  # fmt: skip
        one_line_error(result, "public internet addresses")
    removed = ok(cli(settings, "systems", "remove", "--name", "helpdesk"))
    assert "removed" in removed.stderr
    assert "helpdesk" not in ok(cli(settings, "systems", "list")).stdout
    assert "helpdesk" in ok(cli(settings, "systems", "list", "--all")).stdout
    one_line_error(cli(settings, "systems", "remove", "--name", "helpdesk"), "no registered system")
