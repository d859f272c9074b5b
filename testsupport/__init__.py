"""Dev-only helpers for tests: real network faults, private redis-servers and a real Redis Sentinel deployment.

Not part of the installed package (``korea_investment_stock``); tests, the
stress suite and the bench import it from the repository root.  Only the
Sentinel tools need redis-py, so they are imported on first use: a suite
without redis-py can still import the rest (and skip its Redis tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .faultproxy import FaultProxy
from .redis_server import ManagedRedis, RedisServer, free_port, redis_server_binary, start_redis

if TYPE_CHECKING:
    from .sentinel import DEFAULT_SERVICE, SentinelCluster

__all__ = [
    "DEFAULT_SERVICE",
    "FaultProxy",
    "ManagedRedis",
    "RedisServer",
    "SentinelCluster",
    "free_port",
    "redis_server_binary",
    "start_redis",
]


def __getattr__(name: str) -> Any:
    if name in ("DEFAULT_SERVICE", "SentinelCluster"):
        from . import sentinel

        return getattr(sentinel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
