"""0.6.1's module path ``korea_investment_stock.cache.cached_korea_investment``; see :mod:`...compat.cache`."""

from __future__ import annotations

from ..compat.cache import CachedKoreaInvestment

__all__ = ["CachedKoreaInvestment"]
