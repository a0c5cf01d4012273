"""Helpers for tests that need a modified copy of the shipped policy files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def copy_policies(target: Path) -> Path:
    """A private copy of policies/ (tests never touch the shipped files)."""
    folder = target / "policies"
    shutil.copytree(POLICIES, folder)
    return folder


def edit_yaml(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Load a policy file, let ``change`` mutate it in place, write it back (comments are lost)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
