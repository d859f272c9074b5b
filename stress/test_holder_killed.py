"""The lock or lease holder is SIGKILLed mid-issuance: the others take over and finish."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .harness import HARNESS_TIMEOUT, acquire_n, error_sample, fleet_outcomes, summarize
from .workers import follower_process, holder_process

FOLLOWER_PROCESSES, FOLLOWER_THREADS = 3, 10
#: The fake KIS holds the victim's tokenP request this long ("in flight"): far longer than the test.
HOLD = 60.0
#: File: the kernel drops the dead holder's flock at once; followers poll every 2 ms.
FILE_BOUND = 2.0
#: Redis, with the default lease: the dead holder's lease must expire first (nobody can tell a
#: dead holder from a slow one).  The target is 3 s from the kill; the slack is for a loaded host.
REDIS_TARGET = 3.0
REDIS_SLACK = 1.5


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_at", ["tokenp-in-flight", "before-save"])
def test_holder_killed_mid_issuance(kill_at, backend, kis_factory, issuance_clock, fleet, report):
    # issue_window=0: with KIS's real 60 s window the new leader would have to wait out the
    # window opened by the dead holder's issuance (the EGW00133 scenario covers that wait).
    kis = kis_factory(issue_window=0.0)
    clock = issuance_clock(kis)
    spec = backend.spec(kis)
    bound = FILE_BOUND if backend.name == "file" else REDIS_TARGET + REDIS_SLACK
    ctx = fleet.context
    go_holder, go_followers = ctx.Event(), ctx.Event()
    in_save, waiting = ctx.Semaphore(0), ctx.Semaphore(0)
    queue = ctx.Queue()
    block_save = kill_at == "before-save"
    if not block_save:
        kis.set_token_fault("delay", times=1, delay=HOLD)

    holder = fleet.start(holder_process, spec, go_holder, in_save, block_save)
    for _ in range(FOLLOWER_PROCESSES):
        fleet.start(follower_process, spec, FOLLOWER_THREADS, go_followers, waiting, queue)
    go_holder.set()
    if block_save:
        assert in_save.acquire(timeout=30), "the holder never got its token"
    else:
        kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=30)
    # The holder is inside its issuance; now the followers ask, find no token, and wait on it.
    go_followers.set()
    assert acquire_n(waiting, FOLLOWER_PROCESSES, 30), "followers never reached the cross-process wait"
    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.time()
    started = time.perf_counter()
    callers = FOLLOWER_PROCESSES * FOLLOWER_THREADS
    outcomes = fleet_outcomes(queue, FOLLOWER_PROCESSES, callers, HARNESS_TIMEOUT)
    wall = time.perf_counter() - started
    holder.join(10)
    finish = max((o.at for o in outcomes), default=killed_at) - killed_at
    figures = report(
        summarize(
            f"holder-killed[{kill_at}]",
            backend.name,
            outcomes,
            kis,
            clock,
            wall,
            after_kill_s=round(finish, 2),
            bound_s=bound,
        )
    )

    assert holder.exitcode == -signal.SIGKILL
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_success <= 2
    assert figures.tokens_minted <= 2
    assert len({o.token for o in outcomes}) == 1
    assert finish <= bound, f"followers finished {finish:.2f}s after the kill (bound {bound}s)"
