"""0.6.1's module ``korea_investment_stock.token_storage.token_storage`` (where its tests import from).

The same names as the package, from the package: the Redis stores load on first
access, so importing this does not import ``redis``.
"""

from __future__ import annotations

from . import (
    FileTokenStorage,
    TokenStorage,
    __getattr__,  # noqa: F401  the package's lazy Redis names
)

__all__ = ["FileTokenStorage", "LockingRedisTokenStorage", "RedisTokenStorage", "TokenStorage"]  # noqa: F822
