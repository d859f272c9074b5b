"""The one validator for every setting in seconds: waits, deadlines, timeouts.

NaN would make every comparison false (a token that never expires, a wait
that never ends) and infinity would make a wait endless, so every public
setting that bounds time passes through :func:`check_seconds`, and every
(connect, read) timeout through :func:`check_timeout`.  A finite but huge
number fails too, later and worse: ``Event.wait(1e10)`` raises
``OverflowError`` (beyond ``threading.TIMEOUT_MAX``), so every setting is
capped at :data:`MAX_SECONDS`, far above any wait that makes sense.
"""

from __future__ import annotations

import math
from typing import TypeAlias

from .errors import ConfigurationError

#: The longest any setting in seconds may be: one week (``threading.TIMEOUT_MAX`` is about 292 years).
MAX_SECONDS = 7 * 24 * 3600.0

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
    if value > MAX_SECONDS:
        raise ConfigurationError(f"{name} must be at most {MAX_SECONDS:g} seconds (one week), got {value!r}")
    return float(value)


def check_count(name: str, value: object, *, low: int, high: int) -> int:
    """``value`` as a whole number in ``low..high``, or :class:`ConfigurationError` naming ``name``.

    Not a bool and not a float: ``nan`` slipped through ``value < 0`` and made a
    retry loop endless, and ``1.5`` retries means nothing.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def check_timeout(value: object, name: str = "timeout") -> tuple[float, float]:
    """A (connect, read) pair of positive finite seconds from seconds or a pair."""
    pair = (value, value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ConfigurationError(f"{name} must be positive seconds or a (connect, read) pair, got {value!r}")
    connect, read = (
        check_seconds(f"{name} ({phase})", t, positive=True) for phase, t in zip(("connect", "read"), pair, strict=True)
    )
    return (connect, read)
