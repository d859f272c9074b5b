"""Cold stampede: P processes x T threads, all released by one barrier, on an empty store."""

from __future__ import annotations

import time

import pytest

from .harness import error_sample, fleet_outcomes, summarize
from .workers import stampede_process

#: (processes, threads).  The CI-sized default runs all four shapes once; the full
#: matrix (--stress-full) repeats each three times to shake out rare interleavings.
SHAPES = [(1, 100), (4, 25), (8, 16), (16, 16)]
REPEATS_FULL = 3


def _shapes():
    for processes, threads in SHAPES:
        yield pytest.param(processes, threads, 0, id=f"{processes}x{threads}")
        for n in range(1, REPEATS_FULL):
            yield pytest.param(
                processes, threads, n, id=f"{processes}x{threads}-again{n}", marks=pytest.mark.stress_full
            )


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("processes", "threads", "repeat"), list(_shapes()))
def test_cold_stampede(processes, threads, repeat, backend, kis_factory, issuance_clock, fleet, report):
    kis = kis_factory()
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    callers = processes * threads
    barrier = fleet.context.Barrier(callers)
    queue = fleet.context.Queue()
    started = time.perf_counter()
    for _ in range(processes):
        fleet.start(stampede_process, spec, threads, barrier, queue)
    outcomes = fleet_outcomes(queue, processes, callers)
    wall = time.perf_counter() - started
    figures = report(summarize(f"cold-matrix[{processes}x{threads}]", backend.name, outcomes, kis, clock, wall))
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1
    assert figures.tokens_minted == 1
    assert len({o.token for o in outcomes}) == 1, "callers ended with different tokens"
