"""The one percentile the bench, the stress suite and the demos report.

Nearest rank, no interpolation: every number printed was observed, so a p95
of a fleet's waits is the wait some caller really had.  One definition keeps
figures from different tools comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (``q`` in 0..1) of ``values`` by nearest rank: the ``ceil(q * n)``-th smallest.

    The rank is clamped to 1..n, so ``q=0`` is the minimum and ``q=1`` the
    maximum.  No values give ``math.nan``, not a number that looks measured;
    a caller that prints decides how to show "none".  A ``q`` outside [0, 1]
    (or NaN) raises ``ValueError``: a percent passed by mistake (95 for 0.95)
    would otherwise silently give the maximum.
    """
    if not 0.0 <= q <= 1.0:  # also False for NaN
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]
