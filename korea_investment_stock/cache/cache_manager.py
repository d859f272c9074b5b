"""0.6.1's module path ``korea_investment_stock.cache.cache_manager``; see :mod:`...compat.cache`."""

from __future__ import annotations

from ..compat.cache import CacheEntry, CacheManager

__all__ = ["CacheEntry", "CacheManager"]
