"""0.6.1's module path for the client and the constants (``korea_investment_stock.korea_investment_stock``).

The code lives in :mod:`korea_investment_stock.client` and
:mod:`korea_investment_stock.constants`; this module only keeps old imports working,
so it re-exports whatever the constants module exports instead of listing the names again.
"""

from __future__ import annotations

from . import constants
from .client import KoreaInvestment
from .constants import *  # noqa: F403 - 0.6.1 exported every constant from this module

__all__ = ["KoreaInvestment", *constants.__all__]  # noqa: PLE0604 - the constants' names, as listed there
