"""Simultaneous death of the token: every caller's next call sees it dead, one re-issuance fleet-wide."""

from __future__ import annotations

import time

import pytest

from .harness import HARNESS_TIMEOUT, error_sample, fleet_outcomes, summarize
from .workers import death_process

DEATHS = {
    # how the fake KIS kills the token -> the code every caller then sees (on HTTP 500)
    "expired": ("expire_all", "EGW00123"),
    "revoked": ("revoke_all", "EGW00121"),
}
FLEETS = [
    pytest.param(4, 25, id="4x25"),
    pytest.param(8, 16, id="8x16", marks=pytest.mark.stress_full),
    pytest.param(16, 16, id="16x16", marks=pytest.mark.stress_full),
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("death", list(DEATHS))
@pytest.mark.parametrize(("processes", "threads"), FLEETS)
def test_simultaneous_death(death, processes, threads, backend, kis_factory, issuance_clock, fleet, report):
    # issue_window=0: the real one-minute window is the EGW00133 scenario's subject, and here
    # it would only make the single re-issuance wait a minute; same-token rule is irrelevant
    # because a dead token is never handed out again.
    kis = kis_factory(issue_window=0.0, dead_token_status=500)
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    callers = processes * threads
    warmed = fleet.context.Barrier(callers + 1)
    killed = fleet.context.Barrier(callers + 1)
    queue = fleet.context.Queue()
    for _ in range(processes):
        fleet.start(death_process, spec, threads, warmed, killed, queue)

    warmed.wait(HARNESS_TIMEOUT)  # every caller holds the first token
    assert kis.stats.tokenp_requests == 1
    (first_token,) = kis.issued_tokens()
    before = kis.stats
    kill, code = DEATHS[death]
    getattr(kis, kill)()
    started = time.perf_counter()
    killed.wait(HARNESS_TIMEOUT)  # every caller now makes its next quotation call
    outcomes = fleet_outcomes(queue, processes, callers)
    wall = time.perf_counter() - started
    after = kis.stats
    rejected = after.rest_rejected.get(code, 0) - before.rest_rejected.get(code, 0)
    figures = report(
        summarize(
            f"token-death[{death},{processes}x{threads}]",
            backend.name,
            outcomes,
            kis,
            clock,
            wall,
            before=before,
            saw_dead=rejected,
        )
    )

    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1, "more than one re-issuance fleet-wide"
    assert figures.tokens_minted == 1
    tokens = {o.token for o in outcomes}
    assert len(tokens) == 1 and first_token not in tokens
    # Every caller saw the dead token exactly once (on HTTP 500), replaced it, and
    # succeeded on its one retry: 2 REST calls per caller, no more.
    assert rejected == callers
    assert after.rest_requests - before.rest_requests == 2 * callers
    assert all(o.extra.get("retried") and o.extra.get("warm_token") == first_token for o in outcomes)
