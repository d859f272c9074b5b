"""0.6.1's module path for the stores: ``from korea_investment_stock.token_storage import ...``.

In the published 0.6.1 this is a package whose ``token_storage`` module holds
the classes (:mod:`.token_storage`); both paths work.  The stores live in
:mod:`korea_investment_stock.token`.  The Redis ones are loaded on first
access, so importing this package does not import ``redis``.
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
