"""One-time warnings for settings that work but are probably not what was meant.

A misconfiguration that still runs (a Redis URL nobody reads, a rate above
KIS's budget) must be said once, where an operator reads logs, and not on
every call: the warning names the variable and the fix, and is logged once per
process for each distinct key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

_WARNED: set[Hashable] = set()
_LOCK = threading.Lock()


def warn_once(logger: logging.Logger, key: Hashable, message: str, *args: object) -> bool:
    """Log ``message`` at WARNING through ``logger`` unless ``key`` was warned already; True if logged."""
    with _LOCK:
        if key in _WARNED:
            return False
        _WARNED.add(key)
    logger.warning(message, *args)
    return True


def forget() -> None:
    """Warn again about everything (for tests that check a warning is given once)."""
    with _LOCK:
        _WARNED.clear()


__all__ = ["forget", "warn_once"]
