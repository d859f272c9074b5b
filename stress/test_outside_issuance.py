"""Someone outside the store issued first: tokenP answers EGW00133 until the window closes;
callers wait within a bound, then all succeed with the token KIS hands back."""

from __future__ import annotations

import time

import pytest
import requests

from .harness import HARNESS_TIMEOUT, error_sample, fleet_outcomes, summarize
from .workers import stampede_process

#: A short issue window on the fake server keeps the test quick (KIS's is 60 s).
WINDOW = 2.0
#: The leader's back-off is 1 s, then 2 s (each +-20 %): success comes by ~3.6 s.
BOUND = WINDOW + 3.0
PROCESSES, THREADS = 2, 10


@pytest.mark.timeout(120)
def test_outside_issuance_then_egw00133(backend, kis_factory, issuance_clock, fleet, report):
    kis = kis_factory(issue_window=WINDOW)
    spec = backend.spec(kis)
    callers = PROCESSES * THREADS
    ready, go = fleet.context.Barrier(callers + 1), fleet.context.Barrier(callers + 1)
    queue = fleet.context.Queue()
    for _ in range(PROCESSES):
        fleet.start(stampede_process, spec, THREADS, go, queue, ready)
    ready.wait(HARNESS_TIMEOUT)  # the whole fleet is up: the window below is not spent on start-up
    # Another program with the same app key got a token a moment ago, outside our store.
    answer = requests.post(
        kis.url + "/oauth2/tokenP",
        json={"grant_type": "client_credentials", "appkey": kis.app_key, "appsecret": kis.app_secret},
        timeout=5,
    )
    assert answer.status_code == 200
    outside_token = answer.json()["access_token"]
    before = kis.stats
    clock = issuance_clock(kis)
    started = time.perf_counter()
    go.wait(HARNESS_TIMEOUT)
    outcomes = fleet_outcomes(queue, PROCESSES, callers)
    wall = time.perf_counter() - started
    after = kis.stats
    refused = after.tokenp_rejected.get("EGW00133", 0) - before.tokenp_rejected.get("EGW00133", 0)
    figures = report(
        summarize(
            "outside-issued-EGW00133",
            backend.name,
            outcomes,
            kis,
            clock,
            wall,
            before=before,
            egw00133=refused,
            window_s=WINDOW,
            slowest_s=round(max(o.elapsed for o in outcomes), 2),
        )
    )

    assert figures.errors == 0, error_sample(outcomes)
    assert {o.token for o in outcomes} == {outside_token}, "KIS hands back the same token within 6 h"
    assert figures.tokens_minted == 0
    assert refused >= 1, "the scenario did not provoke EGW00133"
    # Only the issuing leader retried, with back-off: no retry storm from the other callers.
    assert figures.tokenp_requests == refused + 1 <= 4
    assert max(o.elapsed for o in outcomes) <= BOUND
