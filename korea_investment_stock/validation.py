"""The one validator for every setting in seconds: waits, deadlines, timeouts.

NaN would make every comparison false (a token that never expires, a wait
that never ends) and infinity would make a wait endless, so every public
setting that bounds time passes through :func:`check_seconds`, and every
(connect, read) timeout through :func:`check_timeout`.
"""

from __future__ import annotations

import math
from typing import TypeAlias

from .errors import ConfigurationError

#: A timeout as callers may give it: seconds for both phases, or (connect, read).
TimeoutSetting: TypeAlias = float | tuple[float, float]


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as float seconds, or :class:`ConfigurationError` naming ``name``.

    ``positive`` also refuses 0, for settings that are divided or slept in a loop.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"{name} must be a finite, non-negative number of seconds, got {value!r}")
    if positive and value == 0:
        raise ConfigurationError(f"{name} must be more than 0 seconds, got {value!r}")
    return float(value)


def check_timeout(value: object, name: str = "timeout") -> tuple[float, float]:
    """A (connect, read) pair of positive finite seconds from seconds or a pair."""
    pair = (value, value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ConfigurationError(f"{name} must be positive seconds or a (connect, read) pair, got {value!r}")
    connect, read = (
        check_seconds(f"{name} ({phase})", t, positive=True) for phase, t in zip(("connect", "read"), pair, strict=True)
    )
    return (connect, read)
