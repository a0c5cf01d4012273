"""The README stays a front door: short, and every link in it leads somewhere.

`mkdocs build --strict` checks the links inside docs/; the README lives outside the site, so its
links to pages (and anchors) are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub/MkDocs-style slugs of a page's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        text = re.sub(r"[`*_]|\{#[^}]*\}", "", heading).strip().lower()
        slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_every_relative_link_in_the_readme_resolves() -> None:
    text = README.read_text()
    targets = [link for link in _LINK.findall(text) if not re.match(r"[a-z]+:", link)]
    assert targets, "the README links to the documentation"
    broken = []
    for link in targets:
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
            broken.append(link)
    assert broken == []


def test_the_anchor_check_can_fail() -> None:
    assert "the-request-desk" in _anchors("## The request desk\n")
    assert "no-such-heading" not in _anchors("## The request desk\n")
