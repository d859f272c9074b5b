"""0.6.1's module path ``korea_investment_stock.rate_limit.rate_limiter``; see :mod:`...compat.rate_limit`."""

from __future__ import annotations

from ..compat.rate_limit import RateLimiter

__all__ = ["RateLimiter"]
