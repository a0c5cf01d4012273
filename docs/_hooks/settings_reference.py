"""MkDocs hook: every setting, generated at build time from ``privacy_service.config.Settings``.

``operations/settings.md`` lists each field as its environment variable, with its type, default,
bounds and the comment written above it in ``config.py``, so the list can never lag the code.
"""

from __future__ import annotations

import ast
import enum
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "privacy_service" / "config.py"
QUOTE = "'"
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def field_comments() -> dict[str, str]:
    """The comment lines directly above each field of ``class Settings`` in config.py."""
    source = CONFIG.read_text()
    lines = source.splitlines()
    settings = next(
        node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "Settings"
    )
    comments: dict[str, str] = {}
    for node in settings.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                above.insert(0, lines[index].strip().lstrip("#").strip())
                index -= 1
            comments[node.target.id] = " ".join(above)
    return comments


def show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple | set | frozenset):
        return "`" + ",".join(str(item) for item in value) + "`" if value else "empty"
    if isinstance(value, dict):
        return "`" + ", ".join(f"{key}: {item}" for key, item in value.items()) + "`" if value else "empty"
    return f"`{value}`"


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    text = re.sub(r"typing\.|pathlib\.|pydantic\.types\.|privacy_service\.config\.|<class '([^']+)'>", r"\1", text)
    text = re.sub(r"Annotated\[([^,\]]+(?:\[[^\]]*\])?), [^\]]*\]", r"\1", text)
    text = re.sub(r"Literal\[([^\]]*)\]", lambda m: " or ".join(f"`{v.strip(QUOTE)}`" for v in m[1].split(", ")), text)
    return text.replace("|", "or")


def render() -> str:
    from privacy_service.config import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    comments = field_comments()
    out = [
        "# Every setting",
        "",
        "Generated at build time from `privacy_service/config.py` (the `Settings` class), so this list",
        "is always complete. Each setting is an environment variable, or a line in a `.env` file in",
        "the working directory; relative paths are relative to the working directory.",
        "[Configuration](configuration.md) explains the main ones and the rate limit syntax; the guide",
        "of each feature explains its own.",
        "",
        "| Setting | Type | Default | Allowed | Notes (from config.py) |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        bounds = [
            f"{symbol} {getattr(item, attr)}"
            for item in field.metadata
            for attr, symbol in _BOUNDS.items()
            if getattr(item, attr, None) is not None
        ]
        note = comments.get(name, "").replace("|", "\\|")
        out.append(
            f"| `{prefix}{name.upper()}` | {type_name(field.annotation)} | {show(default)} | "
            f"{', '.join(bounds)} | {note} |"
        )
    return "\n".join(out) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "operations/settings.md", content=render()))
    return files
