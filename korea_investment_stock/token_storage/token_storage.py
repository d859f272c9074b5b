"""0.6.1's module ``korea_investment_stock.token_storage.token_storage`` (where its tests import from).

The same names as the package: the stores live in :mod:`korea_investment_stock.token`,
the Redis ones loaded on first access (importing this does not import ``redis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..token.file import FileTokenStorage
from ..token.storage import TokenStorage

if TYPE_CHECKING:
    from ..token.redis import LockingRedisTokenStorage, RedisTokenStorage

_LAZY = {"RedisTokenStorage", "LockingRedisTokenStorage"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ..token import redis as _redis

        return getattr(_redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FileTokenStorage", "LockingRedisTokenStorage", "RedisTokenStorage", "TokenStorage"]
