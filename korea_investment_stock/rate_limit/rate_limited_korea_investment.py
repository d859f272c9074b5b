"""0.6.1's module path ``korea_investment_stock.rate_limit.rate_limited_korea_investment``.

See :mod:`...compat.rate_limit`.
"""

from __future__ import annotations

from ..compat.rate_limit import RateLimitedKoreaInvestment

__all__ = ["RateLimitedKoreaInvestment"]
