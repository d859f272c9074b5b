"""The shared budget under faults of its store: every fault is made for real.

A Redis server is stopped (``SIGSTOP``) or gone, a state file is removed under
load, a disk is full, a lock holder is stopped.  The promise checked is the
limiter's: no second holds more than ``floor(rate) + 1`` departures, and a
store that fails takes the documented fallback or raises a library error.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock import ConfigurationError, RateLimitWaitTimeout
from korea_investment_stock.limits import FileRateLimiter, ProcessRateLimiter
from korea_investment_stock.limits.budget import bucket_id
from korea_investment_stock.limits.redis import RedisRateLimiter
from korea_investment_stock.token.storage import TokenStorage
from testsupport import limiter_worker
from testsupport.departures import busiest_second, record_grants, run_callers
from testsupport.environment import rate_limited

from .redis_fixtures import (  # noqa: F401
    fake_redis,
    private_redis,
    redis_backend,
    redis_prefix,
    redis_server_url,
    redis_url,
)

#: The default real rate, and KIS's budget.
RATE, NOMINAL = 18.5, 20


@pytest.mark.real_redis
@pytest.mark.slow
def test_a_stalled_redis_never_lets_a_call_leave_before_its_slot(private_redis: Any) -> None:  # noqa: F811
    """The server stops for half a second (a slow command, a fork, a retransmit) while eight processes'
    callers wait.

    The script runs late; a wait counted from before the request let the
    callers go up to the stall's length before their slots, and a second held
    more calls than the rate allows.  Counted from the reply, a call is late by
    at most the reply's trip back; at a whole rate (10/s) that may be 1/rate
    late before it could crowd a second, which a loaded test machine never is.
    """
    rate = 10.0
    limiters = [
        RedisRateLimiter(private_redis.client(socket_timeout=5.0), key_prefix="kis-test:stall", rate=rate)
        for _ in range(8)
    ]
    grants = [record_grants(limiter) for limiter in limiters]
    acquirers = [lambda limiter=limiter: limiter.acquire("app-key", "real", timeout=10) for limiter in limiters * 2]

    def stalls(stop: threading.Event) -> None:
        for _ in range(4):
            stop.wait(0.6)
            private_redis.pause()
            try:
                stop.wait(0.5)  # the stall itself
            finally:
                private_redis.resume()

    seen = run_callers(acquirers, seconds=4.0, during=stalls)
    assert seen.errors == [] and seen.timeouts == 0
    assert len(seen.stamps) >= 3 * rate
    granted = [go_at for each in grants for go_at in each]
    assert busiest_second(granted) <= math.floor(rate) + 1, f"{busiest_second(granted)} calls let go in one second"
    # The threads' own departures: a thread the scheduler wakes late can add one.
    assert seen.busiest_second <= math.floor(rate) + 2, f"{seen.busiest_second} calls left within one second"


def _remove(state: Path, fault: str) -> None:
    if fault == "removed":
        state.unlink()
    else:  # an empty file of ours put in its place, as a restore or a cleanup script would
        fresh = state.with_name("fresh")
        fresh.touch(mode=0o600)
        os.replace(fresh, state)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["removed", "replaced"])
def test_a_removed_state_file_does_not_split_the_budget(tmp_path: Path, fault: str) -> None:
    """A process floods the budget; its state file is removed (or replaced); a new process joins.

    The first process kept the descriptor of the file it opened, the second
    opened the new one: each counted alone, and a second held twice the rate.
    """
    reports = limiter_worker.state_file_pulled_under_load(tmp_path / "kis", RATE, lambda state: _remove(state, fault))
    assert all(r["errors"] == [] and r["timeouts"] == 0 and not r["falling_back"] for r in reports), reports
    granted = [go_at for report in reports for go_at in report["granted"]]
    departed = [stamp for report in reports for stamp in report["departed"]]
    assert len(departed) >= 2 * RATE
    assert busiest_second(granted) <= math.floor(RATE) + 1, f"{busiest_second(granted)} calls let go in one second"
    assert busiest_second(departed) <= NOMINAL, f"{busiest_second(departed)} calls left within one second"


# ------------------------------------------------------------------------------------------ full disk
FULL_DISK_PROBE = """
import resource, signal, sys
from korea_investment_stock import ConfigurationError, RateLimitWaitTimeout
from korea_investment_stock.limits import FileRateLimiter, ProcessRateLimiter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
limiter = FileRateLimiter(sys.argv[1], rate=20.0)
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))  # no file may grow past 16 bytes: a full disk
try:
    limiter.acquire("app-key", "real", timeout=5)
    limiter.usage("app-key", "real")
    limiter.penalize("app-key", "real", 0.1)
    print("fell back" if limiter.falling_back else "shared")
except Exception as exc:
    print(f"raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
"""


def test_a_file_too_large_to_write_takes_the_fallback(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the state file's writes (EFBIG), as a full disk would."""
    env = {**os.environ, "PYTHONPATH": str(limiter_worker.ROOT)}
    answer = subprocess.run(
        [sys.executable, "-c", FULL_DISK_PROBE, str(tmp_path / "kis")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert answer.stdout.strip() == "fell back", answer.stdout + answer.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs, filled up: a real ENOSPC (needs root to mount; skipped otherwise)."""
    mount = tmp_path / "full"
    mount.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(filler, b"x" * 4096)
        finally:
            os.close(filler)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_takes_the_fallback(full_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    limiter = FileRateLimiter(full_disk, rate=20.0)
    with caplog.at_level(logging.WARNING, "korea_investment_stock.limits.file"):
        limiter.acquire("app-key", "real", timeout=5)
        limiter.penalize("app-key", "real", 0.1)
        limiter.usage("app-key", "real")
    assert limiter.falling_back
    assert any("No space left" in r.getMessage() for r in caplog.records)
    limiter.close()


def test_a_grant_counter_at_its_maximum_wraps(tmp_path: Path) -> None:
    """2**32 is a multiple of the ring size, so wrapping the counter keeps every ring position."""
    from korea_investment_stock.limits import file as file_module

    limiter = FileRateLimiter(tmp_path, rate=1000.0)
    limiter.acquire("app-key", "real")
    state = limiter.state_path(bucket_id("app-key", "real"))
    fields = list(file_module._HEADER.unpack(state.read_bytes()[: file_module._HEADER.size]))
    fields[6] = 2**32 - 1  # the grant counter
    with open(state, "r+b") as planted:
        planted.write(file_module._HEADER.pack(*fields))
    for _ in range(3):
        limiter.acquire("app-key", "real", timeout=5)
    assert not limiter.falling_back
    assert file_module._HEADER.unpack(state.read_bytes()[: file_module._HEADER.size])[6] == 2
    # The planted counter moved the ring on by one lap minus one: the three grants since then
    # sit at positions 127, 0 and 1 (the first grant's entry at 0 was overwritten).
    assert limiter.usage("app-key", "real").used_last_second == 3
    limiter.close()


# ------------------------------------------------------------------------------ other clocks, slow rates
WRITER_AHEAD = """
import sys, time
real = time.monotonic
time.monotonic = lambda: real() + float(sys.argv[2])  # this process's clock runs ahead
from korea_investment_stock import ConfigurationError, RateLimitWaitTimeout
from korea_investment_stock.limits import FileRateLimiter, ProcessRateLimiter
limiter = FileRateLimiter(sys.argv[1], rate=2.0)
for _ in range(3):
    limiter.acquire("app-key", "real", timeout=5)
limiter.penalize("app-key", "real", 1.0)
print("written", flush=True)
"""


def test_a_state_written_by_a_clock_ahead_never_blocks(tmp_path: Path) -> None:
    """A state file from another clock up to an hour ahead blocked every call for as long.

    The writer left a backlog of its own (three slots at 2/s and a 1 s pause): that much a
    reader may still wait, never the clocks' difference.
    """
    env = {**os.environ, "PYTHONPATH": str(limiter_worker.ROOT)}
    for ahead in (1200.0, 3000.0):
        directory = tmp_path / f"ahead-{ahead:g}"
        written = subprocess.run(
            [sys.executable, "-c", WRITER_AHEAD, str(directory), str(ahead)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        assert written.stdout.strip() == "written", written.stderr
        limiter = FileRateLimiter(directory, rate=2.0)
        assert limiter.acquire("app-key", "real", timeout=5) <= 2.5
        assert not limiter.falling_back
        limiter.close()


def test_a_state_from_another_boot_is_discarded(tmp_path: Path) -> None:
    """``time.monotonic()`` restarts at boot: a state of another boot says nothing about our clock."""
    from korea_investment_stock.limits import file as file_module

    writer = FileRateLimiter(tmp_path, rate=0.5)
    for _ in range(4):  # four slots reserved at once: the next free one is 8 s away
        assert writer._reserve(bucket_id("app-key", "real"), 0.5, 10.0) is not None
    writer.close()
    state = writer.state_path(bucket_id("app-key", "real"))
    fields = list(file_module._HEADER.unpack(state.read_bytes()[: file_module._HEADER.size]))
    assert fields[8] == file_module.boot_id()
    fields[8] = bytes(reversed(fields[8])) if any(fields[8]) else b"\x01" * 16
    with open(state, "r+b") as planted:
        planted.write(file_module._HEADER.pack(*fields))
    reader = FileRateLimiter(tmp_path, rate=0.5)
    assert reader.acquire("app-key", "real", timeout=5) == 0.0
    assert reader.usage("app-key", "real").used_last_second == 1  # the other boot's grants do not count
    reader.close()


def test_a_redis_state_from_a_clock_ahead_never_blocks(redis_backend: Any) -> None:  # noqa: F811
    """After a failover to a server whose clock is behind, the state's times are ahead of its TIME.

    The planted state was written 1200 s "ahead" with no backlog of its own: nothing to wait for.
    """
    client = redis_backend.client()
    limiter = RedisRateLimiter(client, key_prefix=redis_backend.prefix, rate=2.0)
    (state,) = limiter.keys(bucket_id("app-key", "real"))
    seconds, micros = client.time()
    ahead = (int(seconds) * 1_000_000 + int(micros)) + 1200 * 1_000_000
    client.hset(state, mapping={"tat": ahead, "penalty_until": ahead, "at": ahead, "rate": "2.0"})
    assert limiter.acquire("app-key", "real", timeout=5) == 0.0
    assert not limiter.falling_back


def test_a_rate_below_one_an_hour_is_enforced_by_the_file(tmp_path: Path) -> None:
    limiter = FileRateLimiter(tmp_path, rate=1 / 7200)
    assert limiter.acquire("app-key", "real", timeout=5) == 0.0
    with pytest.raises(RateLimitWaitTimeout):
        limiter.acquire("app-key", "real", timeout=5)
    assert FileRateLimiter(tmp_path, rate=1 / 7200).usage("app-key", "real").backlog_seconds > 7000
    limiter.close()


def test_a_redis_budget_outlives_its_next_slot(redis_backend: Any) -> None:  # noqa: F811
    """The keys' TTL covered the wait, not the interval: at one call per two hours the key expired
    after a minute, and the next call went at once."""
    client = redis_backend.client()
    limiter = RedisRateLimiter(client, key_prefix=redis_backend.prefix, rate=1 / 7200)
    assert limiter.acquire("app-key", "real", timeout=5) == 0.0
    with pytest.raises(RateLimitWaitTimeout):
        limiter.acquire("app-key", "real", timeout=5)
    (state,) = limiter.keys(bucket_id("app-key", "real"))
    assert client.pttl(state) > 7200 * 1000


def test_rates_below_the_minimum_are_refused() -> None:
    """Every accepted rate is enforced, so a rate too slow to keep state for is refused, not ignored."""
    from korea_investment_stock.limits.budget import rate_from_env

    with pytest.raises(ConfigurationError, match="one call per day"):
        ProcessRateLimiter(1 / 200_000)
    with pytest.raises(ConfigurationError, match="one call per day"):
        rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": "0.000001"})
    from korea_investment_stock.limits.budget import MIN_RATE

    assert MIN_RATE == pytest.approx(1 / 86400)
    assert ProcessRateLimiter(MIN_RATE).rate == MIN_RATE


# ------------------------------------------------------------------------------------------ bounded waits
class WatchedFlock:
    """``fcntl`` as the file limiter sees it, telling the test when a ``flock`` found the lock taken."""

    LOCK_EX, LOCK_NB, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_UN

    def __init__(self) -> None:
        self.refused = threading.Event()

    def flock(self, fd: int, operation: int) -> None:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            self.refused.set()
            raise


def test_a_stalled_budget_does_not_delay_another_app_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller of app key A waits for A's lock, whose holder is stopped: B's callers go on at once.

    One guard for every budget was held across the wait for A's lock, so B
    waited as long as A's caller did (5.7 s for a caller allowed 1 s).
    """
    from korea_investment_stock.limits import file as file_module

    from .test_rate_limit import _holder

    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGSTOP)
    watched = WatchedFlock()
    monkeypatch.setattr(file_module, "fcntl", watched)
    limiter = FileRateLimiter(tmp_path, rate=20.0)
    stuck_done, other_done = threading.Event(), threading.Event()
    outcome: list[object] = []

    def stuck() -> None:
        with contextlib.suppress(RateLimitWaitTimeout):
            limiter.acquire("app-key", "real", timeout=30)
        stuck_done.set()

    def other() -> None:
        outcome.append(limiter.acquire("other-key", "real", timeout=1))
        limiter.penalize("other-key", "real", 0.01)
        outcome.append(limiter.usage("other-key", "real").used_last_second)
        other_done.set()

    waiter = threading.Thread(target=stuck, daemon=True)
    waiter.start()
    try:
        assert watched.refused.wait(30), "the first caller never met the stopped holder's lock"
        threading.Thread(target=other, daemon=True).start()
        assert other_done.wait(15), "a caller of another app key waited for the stalled one"
        assert not stuck_done.is_set(), "the stalled caller gave up first: the test proved nothing"
        assert outcome == [0.0, 1] and not limiter.falling_back
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait(10)
        waiter.join(60)
    assert stuck_done.is_set()


# ------------------------------------------------------------------------------------------ fairness
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["process", "file", "fakeredis", pytest.param("real", marks=pytest.mark.real_redis)]
)
def test_threads_are_served_in_the_order_they_asked(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """30 threads of one process share a budget: none times out, each gets about as many calls as the others.

    The process's turn was a plain lock with a timeout, which is not fair: in one
    run 54 calls timed out and 6 of 30 threads got no call in 6 s while one got 15
    (here, before the fix: 3 to 15 calls a thread at 20/s).  Served first come,
    first served, every thread gets one call per round of 30.  A thread the
    scheduler keeps from rejoining the line for longer than a turn (50 ms) loses
    its place, so on a loaded machine one thread may end a round apart from
    another: the spread allowed is 2 calls, not 1.
    """
    rate, threads = 20.0, 30
    limiter: Any
    if backend == "process":
        limiter = ProcessRateLimiter(rate)
    elif backend == "file":
        limiter = FileRateLimiter(tmp_path, rate=rate)
    elif backend == "fakeredis":
        limiter = RedisRateLimiter(request.getfixturevalue("fake_redis"), key_prefix="kis-test:fair", rate=rate)
    else:
        import redis

        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=5.0)
        limiter = RedisRateLimiter(client, key_prefix=request.getfixturevalue("redis_prefix"), rate=rate)
    # A fair turn keeps every thread 1.5 s (a round) from its next call; 3 s is two rounds.
    seen = run_callers([lambda: limiter.acquire("app-key", "real", timeout=3.0)] * threads, seconds=6.0)
    assert seen.errors == [] and seen.timeouts == 0, f"{seen.timeouts} calls timed out"
    assert max(seen.per_caller) - min(seen.per_caller) <= 2, f"calls per thread: {sorted(seen.per_caller)}"
    assert sum(seen.per_caller) >= 4 * threads


# ------------------------------------------------------------------------------------------ fork
def _reap(pid: int, bound: float = 30.0) -> int:
    """The exit code of forked child ``pid``; killed (and the test failed) if it runs past ``bound``."""
    reaped: list[int] = []
    reaper = threading.Thread(target=lambda: reaped.append(os.waitpid(pid, 0)[1]), daemon=True)
    reaper.start()
    reaper.join(bound)
    if reaper.is_alive():
        os.kill(pid, signal.SIGKILL)
        reaper.join(10)
        pytest.fail(f"the forked child hung for {bound:g} s on a lock copied from the parent")
    return os.waitstatus_to_exitcode(reaped[0])


def test_a_child_forked_while_a_thread_is_in_limiter_for_gets_its_limiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-fork server forks while one of its threads builds a client: the child must not inherit
    the factory's lock held for good."""
    from korea_investment_stock.limits import factory, limiter_for
    from korea_investment_stock.token.file import FileTokenStorage

    rate_limited(monkeypatch)
    inside, leave = threading.Event(), threading.Event()

    def in_limiter_for() -> None:
        with factory._GUARD:  # where a thread inside limiter_for() is
            inside.set()
            leave.wait(60)

    builder = threading.Thread(target=in_limiter_for, daemon=True)
    builder.start()
    try:
        assert inside.wait(30)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                limiter = limiter_for(FileTokenStorage(tmp_path / "child" / "token.key"))
                code = 0 if isinstance(limiter, FileRateLimiter) else 1
            finally:
                os._exit(code)
    finally:
        leave.set()
        builder.join(30)
    assert _reap(pid) == 0


# ------------------------------------------------------------------------------------------ resources
def _open_copies(path: Path) -> int:
    """How many descriptors of this process are open on ``path``."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}") == str(path)
    return count


def test_a_client_shutdown_releases_its_limiters_files(fake_kis: Any, token_file: Path) -> None:
    """One descriptor leaked per client that was given a FileRateLimiter."""
    from korea_investment_stock import KoreaInvestment
    from korea_investment_stock.token.file import FileTokenStorage

    limiters = [FileRateLimiter(token_file.parent, rate=50.0) for _ in range(3)]
    for limiter in limiters:
        with KoreaInvestment(
            fake_kis.app_key,
            fake_kis.app_secret,
            "12345678-01",
            token_storage=FileTokenStorage(token_file),
            base_url=fake_kis.url,
            rate_limiter=limiter,
        ) as client:
            client.fetch_domestic_price("J", "005930")
    state = limiters[0].state_path(bucket_id(fake_kis.app_key, "real"))
    assert state.exists() and _open_copies(state) == 0
    limiters[0].acquire(fake_kis.app_key, "real")  # a closed limiter opens its file again when used
    assert _open_copies(state) == 1
    limiters[0].close()


def test_a_collected_file_limiter_closes_its_files(tmp_path: Path) -> None:
    limiter = FileRateLimiter(tmp_path, rate=50.0)
    limiter.acquire("app-key", "real")
    state = limiter.state_path(bucket_id("app-key", "real"))
    assert _open_copies(state) == 1
    del limiter
    gc.collect()
    assert _open_copies(state) == 0


def test_closing_never_pulls_a_descriptor_from_under_a_caller(tmp_path: Path) -> None:
    """Threads acquire while another closes the limiter over and over: no call fails, none falls back."""
    limiter = FileRateLimiter(tmp_path, rate=2000.0)
    closes = 0

    def closer(stop: threading.Event) -> None:
        nonlocal closes
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            limiter.close()
            closes += 1

    seen = run_callers([lambda: limiter.acquire("app-key", "real", timeout=5)] * 4, seconds=1.0, during=closer)
    assert seen.errors == [] and seen.timeouts == 0 and not limiter.falling_back
    assert len(seen.stamps) >= 10 and closes >= 10  # they did interleave
    limiter.close()


def test_a_close_waits_for_no_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller waits for a stopped holder's lock with a long wait: closing (a client's shutdown) returns
    at once, and the descriptor is closed once that caller is done with it."""
    from korea_investment_stock.limits import file as file_module

    from .test_rate_limit import _holder

    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGSTOP)
    watched = WatchedFlock()
    monkeypatch.setattr(file_module, "fcntl", watched)
    limiter = FileRateLimiter(tmp_path, rate=20.0)
    state = limiter.state_path(bucket_id("app-key", "real"))
    closed, done = threading.Event(), threading.Event()

    def waiting() -> None:
        with contextlib.suppress(RateLimitWaitTimeout):
            limiter.acquire("app-key", "real", timeout=30)
        done.set()

    waiter = threading.Thread(target=waiting, daemon=True)
    waiter.start()
    try:
        assert watched.refused.wait(30)
        threading.Thread(target=lambda: (limiter.close(), closed.set()), daemon=True).start()
        assert closed.wait(15), "close() waited for a caller's wait"
        assert not done.is_set()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait(10)
        waiter.join(60)
    assert done.is_set() and _open_copies(state) == 0


@dataclass
class DataclassStorage(TokenStorage):
    """A custom store written as a dataclass: equality by value, so not hashable (0.6.1 accepted it)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def save_token(self, token_data: dict[str, Any]) -> bool:
        self.rows[token_data["api_key"]] = dict(token_data)
        return True

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        row = self.rows.get(api_key)
        return dict(row, api_secret=api_secret) if row and row["api_secret"] == api_secret else None

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        row = self.load_token(api_key, api_secret)
        return row is not None and row["timestamp"] - time.time() > self.refresh_margin

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        return self.rows.pop(api_key, None) is not None


def test_an_unhashable_custom_store_gets_the_process_limiter(fake_kis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from korea_investment_stock import KoreaInvestment
    from korea_investment_stock.limits import limiter_for

    rate_limited(monkeypatch)
    storage = DataclassStorage()
    with pytest.raises(TypeError):
        hash(storage)
    with KoreaInvestment(
        fake_kis.app_key, fake_kis.app_secret, "12345678-01", token_storage=storage, base_url=fake_kis.url
    ) as client:
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert type(client.rate_limiter) is ProcessRateLimiter
    assert limiter_for(DataclassStorage()) is client.rate_limiter  # custom stores share the per-rate one


# ------------------------------------------------------------------------------------------ fallback
@pytest.mark.slow
@pytest.mark.real_redis
def test_processes_in_fallback_share_one_budget_per_host(fake_kis_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """Four processes of one host lose their Redis (killed once every client holds its token).

    Each kept 25 % of the budget on its own: together the whole budget, as if
    Redis had never been there.  They now share one file budget at 25 % in the
    host's token directory.
    """
    from korea_investment_stock.limits.budget import FALLBACK_SHARE, default_rate
    from testsupport.flood import FloodConfig, run_flood
    from testsupport.redis_server import RedisServer

    kis = fake_kis_factory(rest_rate_limit=20)
    seconds = 4.0
    with RedisServer() as server:
        config = FloodConfig(
            url=kis.url,
            app_key=kis.app_key,
            app_secret=kis.app_secret,
            storage="redis",
            token_file="",
            redis_url=server.url,
            key_prefix="kis-test:fallback",
            threads=3,
        )
        result = run_flood(kis, config, 4, seconds, workdir=tmp_path, before_window=server.kill)
    print(result.line("fallback"))
    assert result.caller_errors == 0 and result.egw00201 == 0, result.line("fallback")
    host_share = default_rate("real") * FALLBACK_SHARE * seconds
    # At the window's start each process may still hold the one slot Redis granted it (4), and a
    # window of GCRA slots may hold one more than the rate times its length (1).
    assert host_share * 0.5 <= result.accepted <= host_share + 4 + 1, result.line("fallback")
