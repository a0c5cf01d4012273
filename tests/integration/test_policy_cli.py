"""`policy publish` and `policy diff`, run as real subprocesses against both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.policy_files import copy_policies, edit_yaml


def policy_cli(settings: Settings, policy_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(policy_dir),
        PRIVACY_LOG_LEVEL="WARNING",
        COLUMNS="200",
    )
    if settings.keystore_path is not None:
        env["PRIVACY_KEYSTORE_PATH"] = str(settings.keystore_path)
    return subprocess.run(  # noqa: S603 - fixed argv: this interpreter running this package
        [sys.executable, "-m", "privacy_service", "policy", *args],
        env=env,
        cwd=settings.keyring_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_publish_then_diff(runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    shipped = settings.policy_dir
    version = runtime.policy.version

    first = policy_cli(settings, shipped, "publish")
    assert first.returncode == 0, first.stderr
    assert f"published policy version {version} (sha256 {runtime.policy.content_hash})" in first.stderr

    unchanged = policy_cli(settings, shipped, "diff", "--files")
    assert unchanged.returncode == 0, unchanged.stderr
    assert unchanged.stdout == ""
    assert f"0 change(s) from {version} to files" in unchanged.stderr

    folder = copy_policies(tmp_path / "next")
    edit_yaml(folder / "policy.yaml", lambda d: d["data_categories"]["user.device"]["retention"].update(period="P1Y"))
    not_bumped = policy_cli(settings, folder, "publish")
    assert not_bumped.returncode == 1
    assert "bump `version` in policy.yaml" in not_bumped.stderr
    assert "Traceback" not in not_bumped.stderr

    pending = policy_cli(settings, folder, "diff", "--files")
    assert pending.stdout.splitlines() == ['~ policy.data_categories.user.device.retention.period: "P13M" -> "P1Y"']

    bumped = f"{version}.1"
    edit_yaml(folder / "policy.yaml", lambda d: d.update(version=bumped))
    second = policy_cli(settings, folder, "publish")
    assert second.returncode == 0, second.stderr

    diff = policy_cli(settings, folder, "diff", version, bumped)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [
        '~ policy.data_categories.user.device.retention.period: "P13M" -> "P1Y"',
        f'~ policy.version: "{version}" -> "{bumped}"',
    ]

    unknown = policy_cli(settings, folder, "diff", version, "no-such-version")
    assert unknown.returncode == 1
    assert "no published policy version has this name" in unknown.stderr
