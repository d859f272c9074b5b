"""Order storm: 8 processes x 4 threads place orders while KIS drops a fifth of the answers after acting.

Every dropped answer leaves an order live that its caller was not told about;
the caller reconciles it.  Every caller asks for the same few orders, so the
day's list is full of identical candidates from other processes.  At the end
every order at the fake must be known to exactly one caller (0 duplicates: no
order number held by two callers, no quantity placed more often than asked;
0 unknown: no live order that no caller knows).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from .harness import error_sample, fleet_outcomes, summarize
from .workers import ACCOUNT, order_storm_process

PROCESSES, THREADS, ORDERS_EACH = 8, 4, 8
DROP_PROBABILITY = 0.2


@pytest.mark.timeout(300)
def test_order_storm_leaves_no_order_unknown_or_doubled(backend, kis_factory, fleet, report):
    kis = kis_factory()
    kis.open_account(ACCOUNT, cash_krw=10**13)
    kis.set_order_fault("drop_after", times=None, probability=DROP_PROBABILITY, seed=18)
    spec = backend.spec(kis)
    callers = PROCESSES * THREADS
    barrier = fleet.context.Barrier(callers)
    queue = fleet.context.Queue()
    started = time.perf_counter()
    for p in range(PROCESSES):
        fleet.start(order_storm_process, spec, THREADS, p * THREADS, ORDERS_EACH, barrier, queue)
    outcomes = fleet_outcomes(queue, PROCESSES, callers)
    wall = time.perf_counter() - started

    at_fake = kis.orders(ACCOUNT)
    claimed = Counter(no for outcome in outcomes if outcome.ok for no in outcome.extra["known"])
    asked = Counter(q for outcome in outcomes if outcome.ok for q in outcome.extra["asked"])
    placed = Counter(row["quantity"] for row in at_fake)
    # an order number held by two callers, or a quantity placed more often than callers asked for it
    duplicates = sum(n - 1 for n in claimed.values() if n > 1) + sum(max(0, placed[q] - asked[q]) for q in placed)
    unknown = len({row["odno"] for row in at_fake} - set(claimed))
    total = lambda key: sum(outcome.extra.get(key, 0) for outcome in outcomes if outcome.ok)  # noqa: E731
    figures = report(
        summarize(
            f"order-storm[{PROCESSES}x{THREADS}x{ORDERS_EACH}]",
            backend.name,
            outcomes,
            kis,
            None,
            wall,
            orders=len(at_fake),
            dropped=kis.stats.order_faults.get("drop_after", 0),
            status_unknown=total("unknowns"),
            reconciled=total("reconciled"),
            not_placed=total("not_placed"),
            ambiguous=total("ambiguous"),
            duplicates=duplicates,
            unknown=unknown,
        )
    )
    print("\n" + figures.line())
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.notes["dropped"] > 0, "the fault never fired: the storm proved nothing"
    assert duplicates == 0 and unknown == 0
    assert figures.notes["ambiguous"] == 0
    assert len(at_fake) == callers * ORDERS_EACH and placed == asked  # every caller's every order, once
    assert kis.stats.orders_received == len(at_fake)  # nothing was ever sent twice
    assert figures.tokenp_requests == 1
