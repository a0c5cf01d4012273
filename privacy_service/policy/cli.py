"""``privacy-service policy ...`` commands: check the files, publish a version, compare versions."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from privacy_service.cli_support import fail, settings_or_exit, stderr, with_runtime
from privacy_service.runtime import Runtime

policy_app = typer.Typer(help="Policy files: validate, publish, compare.", no_args_is_help=True)


@policy_app.command("check")
def policy_check(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Check calendar coverage as of this day (YYYY-MM-DD; default today, UTC)."),
    ] = None,
) -> None:
    """Validate the policy files (no database needed); exits 1 listing each problem as file: path: problem.

    Warnings (exit 0): a regime calendar with no data for a year a deadline started today can reach."""
    from privacy_service.policy.loader import check_policy

    settings = settings_or_exit()
    document, problems = check_policy(settings.policy_dir)
    if document is None:
        for problem in problems:
            stderr.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise fail(f"{len(problems)} problem(s) in {settings.policy_dir}", 1)
    from datetime import UTC, date, datetime

    from privacy_service.policy.loader import calendar_warnings

    try:
        today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    except ValueError:
        raise fail("--as-of takes a date, YYYY-MM-DD") from None
    for warning in calendar_warnings(document, today):
        stderr.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    from privacy_service.breaches.policy import check_breach_policy

    breach, breach_problems = check_breach_policy(settings.policy_dir, document)
    if breach is None:
        for problem in breach_problems:
            stderr.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise fail(f"{len(breach_problems)} problem(s) in {settings.policy_dir}", 1)
    from privacy_service.connections.datasets import DatasetError, check_datasets, load_datasets

    try:
        datasets = load_datasets(settings.policy_dir / "datasets")
    except DatasetError as exc:
        raise fail(f"datasets/{exc}", 1) from None
    findings = check_datasets(datasets, document)
    for finding in findings:
        stderr.print(str(finding), highlight=False, markup=False, soft_wrap=True)
    errors = sum(finding.level == "error" for finding in findings)
    if errors:
        raise fail(f"{errors} problem(s) in {settings.policy_dir / 'datasets'}", 1)
    stderr.print(
        f"policy {document.version} is valid: {len(document.data_categories)} data categories, "
        f"{len(document.retention_rules())} retention rules, languages {', '.join(document.languages)}",
        highlight=False,
    )


@policy_app.command("publish")
def policy_publish() -> None:
    """Record the policy files as a new immutable version (refused if it is already published)."""
    from privacy_service.audit.service import Actor
    from privacy_service.policy.service import publish

    async def work(runtime: Runtime) -> tuple[str, str]:
        async with runtime.db.transaction() as session:
            row = await publish(
                session,
                runtime.policy,
                now=runtime.clock.now(),
                base_url=runtime.settings.base_url,
                actor=Actor.system("policy-publish"),
            )
            return row.version, row.content_hash

    version, content_hash = with_runtime(work)
    stderr.print(f"published policy version {version} (sha256 {content_hash})", highlight=False)


@policy_app.command("diff")
def policy_diff(
    old: Annotated[str | None, typer.Argument(help="Published version to compare from.")] = None,
    new: Annotated[str | None, typer.Argument(help="Published version to compare to.")] = None,
    files: Annotated[
        bool,
        typer.Option("--files", help="Compare the policy files with OLD (default: the latest published version)."),
    ] = False,
) -> None:
    """Show what changed between two published versions (or a version and the files), path by path."""
    from privacy_service.policy.service import diff_sources, get_version, latest_version

    if files and new is not None:
        raise fail("with --files give at most one version (the one to compare the files with)")
    if not files and (old is None or new is None):
        raise fail("give two versions, e.g. `policy diff 2026.1 2026.2`, or use --files")

    async def work(runtime: Runtime) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        async with runtime.db.transaction() as session:
            if files:
                base = await get_version(session, old) if old else await latest_version(session)
                if base is None:
                    raise fail("no policy version is published yet; nothing to compare with", 1)
                return base.version, "files", base.document["source"], runtime.policy.source()
            first, second = await get_version(session, old or ""), await get_version(session, new or "")
            return first.version, second.version, first.document["source"], second.document["source"]

    label_old, label_new, before, after = with_runtime(work)
    changes = diff_sources(before, after)
    for change in changes:
        sys.stdout.write(f"{change}\n")
    stderr.print(f"{len(changes)} change(s) from {label_old} to {label_new}", highlight=False)
