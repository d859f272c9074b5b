"""The requirements' check: 100 threads at once, 0 errors, exactly 1 tokenP call."""

from __future__ import annotations

import threading
import time

import pytest

from .harness import Outcome, error_sample, run_threads, summarize
from .workers import make_storage, new_client, quote

THREADS = 100
#: The default runs each check once; --stress-full repeats it to shake out rare interleavings.
REPEATS = [pytest.param(0, id="once")] + [
    pytest.param(n, id=f"again{n}", marks=pytest.mark.stress_full) for n in range(1, 5)
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("repeat", REPEATS)
def test_100_threads_share_one_client(repeat, backend, kis_factory, issuance_clock, report):
    """One KoreaInvestment (built cold: the one tokenP), then 100 threads quote through it at once."""
    kis = kis_factory()
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    started = time.perf_counter()
    client = new_client(spec)

    def body(i: int, barrier: threading.Barrier) -> Outcome:
        barrier.wait(60)
        t0 = time.perf_counter()
        try:
            quote(client)
        except Exception as exc:
            return Outcome.failure(exc)
        return Outcome(ok=True, token=client._token.access_token, at=time.time(), elapsed=time.perf_counter() - t0)

    with client:
        outcomes = run_threads(THREADS, body)
    wall = time.perf_counter() - started
    figures = report(
        summarize("100-threads[one-client]", backend.name, outcomes, kis, clock, wall, rest=kis.stats.rest_requests)
    )
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1
    assert figures.tokens_minted == 1
    assert kis.stats.rest_requests == THREADS
    assert {o.token for o in outcomes} == {client._token.access_token}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("repeat", REPEATS)
def test_100_threads_100_separate_clients(repeat, backend, kis_factory, issuance_clock, report):
    """100 threads, each building its own KoreaInvestment on its own store instance, cold, at once."""
    kis = kis_factory()
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    storages = [make_storage(spec) for _ in range(THREADS)]

    def body(i: int, barrier: threading.Barrier) -> Outcome:
        barrier.wait(60)
        t0 = time.perf_counter()
        try:
            client = new_client(spec, storages[i])
        except Exception as exc:
            return Outcome.failure(exc)
        got = time.time()
        with client:
            try:
                quote(client)
            except Exception as exc:
                return Outcome.failure(exc)
        return Outcome(ok=True, token=client._token.access_token, at=got, elapsed=time.perf_counter() - t0)

    started = time.perf_counter()
    outcomes = run_threads(THREADS, body)
    wall = time.perf_counter() - started
    figures = report(summarize("100-threads[separate-clients]", backend.name, outcomes, kis, clock, wall))
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1
    assert figures.tokens_minted == 1
    assert len({o.token for o in outcomes}) == 1
