"""SingleFlight: one leader per key, followers share its result or its error."""

from __future__ import annotations

import os
import threading
import time

import pytest

from korea_investment_stock.errors import TokenWaitTimeout
from korea_investment_stock.token.flight import SingleFlight

from .workers import join_all, start_threads

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

    threads, results, errors = start_threads(n, lambda i: flight.run("key", fn, follower_timeout=HANG))
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

    threads, results, errors = start_threads(n, lambda i: flight.run("key", fn, follower_timeout=HANG))
    counting_followers(n - 1)
    release.set()
    join_all(threads, HANG)
    assert len(calls) == 1
    assert all(e is boom for e in errors)
    assert results == [None] * n


def test_a_finished_flight_is_forgotten():
    flight: SingleFlight[int] = SingleFlight()
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    assert flight.run("k", fn, 1.0) == 1
    assert flight.run("k", fn, 1.0) == 2
    assert flight._calls == {}


def test_a_failed_flight_is_forgotten():
    flight: SingleFlight[int] = SingleFlight()

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        flight.run("k", boom, 1.0)
    assert flight.run("k", lambda: 7, 1.0) == 7


def test_keys_fly_independently():
    flight: SingleFlight[str] = SingleFlight()
    inside_a = threading.Event()
    release_a = threading.Event()

    def slow_a():
        inside_a.set()
        assert release_a.wait(HANG)
        return "a"

    threads, results, errors = start_threads(1, lambda i: flight.run("a", slow_a, HANG))
    assert inside_a.wait(HANG)
    # "a" is still in flight; "b" must not wait for it.
    assert flight.run("b", lambda: "b", follower_timeout=0.0) == "b"
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

    threads, results, errors = start_threads(1, lambda i: flight.run("k", slow, HANG))
    assert inside.wait(HANG)
    started = time.monotonic()
    with pytest.raises(TokenWaitTimeout) as info:
        flight.run("k", lambda: "never", follower_timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 5.0
    assert "0.2s" in str(info.value)
    release.set()
    join_all(threads, HANG)
    assert results == ["late"]


def test_base_exceptions_are_shared_too(counting_followers):
    flight: SingleFlight[object] = SingleFlight()
    release = threading.Event()

    class Stop(BaseException):
        pass

    stop = Stop()

    def fn():
        assert release.wait(HANG)
        raise stop

    threads, results, errors = start_threads(4, lambda i: flight.run("k", fn, HANG))
    counting_followers(3)
    release.set()
    join_all(threads, HANG)
    assert all(e is stop for e in errors)
    assert flight._calls == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_resets_flights_in_the_child():
    flight: SingleFlight[str] = SingleFlight()
    inside = threading.Event()
    release = threading.Event()

    def parent_leader():
        inside.set()
        assert release.wait(HANG)
        return "parent"

    threads, results, errors = start_threads(1, lambda i: flight.run("k", parent_leader, HANG))
    assert inside.wait(HANG)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's leader thread does not exist here
        code = 1
        try:
            os.close(read_end)
            value = flight.run("k", lambda: "child", follower_timeout=5.0)
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
