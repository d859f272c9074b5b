"""0.6.1's extra classes, as thin shims over our real parts.

The release users installed (tag ``v0.6.1``) added an in-memory response cache
and a pacing wrapper on top of its client.  They live here, in a room of their
own, and are importable by 0.6.1's module paths too
(``korea_investment_stock.cache...``, ``korea_investment_stock.rate_limit...``)
and from the package's top level.  Nothing here imports ``redis`` or ``pandas``.

- :mod:`.cache`: :class:`CacheEntry`, :class:`CacheManager`, :class:`CachedKoreaInvestment`.
- :mod:`.rate_limit`: :class:`RateLimiter` (0.6.1's per-wrapper pacing) and
  :class:`RateLimitedKoreaInvestment`, whose calls still take their slots in the
  app key's shared budget through the client they wrap.
"""

from __future__ import annotations

from .cache import CachedKoreaInvestment, CacheEntry, CacheManager
from .rate_limit import RateLimitedKoreaInvestment, RateLimiter

__all__ = ["CacheEntry", "CacheManager", "CachedKoreaInvestment", "RateLimitedKoreaInvestment", "RateLimiter"]
