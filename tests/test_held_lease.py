"""The store's lease held for a long job (the real-time session owner): one holder, fenced, bounded.

The same lease machinery as the token issuer's (``token/redis.py``, ``token/file.py``), held the
long way: tried without waiting, renewed only while its holder says it is alive, trusted only
as far as the store confirmed, and released owner-checked.  Waits poll a condition with a hang
bound; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock import LockingRedisTokenStorage
from korea_investment_stock.token.credentials import Credentials
from korea_investment_stock.token.file import FileTokenStorage
from korea_investment_stock.token.lease import STREAM_OWNER, Acquired

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401

APP_KEY = "PS" + "k" * 34
HANG = 10.0


def until(condition: Callable[[], bool], timeout: float = HANG) -> float:
    """Poll ``condition`` (every 5 ms) until it holds; the seconds it took. Fails at ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def server(redis_backend: Any) -> Any:  # noqa: F811
    return redis_backend


def store(server: Any) -> LockingRedisTokenStorage:
    """One more process sharing the Redis under test."""
    return LockingRedisTokenStorage(client=server.client(), key_prefix=server.prefix)


def test_one_holder_and_generations_above_the_issuers(server: Any) -> None:
    first, second = store(server), store(server)
    a = first.purpose_lease(APP_KEY, STREAM_OWNER)
    b = second.purpose_lease(APP_KEY, STREAM_OWNER)
    generation = a.try_acquire()
    assert generation is not None and a.held()
    assert a.try_acquire() == generation, "held already: the same hold"
    assert b.try_acquire() is None and not b.held()
    assert b.is_taken()

    # The token issuer's lease is another purpose: not blocked, and its generation comes after.
    with first._new_lease(Credentials(APP_KEY, "s" * 180)) as issuing:
        assert issuing.acquire(time.monotonic() + HANG) is Acquired.HELD
        assert issuing.generation > generation  # type: ignore[attr-defined]

    a.release()
    assert not a.held()
    later = b.try_acquire()
    assert later is not None and later > generation


def test_renewal_is_bounded_and_the_holder_fences_itself_first(server: Any) -> None:
    """No keep(): renewal stops at the bound; held() turns false while the server still holds the lease."""
    a = store(server).purpose_lease(APP_KEY, STREAM_OWNER, lease_seconds=0.5, fence_margin=0.2, hold_seconds=0.4)
    b = store(server).purpose_lease(APP_KEY, STREAM_OWNER, lease_seconds=0.5, fence_margin=0.2)
    assert a.try_acquire() is not None
    until(lambda: not a.held())
    assert b.try_acquire() is None, "the holder stopped trusting its lease before it could lapse"
    until(lambda: b.try_acquire() is not None)
    assert b.held()

    # The old holder can neither free nor write under its successor's lease.
    a.release()
    assert b.is_taken()
    assert not a.fenced_set(f"{server.prefix}:note", "stale", 1.0)
    assert b.fenced_set(f"{server.prefix}:note", "fresh", 1.0)


def test_keep_holds_it_past_many_leases(server: Any) -> None:
    a = store(server).purpose_lease(APP_KEY, STREAM_OWNER, lease_seconds=0.3, fence_margin=0.1, hold_seconds=0.25)
    b = store(server).purpose_lease(APP_KEY, STREAM_OWNER, lease_seconds=0.3, fence_margin=0.1)
    assert a.try_acquire() is not None
    end = time.monotonic() + 1.5  # five leases
    while time.monotonic() < end:
        a.keep()
        assert a.held()
        assert b.try_acquire() is None
        time.sleep(0.02)  # pacing the holder's loop, not synchronising
    a.release()
    assert b.try_acquire() is not None


def test_an_unknown_purpose_is_refused(server: Any) -> None:
    with pytest.raises(ValueError, match="purpose"):
        store(server).purpose_lease(APP_KEY, "stream-ower")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from korea_investment_stock.token.file import FileTokenStorage
    lease = FileTokenStorage(sys.argv[1]).purpose_lease(sys.argv[2], "stream-owner")
    assert lease.try_acquire() is not None
    print(lease.generation, flush=True)
    time.sleep(120)
    """
)


def test_file_lease_is_free_the_moment_its_holder_dies(tmp_path: Path) -> None:
    token_file = tmp_path / "kis" / "token.key"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(token_file), APP_KEY], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        first = int(holder.stdout.readline())
        mine = FileTokenStorage(token_file).purpose_lease(APP_KEY, STREAM_OWNER)
        assert mine.try_acquire() is None
        assert FileTokenStorage(token_file).lease_lock_path(APP_KEY, STREAM_OWNER).exists()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(HANG)
        took = until(lambda: mine.try_acquire() is not None)
        assert mine.generation == first + 1 and mine.held()
        print(f"\n[file] the lease was taken {took * 1000:.0f} ms after the holder's death")
    finally:
        holder.kill()
        holder.wait(HANG)
    # One process, two holders (two nodes): the lock excludes them too; release lets the other in.
    other = FileTokenStorage(token_file).purpose_lease(APP_KEY, STREAM_OWNER)
    assert other.try_acquire() is None
    mine.release()
    assert other.try_acquire() == first + 2


def test_file_issuer_and_owner_are_separate_locks(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "kis" / "token.key")
    assert storage.lease_lock_path(APP_KEY, "issue") == storage.issuance_lock_path(APP_KEY)
    assert storage.lease_lock_path(APP_KEY, STREAM_OWNER) != storage.issuance_lock_path(APP_KEY)
