"""tokenP misbehaves: a clear error for everyone waiting on that issuance, the lock released,
the next caller succeeds, and EGW00105 never retried."""

from __future__ import annotations

import threading
import time

import pytest

from korea_investment_stock.errors import InvalidCredentialsError, TokenIssueError

from .harness import Outcome, error_sample, run_threads, summarize
from .locks import assert_issue_lock_free, failure_marker_ms
from .workers import make_storage, new_client

WAVE = 20
#: Client timeout (connect, read) for this scenario, so the "timeout" fault costs 1.5 s, not 10.
TIMEOUT = (1.0, 1.5)
#: How long the fake holds a "timeout" request before dropping it: longer than the read timeout.
HOLD = 5.0
FAULTS = {
    # kind: (error class every waiting caller must get, words the message must contain, bound in s)
    "http500": (TokenIssueError, "HTTP 500", 2.5),
    "timeout": (TokenIssueError, "did not answer within", TIMEOUT[1] + 2.0),
    "malformed": (TokenIssueError, "not JSON", 2.5),
    "EGW00105": (InvalidCredentialsError, "EGW00105", 2.5),
}


class PileUp:
    """Hold the leader's tokenP call until all ``n`` callers have asked for a token.

    Timing only: the real tokenP call still goes to the fake KIS, which counts it.
    Without it a thread the scheduler starts late would begin a second flight after
    the first one failed, and the wave would not test "everyone waiting gets the error".
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.entered = 0
        self.cond = threading.Condition()

    def wrap(self, storage):
        original = storage.get_token

        def get_token(api_key, api_secret, issue):
            with self.cond:
                self.entered += 1
                self.cond.notify_all()

            def gated():
                with self.cond:
                    self.cond.wait_for(lambda: self.entered >= self.n, 30)
                return issue()

            return original(api_key, api_secret, gated)

        storage.get_token = get_token
        return storage


def _wave(spec, n: int, pile_up: bool) -> list[Outcome]:
    gate = PileUp(n)
    storages = [make_storage(spec) for _ in range(n)]
    if pile_up:
        storages = [gate.wrap(s) for s in storages]

    def body(i: int, barrier: threading.Barrier) -> Outcome:
        barrier.wait(30)
        t0 = time.perf_counter()
        try:
            client = new_client(spec, storages[i], timeout=TIMEOUT)
        except Exception as exc:
            return Outcome.failure(exc, t0, keep=True)
        with client:
            return Outcome(ok=True, token=client._token.access_token, at=time.time(), elapsed=time.perf_counter() - t0)

    return run_threads(n, body, timeout=60)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_tokenp_misbehaves(fault, backend, kis_factory, issuance_clock, report):
    expected, words, bound = FAULTS[fault]
    kis = kis_factory()
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    # The faulty answer comes after 0.3 s (HOLD for "timeout"), so a follower that asked for a
    # token just before the leader's call is surely waiting on that flight when it fails.
    kis.set_token_fault(fault, times=1, delay=HOLD if fault == "timeout" else 0.3)

    started = time.perf_counter()
    failed = _wave(spec, WAVE, pile_up=True)
    assert_issue_lock_free(spec)  # released at once, not left to a lease or a timeout
    after_failure = kis.stats
    # Redis leaves a short failure marker so other servers do not retry KIS in a stampede. A
    # failure that is not the caller's own (a 500, a timeout) does not fail a caller meeting it:
    # it waits the marker out, then tries itself (issue 16, point 15); a bad secret fails it.
    marker_ms = failure_marker_ms(spec)
    probe: list[Outcome] = []
    if marker_ms > 0:
        probe = _wave(spec, 1, pile_up=False)
        if expected is InvalidCredentialsError:
            time.sleep(failure_marker_ms(spec) / 1000 + 0.05)  # waiting out a documented back-off, not a peer
    recovered = _wave(spec, WAVE, pile_up=False)
    wall = time.perf_counter() - started
    outcomes = failed + probe + recovered
    figures = report(
        summarize(
            f"tokenp-fault[{fault}]",
            backend.name,
            outcomes,
            kis,
            clock,
            wall,
            failed_wave=sum(not o.ok for o in failed),
            fail_s=round(max(o.elapsed for o in failed), 2),
            recover_s=round(max(o.elapsed for o in recovered), 2),
            marker_ms=marker_ms,
        )
    )

    # The first wave waited on one issuance that failed: everyone gets its clear error, once.
    assert after_failure.tokenp_requests == 1, "the failed tokenP call was retried"
    for o in failed:
        assert not o.ok, "a caller got a token although tokenP failed"
        assert isinstance(o.extra["exc"], expected), f"{o.error_type}: {o.error}"
        assert words in o.error
        assert o.elapsed <= bound, f"{o.error_type} after {o.elapsed:.2f}s (bound {bound}s)"
        assert spec["app_secret"] not in o.error
    for o in probe:
        if expected is InvalidCredentialsError:  # would be its own failure too: at once, no tokenP call
            assert not o.ok and isinstance(o.extra["exc"], expected) and "try again" in o.error, o.error
            assert o.elapsed < 1.0
        else:  # waited the marker out, then one tokenP call of its own
            assert o.ok, error_sample([o])
            assert o.elapsed >= marker_ms / 1000 - 0.2, f"{o.elapsed:.2f}s: it did not honour the marker"
    # The next callers succeed with exactly one more tokenP call.
    assert all(o.ok for o in recovered), error_sample(recovered)
    assert figures.tokenp_requests == 2
    assert figures.tokens_minted == 1
    assert len({o.token for o in recovered}) == 1
    assert max(o.elapsed for o in recovered) < 2.0
