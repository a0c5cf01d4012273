"""Loading and validating the policy directory."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from privacy_service.policy.document import PolicyDocument

POLICY_FILE = "policy.yaml"


class PolicyError(Exception):
    """The policy files are missing or invalid; the message names the file and the problem."""


def load_policy(directory: Path) -> PolicyDocument:
    path = directory / POLICY_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{path}: policy file not found (set PRIVACY_POLICY_DIR)") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    try:
        return PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise PolicyError(f"{path}: {where}: {first['msg']}") from None
