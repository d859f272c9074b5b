"""Timing summaries for the bench rows.

The percentile is :func:`korea_investment_stock.testing.stats.percentile` (nearest
rank, no interpolation: every number printed was observed; NaN for no samples),
the same one the stress suite reports, so their figures compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from korea_investment_stock.testing.stats import percentile


def summarize_us(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50_us": round(percentile(samples, 0.50), 1),
        "p99_us": round(percentile(samples, 0.99), 1),
        "max_us": round(max(samples), 1) if samples else math.nan,
    }


def summarize_ms(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 0.50), 2),
        "p95_ms": round(percentile(samples, 0.95), 2),
        "max_ms": round(max(samples), 2) if samples else math.nan,
    }
