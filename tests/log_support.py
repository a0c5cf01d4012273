"""A stand-in for a module's structlog logger in tests: ``monkeypatch.setattr(module, "log", Recorder())``."""

from __future__ import annotations

from typing import Any


class Recorder:
    """A logger that keeps (level, event, members) of every line, whatever structlog cached."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def method(event: str, **members: Any) -> None:
            self.lines.append((level, event, members))

        return method

    def events(self) -> list[str]:
        return [event for _, event, _ in self.lines]
