"""0.6.1's module path for the client and the constants (``korea_investment_stock.korea_investment_stock``).

The code lives in :mod:`korea_investment_stock.client` and
:mod:`korea_investment_stock.constants`; this module only keeps old imports working.
"""

from __future__ import annotations

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
    "KoreaInvestment",
]
