"""How ``kis-token`` prints: human lines or one JSON document, errors as one line, secrets scrubbed."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..redaction import scrub

PROG = "kis-token"


class Output:
    """Prints results and errors; every line passes :func:`~..redaction.scrub` with the known secrets."""

    def __init__(self, as_json: bool, secrets: Sequence[str]) -> None:
        self.as_json = as_json
        self._secrets = list(secrets)

    def scrub(self, text: str) -> str:
        """Belt and braces: no message reaches the terminal with a known secret in it."""
        return scrub(text, self._secrets)

    def result(self, command: str, ok: bool, data: Mapping[str, Any], lines: Sequence[str]) -> None:
        """The command's result: ``lines`` for people, or ``{"command", "ok", **data}`` with ``--json``."""
        if self.as_json:
            document = {"command": command, "ok": ok, **data}
            print(self.scrub(json.dumps(document, ensure_ascii=False)))
        else:
            for line in lines:
                print(self.scrub(line))

    def error(self, command: str, message: str, code: int) -> int:
        """One line on stderr (and a JSON document on stdout with ``--json``); returns ``code``."""
        message = self.scrub(" ".join(message.split()))  # one line, whatever the exception said
        print(f"{PROG} {command}: error: {message}", file=sys.stderr)
        if self.as_json:
            print(
                json.dumps({"command": command, "ok": False, "error": message, "exit_code": code}, ensure_ascii=False)
            )
        return code


def duration(seconds: float) -> str:
    """``2h 05m``, ``3m 07s`` or ``9s`` (negative with a sign)."""
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def table(rows: Sequence[tuple[str, object]]) -> list[str]:
    """``label:  value`` lines, the values aligned."""
    width = max(len(label) for label, _ in rows) + 2
    return [f"{label + ':':<{width}}{value}" for label, value in rows]
