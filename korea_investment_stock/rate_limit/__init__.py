"""0.6.1's module path for the pacing wrapper (``korea_investment_stock.rate_limit``); see :mod:`..compat.rate_limit`.

Not the per-app-key budget, which is :mod:`korea_investment_stock.limits`.
"""

from __future__ import annotations

from ..compat.rate_limit import RateLimitedKoreaInvestment, RateLimiter

__all__ = ["RateLimitedKoreaInvestment", "RateLimiter"]
