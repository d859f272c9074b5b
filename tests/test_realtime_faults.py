"""The faults phase 2 left untested, with real processes and the fake KIS WebSocket as the witness.

* A SIGSTOP'd owner (Redis): its lease lapses, another process takes over, and the stopped one
  closes its socket the moment it runs again. While it is stopped its socket stays open at the fake
  (TCP does not know the process is stopped, and the fake's PINGPONG is 110 s away), so KIS still
  counts that session: the new owner's subscribes get OPSP8996 and it backs off (each refused
  socket closed before the next opens) until the old socket closes; then it gets in at once.
* KIS's release lag (the fake's ``release_lag``): after the owner's death the app key stays busy; the
  new owner backs off on OPSP8996 and gets in once the lag has passed; every stream sees one Gap.
* A slow follower (file store, the Unix socket relay): stopped, it falls behind by more than its
  bounded outbox at the owner; it gets a Gap with the count, and the owner and the other followers
  are not held up.

Counts come from the fake (``max_concurrent``, ``max_connections``, ``opsp8996``, ``frames_sent``)
and the workers' own reports; waits are on those, each with a generous hang bound, never a sleep.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("websockets")

from korea_investment_stock.testing import FakeKIS

from .realtime_workers import HANG, Fleet, backend_of, owner_pid
from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401

SYMBOL = "005930"


@pytest.fixture
def fake() -> Iterator[FakeKIS]:
    with FakeKIS(rest_rate_limit=None, websocket=True) as server:
        server.stream.configure(data_interval=0.05)
        yield server


def fleet_spec(fake: FakeKIS, store: dict[str, Any]) -> dict[str, Any]:
    return {**store, "app_key": fake.app_key, "app_secret": fake.app_secret, "kis_url": fake.url, "ws_url": fake.ws_url}


def file_store(tmp_path: Path) -> dict[str, Any]:
    return {"store": "file", "token_file": str(tmp_path / "kis" / "token.key")}


def subscribed_fleet(spec: dict[str, Any], count: int, *, first_trade: bool = True) -> tuple[Fleet, list[int]]:
    fleet = Fleet(spec)
    pids = fleet.start(count)
    for pid in pids:
        fleet.send(pid, action="subscribe", trades=[SYMBOL])
    for pid in pids:
        fleet.expect(pid, "subscribed")
        if first_trade:
            fleet.expect(pid, "trade")
    return fleet, pids


def new_owner(backend: Any, old: int) -> int:
    """The pid of the owner that replaced ``old`` (as the store records it), polled with a hang bound."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        state = backend.coordinator.state()
        if state is not None and state.owner.pid != old:
            return int(state.owner.pid)
        time.sleep(0.05)  # polling the store, not synchronising
    raise AssertionError(f"nobody replaced owner {old} within {HANG}s")


def first(log: tuple[tuple[float, str, int], ...], app: str, live: int, since: float) -> float:
    """When (the fake's monotonic clock) the app key first had ``live`` sessions at or after ``since``."""
    return next(at for at, key, now in log if key == app and now == live and at >= since)


@pytest.mark.slow
@pytest.mark.real_redis
def test_a_stopped_owner_is_replaced_and_closes_its_socket_when_it_runs_again(
    fake: FakeKIS,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    app = fake.app_key
    spec = fleet_spec(fake, {"store": "redis", "redis_url": redis_url, "prefix": redis_prefix})
    fleet, pids = subscribed_fleet(spec, 3)
    try:
        backend = backend_of(spec, app)
        victim = owner_pid(backend)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            successor = new_owner(backend, victim)
            elected = time.monotonic() - stopped
            # The stopped owner's socket is still open at KIS: the successor is refused and backs off.
            refused = fake.stream.wait_for(lambda s: s.opsp8996 >= 1, timeout=HANG)
            assert refused.live_sessions.get(app) == 1 and refused.sessions_opened[app] == 1
        finally:
            woken = time.monotonic()
            os.kill(victim, signal.SIGCONT)
        accepted = fake.stream.wait_for(lambda s: s.sessions_opened.get(app, 0) >= 2, timeout=HANG)
        closed = first(accepted.session_log, app, 0, woken) - woken
        back_in = first(accepted.session_log, app, 1, woken) - woken
        for pid in pids:  # the woken one too: it follows now
            fleet.expect(pid, "gap", timeout=HANG)
            fleet.expect(pid, "trade", timeout=HANG, after_gap=True)
        final = fake.stream.stats
        print(
            f"\n[redis] SIGSTOP of the owner: {successor} elected after {elected:.2f}s; OPSP8996 while the old "
            f"socket stayed open: {accepted.opsp8996}; after SIGCONT the old socket closed in {closed * 1000:.0f} ms "
            f"and the new session was accepted {back_in:.2f}s after it"
        )
        assert final.max_concurrent[app] == 1, final.session_log
        assert final.max_connections <= 2, "the successor held two sockets at once (beside the stopped one's)"
        assert final.opsp8996 == accepted.opsp8996, "refused again after getting in"
        assert closed < 1.0, "the woken owner did not close its socket at once"
    finally:
        fleet.close()


@pytest.mark.slow
def test_takeover_backs_off_through_kis_release_lag(fake: FakeKIS, tmp_path: Path) -> None:
    lag = 2.0
    app = fake.app_key
    fake.stream.configure(release_lag=lag)
    spec = fleet_spec(fake, file_store(tmp_path))
    fleet, pids = subscribed_fleet(spec, 3)
    try:
        victim = owner_pid(backend_of(spec, app))
        survivors = [p for p in pids if p != victim]
        killed = time.monotonic()
        fleet.kill(victim)
        accepted = fake.stream.wait_for(lambda s: s.sessions_opened.get(app, 0) >= 2, timeout=HANG)
        ended = first(accepted.session_log, app, 0, killed)
        back = first(accepted.session_log, app, 1, ended)
        for pid in survivors:
            fleet.expect(pid, "gap", timeout=HANG)
            fleet.expect(pid, "trade", timeout=HANG, after_gap=True)
        gaps = {pid: fleet.counts(pid)["gaps"] for pid in survivors}
        final = fake.stream.stats
        print(
            f"\n[file] release lag {lag:g}s: {accepted.opsp8996} OPSP8996 backed off, the new session accepted "
            f"{back - ended:.2f}s after the old one ended ({back - killed:.2f}s after SIGKILL)"
        )
        assert accepted.opsp8996 >= 1, "the takeover should have met the lag"
        assert back - ended >= lag
        assert back - ended < lag + 5.0, "backed off far past the lag"
        assert gaps == dict.fromkeys(survivors, 1), gaps
        assert final.max_concurrent[app] == 1 and final.max_connections == 1
        assert final.opsp8996 == accepted.opsp8996
    finally:
        fleet.close()


@pytest.mark.slow
def test_a_slow_follower_gets_a_gap_with_the_count_and_holds_nobody_up(fake: FakeKIS, tmp_path: Path) -> None:
    """Stopped, a follower misses more frames than its outbox at the owner holds (20,000)."""
    chunk, chunks = 1000, 30
    app = fake.app_key
    fake.stream.configure(data_interval=None)  # only the frames this test emits: exact counts
    spec = fleet_spec(fake, file_store(tmp_path))
    fleet, pids = subscribed_fleet(spec, 3, first_trade=False)
    try:
        owner = owner_pid(backend_of(spec, app))
        slow, steady = [p for p in pids if p != owner]
        before = fake.stream.stats.frames_sent
        os.kill(slow, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for n in range(1, chunks + 1):
                for _ in range(chunk):
                    fake.stream.emit_trades(SYMBOL)
                for pid in (owner, steady):  # keeping up while the slow one is stopped
                    deadline = time.monotonic() + HANG
                    while fleet.counts(pid)["trades"] < n * chunk:
                        assert time.monotonic() < deadline, f"{pid} was held up by the stopped follower"
            took = time.monotonic() - started
        finally:
            os.kill(slow, signal.SIGCONT)
        emitted = fake.stream.stats.frames_sent - before
        assert emitted == chunk * chunks
        gap = fleet.expect(slow, "gap", timeout=HANG)
        assert "slow follower" in gap["reason"] and gap["dropped"] > 0, gap
        deadline = time.monotonic() + HANG
        while (seen := fleet.counts(slow))["trades"] + seen["dropped"] < emitted:
            assert time.monotonic() < deadline, f"events lost without a Gap: {seen}, {emitted} emitted"
        assert seen["trades"] + seen["dropped"] == emitted
        for pid in (owner, steady):
            assert fleet.counts(pid) | {"pid": 0} == {
                "pid": 0,
                "kind": "counts",
                "trades": emitted,
                "gaps": 0,
                "dropped": 0,
                "other": 0,
            }
        print(
            f"\n[file] slow follower: {emitted} frames in {took:.2f}s reached the owner and the other follower "
            f"in full; the stopped one got {seen['trades']} and Gaps for {seen['dropped']} "
            f"(the relay's first: {gap['dropped']})"
        )
    finally:
        fleet.close()
