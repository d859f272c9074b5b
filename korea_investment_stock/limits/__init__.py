"""The per-second REST budget of an app key, shared like its token: by threads, processes and servers.

See :mod:`.budget` for the algorithm (GCRA, one reservation per call, no
polling) and :mod:`.factory` for which limiter a client gets by default.
"""

from __future__ import annotations

from .budget import (
    DEFAULT_ACQUIRE_TIMEOUT,
    ENV_RATE_LIMIT,
    NOMINAL_RATES,
    PENALTY_SECONDS,
    SAFETY_MARGIN,
    NoRateLimit,
    ProcessRateLimiter,
    RateLimiter,
    SharedRateLimiter,
    Usage,
    default_rate,
)
from .factory import limiter_for
from .file import FileRateLimiter

__all__ = [
    "DEFAULT_ACQUIRE_TIMEOUT",
    "ENV_RATE_LIMIT",
    "NOMINAL_RATES",
    "PENALTY_SECONDS",
    "SAFETY_MARGIN",
    "FileRateLimiter",
    "NoRateLimit",
    "ProcessRateLimiter",
    "RateLimiter",
    "SharedRateLimiter",
    "Usage",
    "default_rate",
    "limiter_for",
]
