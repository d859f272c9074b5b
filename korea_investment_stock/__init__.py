"""A Korea Investment & Securities (KIS) Open API client whose token store issues once.

Any number of threads, processes and servers sharing one app key make one
``/oauth2/tokenP`` call; the rest read the stored token.  The Redis stores are
imported lazily so that the optional ``redis`` package is needed only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import KoreaInvestment
from .constants import (
    API_RETURN_CODE,
    CURRENCY_CODE,
    EXCHANGE_CODE,
    EXCHANGE_CODE2,
    EXCHANGE_CODE3,
    EXCHANGE_CODE4,
    EXCHANGE_CODE_MAP,
    EXCHANGE_TYPE,
    MARKET_CODE_MAP,
    MARKET_TYPE,
    MARKET_TYPE_MAP,
)
from .errors import (
    AccountMismatchError,
    AmbiguousOrderError,
    ApprovalKeyError,
    ConfigurationError,
    InsufficientCashError,
    InsufficientQuantityError,
    InvalidCredentialsError,
    KISAPIError,
    KISConnectionError,
    KoreaInvestmentError,
    MalformedResponseError,
    MarketClosedError,
    MasterFileError,
    NothingToReviseError,
    NoTokenError,
    OrderRejectedError,
    OrderStatusUnknown,
    PagingError,
    RateLimitExceededError,
    RateLimitWaitTimeout,
    RealtimeError,
    RealtimeTimeoutError,
    SessionInUseError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
    SubscriptionLimitError,
    SubscriptionRefusedError,
    SymbolNotFoundError,
    TokenError,
    TokenIssueError,
    TokenRateLimitedError,
    TokenWaitTimeout,
    TradingUnsupportedError,
    UnknownSymbolError,
    WrongEnvironmentError,
)
from .limits import FileRateLimiter, NoRateLimit, ProcessRateLimiter
from .limits import RateLimiter as AppKeyRateLimiter
from .token.factory import storage_from_env
from .token.file import FileTokenStorage
from .token.record import TokenRecord
from .token.status import StorageDescription, StorageHealth, TokenState, TokenStatus
from .token.storage import TokenStorage
from .trading import Balance, Bar, Buyable, Order, OrderIntent, OrderRecord, Position
from .transport import KISResponse

if TYPE_CHECKING:
    from .compat.cache import CachedKoreaInvestment, CacheEntry, CacheManager
    from .compat.rate_limit import RateLimitedKoreaInvestment, RateLimiter
    from .limits.redis import RedisRateLimiter
    from .token.redis import LockingRedisTokenStorage, RedisTokenStorage

#: Year.month.patch of the release, plus the local label ``fleet``: the package index's releases of
#: this name are another code base (0.1.10 ... 0.19.0), so no version of this one can be taken for
#: one of them, or be replaced by one on ``pip install -U``; and the index refuses local versions.
__version__ = "2026.12.0+fleet"

_LAZY = {"RedisTokenStorage", "LockingRedisTokenStorage"}
#: 0.6.1's extra classes (the top-level RateLimiter is 0.6.1's pacing class; the per-app-key
#: limiter interface is AppKeyRateLimiter, alias korea_investment_stock.limits.RateLimiter).
_COMPAT = {"CacheEntry", "CacheManager", "CachedKoreaInvestment", "RateLimiter", "RateLimitedKoreaInvestment"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .token import redis as _redis

        return getattr(_redis, name)
    if name in _COMPAT:
        from . import compat

        return getattr(compat, name)
    if name == "RedisRateLimiter":
        from .limits import redis as _redis_limits

        return _redis_limits.RedisRateLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "API_RETURN_CODE",
    "CURRENCY_CODE",
    "EXCHANGE_CODE",
    "EXCHANGE_CODE2",
    "EXCHANGE_CODE3",
    "EXCHANGE_CODE4",
    "EXCHANGE_CODE_MAP",
    "EXCHANGE_TYPE",
    "MARKET_CODE_MAP",
    "MARKET_TYPE",
    "MARKET_TYPE_MAP",
    "AccountMismatchError",
    "AmbiguousOrderError",
    "AppKeyRateLimiter",
    "ApprovalKeyError",
    "Balance",
    "Bar",
    "Buyable",
    "CacheEntry",
    "CacheManager",
    "CachedKoreaInvestment",
    "ConfigurationError",
    "FileRateLimiter",
    "FileTokenStorage",
    "InsufficientCashError",
    "InsufficientQuantityError",
    "InvalidCredentialsError",
    "KISAPIError",
    "KISConnectionError",
    "KISResponse",
    "KoreaInvestment",
    "KoreaInvestmentError",
    "LockingRedisTokenStorage",
    "MalformedResponseError",
    "MarketClosedError",
    "MasterFileError",
    "NoRateLimit",
    "NoTokenError",
    "NothingToReviseError",
    "Order",
    "OrderIntent",
    "OrderRecord",
    "OrderRejectedError",
    "OrderStatusUnknown",
    "PagingError",
    "Position",
    "ProcessRateLimiter",
    "RateLimitExceededError",
    "RateLimitWaitTimeout",
    "RateLimitedKoreaInvestment",
    "RateLimiter",
    "RealtimeError",
    "RealtimeTimeoutError",
    "RedisRateLimiter",
    "RedisTokenStorage",
    "SessionInUseError",
    "StorageDescription",
    "StorageError",
    "StorageHealth",
    "StoragePermissionError",
    "StorageUnavailableError",
    "SubscriptionLimitError",
    "SubscriptionRefusedError",
    "SymbolNotFoundError",
    "TokenError",
    "TokenIssueError",
    "TokenRateLimitedError",
    "TokenRecord",
    "TokenState",
    "TokenStatus",
    "TokenStorage",
    "TokenWaitTimeout",
    "TradingUnsupportedError",
    "UnknownSymbolError",
    "WrongEnvironmentError",
    "__version__",
    "storage_from_env",
]
