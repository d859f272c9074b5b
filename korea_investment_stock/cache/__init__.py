"""0.6.1's module path for the response cache (``korea_investment_stock.cache``); see :mod:`..compat.cache`."""

from __future__ import annotations

from ..compat.cache import CachedKoreaInvestment, CacheEntry, CacheManager

__all__ = ["CacheEntry", "CacheManager", "CachedKoreaInvestment"]
