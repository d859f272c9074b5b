"""SingleFlight: one leader per key, followers share its result or its error."""

from __future__ import annotations

import os
import threading
import time

import pytest

from korea_investment_stock.errors import TokenWaitTimeout
from korea_investment_stock.token.flight import SingleFlight

from .workers import join_all, start_threads


def lead(fn):
    """A zero-argument function as a flight's lead function (which receives the flight)."""
    return lambda _flight: fn()


HANG = 30.0  # generous bound: only reached when something is broken


def test_one_leader_all_followers_share_its_result(counting_followers):
    flight: SingleFlight[object] = SingleFlight()
    n = 32
    release = threading.Event()
    calls = []
    result = object()

    def fn():
        calls.append(threading.get_ident())
        assert release.wait(HANG)
        return result

    threads, results, errors = start_threads(n, lambda i: flight.run("key", lead(fn), follower_timeout=HANG))
    counting_followers(n - 1)  # everyone but the leader is parked on the leader's flight
    release.set()
    join_all(threads, HANG)
    assert errors == [None] * n
    assert len(calls) == 1
    assert all(r is result for r in results)


def test_followers_share_the_leaders_error(counting_followers):
    flight: SingleFlight[object] = SingleFlight()
    n = 16
    release = threading.Event()
    calls = []
    boom = RuntimeError("tokenP failed")

    def fn():
        calls.append(1)
        assert release.wait(HANG)
        raise boom

    threads, results, errors = start_threads(n, lambda i: flight.run("key", lead(fn), follower_timeout=HANG))
    counting_followers(n - 1)
    release.set()
    join_all(threads, HANG)
    assert len(calls) == 1
    assert sum(e is boom for e in errors) == 1, "only the leader raises the original"
    copies = [e for e in errors if e is not boom]
    assert len(copies) == n - 1 and len({id(e) for e in copies}) == n - 1, "one instance per follower"
    assert all(type(e) is RuntimeError and str(e) == "tokenP failed" and e.__cause__ is boom for e in copies)
    assert results == [None] * n


def test_a_finished_flight_is_forgotten():
    flight: SingleFlight[int] = SingleFlight()
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    assert flight.run("k", lead(fn), 1.0) == 1
    assert flight.run("k", lead(fn), 1.0) == 2
    assert flight._flights == {}


def test_a_failed_flight_is_forgotten():
    flight: SingleFlight[int] = SingleFlight()

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        flight.run("k", lead(boom), 1.0)
    assert flight.run("k", lead(lambda: 7), 1.0) == 7


def test_keys_fly_independently():
    flight: SingleFlight[str] = SingleFlight()
    inside_a = threading.Event()
    release_a = threading.Event()

    def slow_a():
        inside_a.set()
        assert release_a.wait(HANG)
        return "a"

    threads, results, errors = start_threads(1, lambda i: flight.run("a", lead(slow_a), HANG))
    assert inside_a.wait(HANG)
    # "a" is still in flight; "b" must not wait for it.
    assert flight.run("b", lead(lambda: "b"), follower_timeout=0.0) == "b"
    release_a.set()
    join_all(threads, HANG)
    assert results == ["a"] and errors == [None]


def test_follower_timeout(counting_followers):
    flight: SingleFlight[str] = SingleFlight()
    inside = threading.Event()
    release = threading.Event()

    def slow():
        inside.set()
        assert release.wait(HANG)
        return "late"

    threads, results, errors = start_threads(1, lambda i: flight.run("k", lead(slow), HANG))
    assert inside.wait(HANG)
    started = time.monotonic()
    with pytest.raises(TokenWaitTimeout) as info:
        flight.run("k", lead(lambda: "never"), follower_timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 5.0
    assert "0.2s" in str(info.value)
    release.set()
    join_all(threads, HANG)
    assert results == ["late"]


def test_a_base_exception_stays_in_the_leaders_thread(counting_followers):
    """KeyboardInterrupt in the leader must not interrupt other threads: a follower leads instead."""
    flight: SingleFlight[object] = SingleFlight()
    release = threading.Event()
    calls = []

    class Stop(BaseException):
        pass

    stop = Stop()

    def fn():
        calls.append(1)
        if len(calls) == 1:
            assert release.wait(HANG)
            raise stop
        counting_followers(3 + 2)  # the two other followers parked again, now on this flight
        return "led by a follower"

    threads, results, errors = start_threads(4, lambda i: flight.run("k", lead(fn), HANG))
    counting_followers(3)
    release.set()
    join_all(threads, HANG)
    assert [e for e in errors if e is not None] == [stop], "only the leader sees its BaseException"
    assert sorted(r for r in results if r is not None) == ["led by a follower"] * 3
    assert len(calls) == 2
    assert flight._flights == {}


def test_tracebacks_do_not_grow_with_followers(counting_followers):
    flight: SingleFlight[object] = SingleFlight()
    n = 21
    release = threading.Event()

    def fn():
        assert release.wait(HANG)
        raise RuntimeError("boom")

    threads, results, errors = start_threads(n, lambda i: flight.run("key", lead(fn), follower_timeout=HANG))
    counting_followers(n - 1)
    release.set()
    join_all(threads, HANG)

    def depth(exc):
        tb, frames = exc.__traceback__, 0
        while tb is not None:
            frames, tb = frames + 1, tb.tb_next
        return frames

    depths = {depth(e) for e in errors}
    assert max(depths) <= 6, depths  # 42 frames after 20 followers when they shared one object


def test_a_forced_refresh_and_a_plain_caller_share_one_flight(counting_followers):
    """stale= is per caller, not part of the key: one lead call serves both."""
    from korea_investment_stock.token.record import TokenRecord

    flight: SingleFlight[TokenRecord] = SingleFlight()
    release = threading.Event()
    seen_stale = []

    def fn(f):
        assert release.wait(HANG)
        seen_stale.append(f.is_stale("eyJ.old"))
        return TokenRecord("eyJ.new", time.time() + 3600, "k", "f" * 64, time.time())

    threads, results, errors = start_threads(2, lambda i: flight.run("key", fn, HANG, stale="eyJ.old" if i else None))
    counting_followers(1)
    release.set()
    join_all(threads, HANG)
    assert errors == [None, None]
    assert [r.access_token for r in results] == ["eyJ.new", "eyJ.new"]
    assert seen_stale == [True], "one lead call, which knew the refresher's stale token"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_resets_flights_in_the_child():
    flight: SingleFlight[str] = SingleFlight()
    inside = threading.Event()
    release = threading.Event()

    def parent_leader():
        inside.set()
        assert release.wait(HANG)
        return "parent"

    threads, results, errors = start_threads(1, lambda i: flight.run("k", lead(parent_leader), HANG))
    assert inside.wait(HANG)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's leader thread does not exist here
        code = 1
        try:
            os.close(read_end)
            value = flight.run("k", lead(lambda: "child"), follower_timeout=5.0)
            os.write(write_end, value.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
    finally:
        release.set()
        join_all(threads, HANG)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"child"  # led its own flight instead of waiting for a parent thread
    assert results == ["parent"]


def test_module_flight_registers_a_fork_hook():
    # The storage's module-level flight is a SingleFlight, so it is reset in children too.
    from korea_investment_stock.token import storage

    assert isinstance(storage._FLIGHTS, SingleFlight)
