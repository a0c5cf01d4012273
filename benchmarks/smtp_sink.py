"""An SMTP server for load runs, in a process of its own: ``python -m benchmarks.smtp_sink PORT FILE``.

Each message that arrives is recorded as one line of ``FILE``: the arrival on the system-wide
monotonic clock (``time.monotonic()``, comparable with the bench process's), then its To and
Message-ID headers, tab-separated. Only the headers are parsed. It answers "ready" on stdout once
it listens, and stops when its stdin closes.

A mail server sits on another machine, not in the load generator: in the bench's own process its
thread would share the interpreter lock with the sixteen clients, and a busy generator would slow
delivery down as no real server does (see ``benchmarks.mail.sustained``).
"""

from __future__ import annotations

import sys
import time
from email.parser import BytesHeaderParser
from typing import Any, TextIO

from aiosmtpd.controller import Controller


class Recorder:
    """aiosmtpd handler writing one line per message."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._parser = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.monotonic()
        headers = self._parser.parsebytes(envelope.original_content or envelope.content)
        self._out.write(f"{at!r}\t{headers['To']}\t{headers['Message-ID']}\n")
        self._out.flush()
        return "250 OK"


def main(argv: list[str]) -> None:
    port, path = int(argv[0]), argv[1]
    with open(path, "a", encoding="utf-8") as out:
        controller = Controller(Recorder(out), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            print("ready", flush=True)
            sys.stdin.read()  # until the bench closes it
        finally:
            controller.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
