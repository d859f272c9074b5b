"""The per-second REST budget: one per app key, shared like the token.

Counts come from the fake KIS server (its per-second limit on): accepted calls
and ``EGW00201`` answers are what KIS would count.  Processes are real
(``spawn``), Redis is fakeredis and the real server, faults are real signals.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from korea_investment_stock import ConfigurationError, KoreaInvestment, RateLimitWaitTimeout
from korea_investment_stock.limits import (
    FileRateLimiter,
    NoRateLimit,
    ProcessRateLimiter,
    default_rate,
    limiter_for,
)
from korea_investment_stock.limits.budget import bucket_id, departure, rate_from_env, reserve
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.file import FileTokenStorage
from testsupport.departures import busiest_second
from testsupport.environment import rate_limited
from testsupport.flood import FloodConfig, FloodResult, run_flood

from .redis_fixtures import fake_redis, private_redis, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .test_storage_contract import DictStorage

ACCOUNT = "12345678-01"
ROOT = Path(__file__).resolve().parents[1]


def client_for(kis: FakeKIS, token_file: Path, **kwargs: Any) -> KoreaInvestment:
    return KoreaInvestment(
        kis.app_key, kis.app_secret, ACCOUNT, token_storage=FileTokenStorage(token_file), base_url=kis.url, **kwargs
    )


# ------------------------------------------------------------------------------------- the algorithm
@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=80),
)
def test_gcra_slots_never_crowd_a_second(rate: float, gaps: list[float]) -> None:
    """Whatever the asking pattern: slots are served in order, never before asked, never closer than 1/rate."""
    interval = 1.0 / rate
    tat, now, slots = 0.0, 100.0, []
    for gap in gaps:
        now += gap
        granted = reserve(tat, now, interval, max_wait=math.inf)
        assert granted is not None
        slot, tat = granted
        assert slot >= now
        slots.append(slot)
    assert all(b - a >= interval - 1e-9 for a, b in zip(slots, slots[1:], strict=False))
    assert busiest_second(slots) <= math.floor(rate + 1e-9) + 1


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50.0),
    calls=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.3),  # gap since the previous request
            st.floats(min_value=0.0, max_value=0.5),  # the server stalls this long before the script runs
            st.floats(min_value=0.0, max_value=1.0),  # the reply's trip back, as a share of the slack
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_a_stalled_store_never_lets_a_call_leave_before_its_slot(
    rate: float, calls: list[tuple[float, float, float]]
) -> None:
    """The Redis acquire as a model: requests reach the server in order, which runs one script at a
    time and may stall before ours (a slow command, a fork); the script reserves on the server's clock
    and answers the wait; the caller leaves at ``departure(reply, wait)``.

    Departures never precede their slot, and while the reply leg is shorter than the slack the rate
    leaves below the next whole number, no second holds more than ``floor(rate) + 1``.
    """
    interval = 1.0 / rate
    slack = (math.floor(rate) + 1) / rate - 1.0
    tat, asked, server_free, departures = 0.0, 100.0, 0.0, []
    for gap, stall, leg in calls:
        asked += gap
        ran = max(asked, server_free) + stall
        server_free = ran
        granted = reserve(tat, ran, interval, max_wait=math.inf)
        assert granted is not None
        slot, tat = granted
        go = departure(ran + leg * slack * 0.99, slot - ran)
        assert go >= slot - 1e-9
        departures.append(go)
    assert busiest_second(departures) <= math.floor(rate + 1e-9) + 1


class FakeClock:
    """``time`` for a limiter module under test: ``monotonic()`` is what the test sets."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50.0),
    turns=st.lists(
        st.tuples(st.just(0.0) | st.floats(min_value=0.0, max_value=0.3), st.integers(min_value=0, max_value=2)),
        min_size=1,
        max_size=120,
    ),
    removal=st.tuples(st.integers(min_value=0, max_value=119), st.sampled_from(["removed", "replaced"])),
)
def test_a_removed_state_file_keeps_one_budget(
    rate: float, turns: list[tuple[float, int]], removal: tuple[int, str]
) -> None:
    """Processes A and B share a state file; it is removed (or replaced) at some turn; C starts after.

    Each process asks for its next slot once its previous one came (as its threads take turns).
    Old processes notice the new file under the lock and carry the old state over, so the host
    keeps one budget.  C knows nothing of the old file: the slots A and B still held when C took
    its first one (one each at most) are all that can crowd a second.
    """
    from unittest import mock

    from korea_investment_stock.limits import file as file_module

    clock = FakeClock()
    bucket = bucket_id("app-key", "real")
    slots: list[float] = []
    unknown_to_c = 0
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(file_module, "time", clock):
        views = [FileRateLimiter(directory), FileRateLimiter(directory)]
        busy = [0.0, 0.0, 0.0]
        state = views[0].state_path(bucket)
        for index, (gap, asked_by) in enumerate([(0.0, 0), (0.0, 1), *turns]):
            if index == 2 + removal[0] and state.exists():
                if removal[1] == "removed":
                    state.unlink()
                else:
                    fresh = state.with_name("fresh")
                    fresh.touch(mode=0o600)
                    os.replace(fresh, state)
            if index > 2 + removal[0] and len(views) == 2:
                views.append(FileRateLimiter(directory))
            process = min(asked_by, len(views) - 1)
            clock.now = max(clock.now + gap, busy[process])
            if process == 2 and busy[2] == 0.0:
                unknown_to_c = sum(1 for held in busy[:2] if held > clock.now)
            slot = views[process]._shared_reserve(bucket, rate, max_wait=math.inf)
            assert slot is not None and slot >= clock.now
            busy[process] = slot
            slots.append(slot)
        for view in views:
            view.close()
    assert busiest_second(slots) <= math.floor(rate + 1e-9) + 1 + unknown_to_c


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=1 / 86400, max_value=50.0),
    ahead=st.floats(min_value=-7200.0, max_value=7200.0),
    writes=st.integers(min_value=1, max_value=20),
    penalty=st.just(0.0) | st.floats(min_value=0.0, max_value=2.0),
    later=st.floats(min_value=0.0, max_value=5.0),
)
def test_a_state_from_another_clock_never_blocks(
    rate: float, ahead: float, writes: int, penalty: float, later: float
) -> None:
    """A state written by a clock ``ahead`` of ours (or behind it) delays us by at most the backlog
    its writer itself had when it wrote: never by the clocks' difference."""
    from unittest import mock

    from korea_investment_stock.limits import file as file_module

    clock = FakeClock(10_000.0)
    bucket = bucket_id("app-key", "real")
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(file_module, "time", clock):
        writer, reader = FileRateLimiter(directory), FileRateLimiter(directory)
        clock.now = 10_000.0 + ahead
        for _ in range(writes):
            writer._shared_reserve(bucket, rate, max_wait=math.inf)
        if penalty:
            writer._shared_penalize(bucket, penalty)
        backlog = writer._shared_usage(bucket, rate).backlog_seconds
        clock.now = 10_000.0 + later
        slot = reader._shared_reserve(bucket, rate, max_wait=math.inf)
        writer.close()
        reader.close()
    assert slot is not None and 0.0 <= slot - clock.now <= backlog + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=1.0, max_value=50.0),
    turns=st.lists(
        st.tuples(st.just(0.0) | st.floats(min_value=0.0, max_value=0.3), st.integers(min_value=0, max_value=3)),
        min_size=1,
        max_size=80,
    ),
)
def test_processes_in_fallback_share_one_budget(rate: float, turns: list[tuple[float, int]]) -> None:
    """Four processes' Redis limiters whose Redis refuses every connection: together they keep to the
    fallback share, counted in the host's fallback file, whatever the order they ask in."""
    from unittest import mock

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from korea_investment_stock.limits import budget as budget_module
    from korea_investment_stock.limits import file as file_module
    from korea_investment_stock.limits.budget import FALLBACK_SHARE
    from korea_investment_stock.limits.redis import RedisRateLimiter
    from testsupport.redis_server import free_port

    clock = FakeClock()
    bucket = bucket_id("app-key", "real")
    closed = free_port()
    slots: list[float] = []
    with (
        tempfile.TemporaryDirectory() as directory,
        mock.patch.dict(os.environ, {"KOREA_INVESTMENT_TOKEN_FILE": f"{directory}/token.key"}),
        mock.patch.object(file_module, "time", clock),
        mock.patch.object(budget_module, "time", clock),
    ):
        processes = [
            RedisRateLimiter(
                redis.Redis(port=closed, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)), "kis-test:down"
            )
            for _ in range(4)
        ]
        busy = [0.0] * len(processes)
        for gap, process in turns:
            clock.now = max(clock.now + gap, busy[process])
            slot = processes[process]._reserve(bucket, rate, max_wait=3600.0)
            assert slot is not None and slot >= clock.now and processes[process].falling_back
            busy[process] = slot
            slots.append(slot)
        for limiter in processes:
            limiter.close()
    assert busiest_second(slots) <= math.floor(rate * FALLBACK_SHARE + 1e-9) + 1


def test_a_slot_beyond_the_wait_is_not_taken() -> None:
    assert reserve(tat=10.5, now=10.0, interval=0.1, max_wait=0.4) is None
    assert reserve(tat=10.5, now=10.0, interval=0.1, max_wait=0.5) == (10.5, 10.6)


def test_a_fair_lock_waiter_leaves_at_its_deadline_without_taking_a_turn() -> None:
    from korea_investment_stock.limits.budget import FairLock

    lock = FairLock()
    assert lock.acquire(time.monotonic() + 1)
    assert not lock.acquire(time.monotonic() + 0.05)  # a second waiter gives up at its deadline
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(time.monotonic() + 30)))
    waiter.start()
    lock.release()  # to the waiter (in line or not yet), not to the one that left
    waiter.join(30)
    assert got == [True]
    assert not lock.acquire(time.monotonic() + 0.05)  # the waiter holds it now
    lock.release()
    assert lock.acquire(time.monotonic())


def test_default_rates_keep_a_margin_below_kis() -> None:
    assert default_rate("real") == pytest.approx(18.5)
    assert default_rate("mock") == pytest.approx(1.85)
    # 21 slots in a row span more than a second by the margin: room for network jitter.
    for environment, nominal in (("real", 20), ("mock", 2)):
        assert nominal / default_rate(environment) - 1.0 > 0.05


# ------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("value", ["fast", "-1", "0.0x", "inf", "nan", "-0.5"])
def test_a_bad_rate_setting_names_what_is_accepted(value: str) -> None:
    with pytest.raises(ConfigurationError, match="calls per second.*'off'"):
        rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": value})


def test_rate_settings() -> None:
    assert rate_from_env({}) is None
    assert rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": "off"}) is False
    assert rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": " 7.5 "}) == 7.5
    for bad in (0, -1, math.nan, math.inf, True, "5"):
        with pytest.raises(ConfigurationError, match="rate"):
            ProcessRateLimiter(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="environment"):
        ProcessRateLimiter().acquire("key", "paper")


def test_a_client_refuses_a_bad_wait_and_a_bad_environment_variable(
    fake_kis: FakeKIS, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit_wait"):
        client_for(fake_kis, token_file, rate_limit_wait=math.nan)
    rate_limited(monkeypatch, "twenty")
    with pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_RATE_LIMIT"):
        client_for(fake_kis, token_file)
    assert fake_kis.stats.tokenp_requests == 0


@pytest.mark.parametrize("retries", [math.nan, 1.5, True, "3", -1, 1_000_000])
def test_rate_limit_retries_must_be_a_small_whole_number(fake_kis: FakeKIS, token_file: Path, retries: object) -> None:
    """NaN compared false with every bound, so a call answered EGW00201 retried for ever."""
    with pytest.raises(ConfigurationError, match="rate_limit_retries"):
        client_for(fake_kis, token_file, rate_limit_retries=retries)
    assert fake_kis.stats.tokenp_requests == 0


def test_every_seconds_setting_has_one_upper_bound(fake_kis: FakeKIS, token_file: Path) -> None:
    """1e10 s passed validation and failed later with OverflowError (beyond threading.TIMEOUT_MAX)."""
    with pytest.raises(ConfigurationError, match="rate_limit_wait.*at most"):
        client_for(fake_kis, token_file, rate_limit_wait=1e10)
    with pytest.raises(ConfigurationError, match="wait_timeout.*at most"):
        FileTokenStorage(token_file, wait_timeout=1e10)
    with pytest.raises(ConfigurationError, match="timeout.*at most"):
        ProcessRateLimiter(5.0).acquire("app-key", "real", timeout=1e10)
    assert fake_kis.stats.tokenp_requests == 0
    from korea_investment_stock.validation import MAX_SECONDS, check_seconds

    assert MAX_SECONDS < threading.TIMEOUT_MAX
    assert check_seconds("wait", MAX_SECONDS) == MAX_SECONDS


def test_the_default_limiter_follows_the_token_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_redis: Any,  # noqa: F811
) -> None:
    rate_limited(monkeypatch)
    store = FileTokenStorage(tmp_path / "kis" / "token.key")
    limiter = limiter_for(store)
    assert isinstance(limiter, FileRateLimiter) and limiter.directory == store.file_path.parent
    assert limiter_for(FileTokenStorage(tmp_path / "kis" / "token.key")) is limiter  # one per directory
    from korea_investment_stock.limits.redis import RedisRateLimiter
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    redis_store = LockingRedisTokenStorage(client=fake_redis, key_prefix="kis-test:limit")
    redis_limiter = limiter_for(redis_store)
    assert isinstance(redis_limiter, RedisRateLimiter)
    assert redis_limiter.key_prefix == "kis-test:limit" and redis_limiter._client is fake_redis
    # Cluster-safe: the budget's keys carry the token key's hash tag.
    token_key = redis_store.redis_keys("app-key").token
    tag = token_key[token_key.index("{") : token_key.index("}") + 1]
    assert all(tag in key for key in redis_limiter.keys(bucket_id("app-key", "real")))
    assert type(limiter_for(DictStorage())) is ProcessRateLimiter
    rate_limited(monkeypatch, "off")
    assert isinstance(limiter_for(store), NoRateLimit)
    rate_limited(monkeypatch, "5")
    assert limiter_for(store).rate_for("real") == 5.0


# ------------------------------------------------------------------------------------- on the client
def test_no_slot_within_the_wait_fails_at_once_and_sends_nothing(fake_kis: FakeKIS, token_file: Path) -> None:
    with client_for(fake_kis, token_file, rate_limiter=ProcessRateLimiter(0.5), rate_limit_wait=0.5) as client:
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        sent = fake_kis.stats.rest_requests
        with pytest.raises(RateLimitWaitTimeout, match="nothing was sent") as caught:
            client.fetch_domestic_price("J", "005930")
    assert isinstance(caught.value, TimeoutError)
    assert fake_kis.stats.rest_requests == sent == 1


def test_tokenp_is_not_charged_unless_asked(fake_kis_factory: Any, tmp_path: Path) -> None:
    for charge, expected in ((False, 1), (True, 3)):  # one quotation; plus tokenP and revokeP
        kis = fake_kis_factory()  # its own issue window
        limiter = ProcessRateLimiter(50.0)
        token_file = tmp_path / f"charge-{charge}" / "token.key"
        with client_for(kis, token_file, rate_limiter=limiter, rate_limit_token_calls=charge) as client:
            client.fetch_domestic_price("J", "005930")
            client.revoke_access_token()
        assert limiter.usage(kis.app_key, "real").used_last_second == expected


def test_an_outside_caller_pauses_the_whole_fleet(fake_kis_factory: Any, token_file: Path) -> None:
    """Someone outside the limiter spends the second's budget: our call gets EGW00201 once,
    the limiter pauses every caller of the budget, and the retry gets through."""
    kis = fake_kis_factory(rest_rate_limit=20)
    backlogs: list[float] = []

    class Watched(FileRateLimiter):
        def _shared_penalize(self, bucket: str, seconds: float) -> None:
            super()._shared_penalize(bucket, seconds)
            backlogs.append(FileRateLimiter(self.directory)._shared_usage(bucket, 1.0).backlog_seconds)

    limiter = Watched(token_file.parent)
    with client_for(kis, token_file, rate_limiter=limiter) as client:
        headers = {
            "authorization": client.access_token,
            "appkey": kis.app_key,
            "appsecret": kis.app_secret,
            "tr_id": "FHKST01010100",
        }
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
        with requests.Session() as outside:
            for _ in range(20):  # the whole second's budget, spent behind the limiter's back
                outside.get(
                    f"{kis.url}/uapi/domestic-stock/v1/quotations/inquire-price",
                    headers=headers,
                    params=params,
                    timeout=5,
                )
        answer = client.fetch_domestic_price("J", "005930")
    assert answer["rt_cd"] == "0"
    assert kis.stats.rest_rejected == {"EGW00201": 1}
    # Another process's view of the same budget saw the pause (a second, minus what passed).
    assert len(backlogs) == 1 and backlogs[0] > 0.5


# ------------------------------------------------------------------------------------------- faults
def test_an_unreachable_redis_falls_back_to_a_share_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    import redis

    from korea_investment_stock.limits.redis import RedisRateLimiter
    from testsupport.redis_server import free_port

    client = redis.Redis(port=free_port(), socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(client, key_prefix="kis-test:down", rate=20.0)
    with caplog.at_level(logging.WARNING, "korea_investment_stock.limits.redis"):
        waits = [limiter.acquire("app-key", "real", timeout=5) for _ in range(3)]
    assert limiter.falling_back
    assert waits[0] == 0 and waits[2] > 0  # a quarter of 20/s: one call per 0.2 s, in this process
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "25% of the budget" in warnings[0]


def test_a_planted_symlink_is_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "kis"
    directory.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    limiter = FileRateLimiter(directory, rate=20.0)
    limiter.state_path(bucket_id("app-key", "real")).symlink_to(target)
    with caplog.at_level(logging.WARNING, "korea_investment_stock.limits.file"):
        limiter.acquire("app-key", "real", timeout=5)
    assert target.read_bytes() == b"precious"
    assert limiter.falling_back and any("symbolic link" in r.getMessage() for r in caplog.records)


def _holder(directory: Path) -> subprocess.Popen[str]:
    """A process that takes the budget's lock and keeps it until killed; ready once it prints 'held'."""
    code = (
        "import sys, time\n"
        "from korea_investment_stock.limits import FileRateLimiter\n"
        "from korea_investment_stock.limits.budget import bucket_id\n"
        f"limiter = FileRateLimiter({str(directory)!r}, rate=20.0)\n"
        "with limiter._locked(bucket_id('app-key', 'real'), time.monotonic() + 60):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_holder_killed_mid_acquire_stalls_nobody(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    limiter = FileRateLimiter(tmp_path, rate=20.0)
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(limiter.acquire("app-key", "real", timeout=30)))
    try:
        waiter.start()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        waiter.join(30)
    finally:
        holder.kill()
    assert not waiter.is_alive() and outcome == [0.0]


def test_a_stopped_holder_costs_a_caller_its_wait_not_more(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        with pytest.raises(RateLimitWaitTimeout):
            FileRateLimiter(tmp_path, rate=20.0).acquire("app-key", "real", timeout=0.3)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait(10)


@pytest.mark.real_redis
def test_a_redis_acquire_is_one_round_trip(private_redis: Any) -> None:  # noqa: F811
    """Counted at both ends: replies the client read, and the commands the server ran on its own."""
    import redis

    from korea_investment_stock.limits.redis import RedisRateLimiter

    replies = [0]

    class CountingConnection(redis.Connection):
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            replies[0] += 1
            return super().read_response(*args, **kwargs)

    pool = redis.ConnectionPool.from_url(private_redis.url, connection_class=CountingConnection, protocol=2)
    limiter = RedisRateLimiter(redis.Redis(connection_pool=pool), key_prefix="kis-test", rate=1000.0)
    limiter.acquire("app-key", "real")  # connects, and loads the script (EVALSHA falls back to EVAL once)
    admin = redis.Redis.from_url(private_redis.url)
    before = {k: v["calls"] for k, v in admin.info("commandstats").items()}
    replies[0] = 0
    for _ in range(20):
        limiter.acquire("app-key", "real")
    after = {k: v["calls"] for k, v in admin.info("commandstats").items()}
    assert replies[0] == 20
    ran = {k.removeprefix("cmdstat_"): n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    assert ran.pop("evalsha") == 20 and ran.pop("info") == 1  # the rest ran inside the script:
    assert set(ran) <= {"time", "hmget", "hset", "pexpire"}  # one hash: what the minimal ACL allows
    assert limiter.usage("app-key", "real").used_last_second >= 1


# ------------------------------------------------------------------------------------- fleets at KIS
def flood(
    kis: FakeKIS, tmp_path: Path, *, processes: int, threads: int, seconds: float, groups: int = 1, **config: Any
) -> FloodResult:
    base = FloodConfig(
        url=kis.url, app_key=kis.app_key, app_secret=kis.app_secret, token_file="", threads=threads, **config
    )
    result = run_flood(kis, base, processes, seconds, groups=groups, workdir=tmp_path)
    print(result.line("flood"))
    return result


@pytest.mark.slow
def test_a_file_fleet_stays_inside_the_budget(fake_kis_factory: Any, tmp_path: Path) -> None:
    kis = fake_kis_factory(rest_rate_limit=20)
    result = flood(kis, tmp_path, processes=2, threads=4, seconds=3.0, storage="file")
    assert result.egw00201 == 0 and result.caller_errors == 0, result.line("flood")
    assert result.budget_used >= 0.85


@pytest.mark.slow
@pytest.mark.real_redis
def test_two_groups_sharing_only_redis_stay_inside_the_budget(
    fake_kis_factory: Any,
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    kis = fake_kis_factory(rest_rate_limit=20)
    result = flood(
        kis,
        tmp_path,
        processes=4,
        threads=3,
        seconds=3.0,
        groups=2,
        storage="redis",
        redis_url=redis_url,
        key_prefix=redis_prefix,
    )
    assert result.egw00201 == 0 and result.caller_errors == 0, result.line("flood")
    assert result.budget_used >= 0.85
    assert {r.group for r in result.reports} == {0, 1}


@pytest.mark.slow
def test_the_mock_profile_keeps_to_two_a_second(fake_kis_factory: Any, tmp_path: Path) -> None:
    kis = fake_kis_factory(rest_rate_limit=2, environment="mock")
    result = flood(kis, tmp_path, processes=2, threads=4, seconds=4.0, storage="file", mock=True)
    assert result.egw00201 == 0 and result.caller_errors == 0, result.line("flood")
    assert result.accepted >= 6  # 1.85/s for 4 s, minus the edges of the window


@pytest.mark.slow
def test_without_the_limiter_the_same_fleet_is_refused(fake_kis_factory: Any, tmp_path: Path) -> None:
    """The control: the flood above does make KIS refuse calls when nothing keeps it in budget."""
    kis = fake_kis_factory(rest_rate_limit=20)
    result = flood(kis, tmp_path, processes=2, threads=4, seconds=2.0, storage="file", design="none")
    assert result.egw00201 > 0


# ------------------------------------------------------------------------------------- kis-token
def test_kis_token_limit_and_health_show_the_budget(
    fake_kis: FakeKIS, token_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from korea_investment_stock.cli import main

    rate_limited(monkeypatch)
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("KOREA_INVESTMENT_API_KEY", fake_kis.app_key)
    monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", fake_kis.url)
    assert main(["limit", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["budgets"] == []
    with client_for(fake_kis, token_file) as client:
        for _ in range(3):
            client.fetch_domestic_price("J", "005930")
    assert main(["limit", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["backend"] == "file" and str(token_file.parent) in document["location"]
    (budget,) = document["budgets"]
    assert budget["environment"] == "real" and budget["rate"] == pytest.approx(18.5)
    assert budget["app_key"] is not None and fake_kis.app_key not in json.dumps(document)
    assert budget["used_last_second"] <= 3  # the entry exists because of the three calls; some may be >1 s old
    assert main(["health", "--json"]) == 0
    (limit_check,) = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "rate limit"]
    assert limit_check["ok"] and limit_check["backend"] == "file" and limit_check["rate"] == pytest.approx(18.5)
    assert main(["health", "--json", "--mock"]) in (0, 1)  # the mock host is not reachable here; the budget is
    (mock_check,) = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "rate limit"]
    assert mock_check["rate"] == pytest.approx(1.85) and mock_check["environment"] == "mock"


def test_a_forked_child_neither_inherits_a_held_lock_nor_the_parents_flock(tmp_path: Path) -> None:
    """A pre-fork server forks while a thread of the parent is inside acquire: the child must not wait
    forever on the copied (held) lock, nor slip through on the parent's flock (a shared open file)."""
    limiter = FileRateLimiter(tmp_path, rate=20.0)
    limiter.acquire("app-key", "real")  # opens the state file in the parent
    bucket = bucket_id("app-key", "real")
    # As a parent thread inside acquire holds them: the budget's guard and the file's flock.
    with limiter._locked(bucket, time.monotonic() + 5) as locked:
        assert locked is not None
        pid = os.fork()
        if pid == 0:  # the child: the flock is the parent's, so no slot within 0.3 s
            code = 3
            try:
                limiter.acquire("app-key", "real", timeout=0.3)
                code = 1
            except RateLimitWaitTimeout:
                code = 0
            finally:
                os._exit(code)
        reaped: list[int] = []
        reaper = threading.Thread(target=lambda: reaped.append(os.waitpid(pid, 0)[1]))
        reaper.start()
        reaper.join(30)
        if reaper.is_alive():
            os.kill(pid, signal.SIGKILL)
            reaper.join(10)
            pytest.fail("the forked child hung on a lock copied from the parent")
    (status,) = reaped
    assert os.waitstatus_to_exitcode(status) == 0


def test_reading_a_budget_creates_nothing(tmp_path: Path) -> None:
    """kis-token health and limit only look: a budget nobody used leaves no state file behind."""
    limiter = FileRateLimiter(tmp_path / "kis", rate=20.0)
    usage = limiter.usage("app-key", "real")
    assert (usage.used_last_second, usage.backlog_seconds) == (0, 0.0)
    assert not (tmp_path / "kis").exists() and limiter.buckets() == []
    limiter.acquire("app-key", "real")
    assert limiter.buckets() == [bucket_id("app-key", "real")]
    assert limiter.usage("app-key", "real").used_last_second == 1


def _cli_environment(monkeypatch: pytest.MonkeyPatch, kis: FakeKIS, token_file: Path) -> None:
    rate_limited(monkeypatch)
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("KOREA_INVESTMENT_API_KEY", kis.app_key)
    monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", kis.url)


def test_kis_token_limit_lists_only_our_budgets(
    fake_kis: FakeKIS, token_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One stray file in the limiter's directory made kis-token limit exit 2."""
    import json

    from korea_investment_stock.cli import main

    _cli_environment(monkeypatch, fake_kis, token_file)
    with client_for(fake_kis, token_file) as client:
        client.fetch_domestic_price("J", "005930")
    for stray in ("ratelimit.foo.bar", "ratelimit.notahexkeyid.real", "ratelimit.a.b.c", "ratelimit..real"):
        (token_file.parent / stray).write_text("not a budget")
    assert main(["limit", "--json"]) == 0
    (budget,) = json.loads(capsys.readouterr().out)["budgets"]
    assert budget["environment"] == "real" and budget["app_key"] is not None


@pytest.mark.parametrize("fault", ["symlink", "another owner", "not writable", "group-writable directory"])
def test_kis_token_health_says_what_is_wrong_with_the_budget_file(
    fault: str,
    fake_kis: FakeKIS,
    token_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """health said "shared" while the key's state file, or the directory, could not be used."""
    import json

    from korea_investment_stock.cli import main

    _cli_environment(monkeypatch, fake_kis, token_file)
    with client_for(fake_kis, token_file) as client:
        client.fetch_domestic_price("J", "005930")
    state = FileRateLimiter(token_file.parent).state_path(bucket_id(fake_kis.app_key, "real"))
    assert state.exists()
    undo = None
    if fault == "symlink":
        state.unlink()
        state.symlink_to(tmp_path / "elsewhere")
        expected = "symbolic link"
    elif fault == "another owner":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        os.chown(state, 65534, 65534)
        expected = "uid 65534"
    elif fault == "not writable":
        if os.geteuid() == 0:  # root writes whatever the mode says: an immutable file refuses even root
            if subprocess.run(["chattr", "+i", str(state)], capture_output=True, check=False).returncode != 0:
                pytest.skip("chattr +i is not available here")
            undo = ["chattr", "-i", str(state)]
        else:
            state.chmod(0o400)
        expected = "permission denied"
    else:
        token_file.parent.chmod(0o770)
        expected = "written by other users"
    try:
        assert main(["health", "--json"]) == 1
    finally:
        if undo:
            subprocess.run(undo, check=False)
    (check,) = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "rate limit"]
    assert not check["ok"], check
    assert expected in check["detail"].lower(), check["detail"]
