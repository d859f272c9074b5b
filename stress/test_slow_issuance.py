"""Lease shorter than issuance: tokenP takes longer than the Redis lease, renewal keeps it; still one issuance.

File counterpart: the same slow tokenP with the flock (no lease to outlive): followers
in other processes wait the whole issuance out and adopt the one token.
"""

from __future__ import annotations

import time

import pytest

from .harness import error_sample, fleet_outcomes, summarize
from .workers import stampede_process

#: tokenP answers after this long on the fake server...
ISSUANCE = 2.0
#: ...while the Redis lease is under a third of it (renewed every third of the lease).
LEASE = 0.6
PROCESSES, THREADS = 4, 10


@pytest.mark.timeout(120)
def test_lease_shorter_than_issuance(backend, kis_factory, issuance_clock, fleet, report):
    kis = kis_factory(token_delay=ISSUANCE)
    clock = issuance_clock(kis)
    options = {"lease_seconds": LEASE} if backend.name == "redis" else {}
    spec = backend.spec(kis, **options)
    callers = PROCESSES * THREADS
    barrier = fleet.context.Barrier(callers)
    queue = fleet.context.Queue()
    started = time.perf_counter()
    for _ in range(PROCESSES):
        fleet.start(stampede_process, spec, THREADS, barrier, queue)
    outcomes = fleet_outcomes(queue, PROCESSES, callers)
    wall = time.perf_counter() - started
    figures = report(
        summarize(
            "lease-shorter-than-issuance",
            backend.name,
            outcomes,
            kis,
            clock,
            wall,
            issuance_s=ISSUANCE,
            lease_s=LEASE if options else "n/a",
        )
    )

    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1, "a follower took over a live, renewed lease"
    assert figures.tokens_minted == 1
    assert len({o.token for o in outcomes}) == 1
    assert max(o.elapsed for o in outcomes) < ISSUANCE + 3.0
