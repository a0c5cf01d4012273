"""``privacy-service policy ...`` commands."""

from __future__ import annotations

import typer

from privacy_service.cli_support import fail, settings_or_exit, stderr

policy_app = typer.Typer(help="Policy files: validate, publish, compare.", no_args_is_help=True)


@policy_app.command("check")
def policy_check() -> None:
    """Validate the policy files; exits 1 with the file, path and problem if they are invalid."""
    from privacy_service.policy.loader import PolicyError, load_policy

    settings = settings_or_exit()
    try:
        document = load_policy(settings.policy_dir)
    except PolicyError as exc:
        raise fail(str(exc), 1) from None
    stderr.print(f"policy {document.version} is valid ({len(document.data_categories)} data categories)")
