"""Dev-only helpers for tests: real network faults and a real Redis Sentinel deployment.

Not part of the installed package (``korea_investment_stock``); tests import it
from the repository root.
"""

from __future__ import annotations

from .faultproxy import FaultProxy
from .sentinel import DEFAULT_SERVICE, ManagedRedis, SentinelCluster, redis_server_binary, start_redis

__all__ = ["DEFAULT_SERVICE", "FaultProxy", "ManagedRedis", "SentinelCluster", "redis_server_binary", "start_redis"]
