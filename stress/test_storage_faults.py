"""The store fails while the lease holder is inside tokenP: a partition, Redis restarted empty,
a Sentinel failover; and eight accounts cold on one token file.

Every Redis scenario is a cold stampede of 4 processes x 8 threads with the
store's default settings (3 s socket timeout, 15 s lease, 20 s outage
allowance).  The fault starts once the first tokenP request reached the fake
KIS (slowed down, so the holder is still inside it) and every process has
opened a lease, i.e. its store answered it at least once: a store that never
answered a process fails it at once by design, which is not the case here.
The processes stay up until every caller reported, as servers do, except in
``partition[lost-save-then-exit]``, where they exit at once like batch jobs: the
holder's process then waits at exit for its background save.
KIS must see at most two tokenP calls, and no caller may fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.testing.state import new_app_key, new_app_secret
from testsupport import FaultProxy, RedisServer, SentinelCluster

from .conftest import Backend, Fleet
from .harness import (
    HARNESS_TIMEOUT,
    Figures,
    IssuanceClock,
    Outcome,
    error_sample,
    fleet_outcomes,
    summarize,
)
from .workers import accounts_process, fault_fleet_process

PROCESSES, THREADS = 4, 8
CALLERS = PROCESSES * THREADS
#: Bound on the harness's own waits for the fleet to reach the fault point.
REACH_TIMEOUT = 30.0

#: Partition: tokenP takes this long, the partition this long; every caller holds the token this soon after heal.
PARTITION_TOKENP_S = 1.0
PARTITION_S = 5.0
HEAL_BOUND_S = 1.0

#: Restart: tokenP takes this long; Redis is down this long before it starts again, empty.
RESTART_TOKENP_S = 1.0
DOWN_S = 0.5

#: Failover: tokenP takes this long; every caller holds a token this soon after the promotion.
FAILOVER_TOKENP_S = 2.0
PROMOTION_BOUND_S = 5.0

#: Eight accounts: per account 4 processes x 4 threads, tokenP 0.3 s each.  Accounts never queue
#: behind each other (a lock file per app key), so the slowest caller holds its token within two
#: issuance times plus 0.25 s of slack: 128 threads starting on 2 cores, the client builds and
#: the shared file's short write lock.
ACCOUNTS = 8
ACCOUNT_PROCESSES, PER_ACCOUNT = 4, 4
ACCOUNT_TOKENP_S = 0.3
ACCOUNT_SLACK_S = 0.25


def _egw00133(kis: FakeKIS) -> int:
    """EGW00133 answers the fake KIS gave (it counts every rejection by code)."""
    return kis.stats.tokenp_rejected.get("EGW00133", 0)


@dataclass
class _Stampede:
    """The fleet's shared objects.  Kept referenced until the outcomes are in: a forkserver child
    unpickles its arguments after ``start()`` returns, and a collected semaphore is unlinked."""

    barrier: Any
    queue: Any
    leased: list[Any]
    linger: Any

    def outcomes(self) -> list[Outcome]:
        """Every caller's outcome; then the processes may exit (they stay up until then, like servers)."""
        try:
            return fleet_outcomes(self.queue, PROCESSES, CALLERS, HARNESS_TIMEOUT)
        finally:
            self.linger.set()


def _start_fleet(fleet: Fleet, spec: dict[str, Any], *, linger: bool = True) -> _Stampede:
    """Start the cold stampede, with one "opened a lease" event per process.

    ``linger=False``: each process exits as soon as its callers reported, as a batch job
    does; the holder's process must then still store its token before it is gone.
    """
    ctx = fleet.context
    stampede = _Stampede(ctx.Barrier(CALLERS), ctx.Queue(), [ctx.Event() for _ in range(PROCESSES)], ctx.Event())
    for event in stampede.leased:
        fleet.start(
            fault_fleet_process,
            spec,
            THREADS,
            stampede.barrier,
            event,
            stampede.queue,
            stampede.linger if linger else None,
        )
    return stampede


def _wait_mid_issuance(kis: FakeKIS, leased: list[Any]) -> bool:
    """Block until the first tokenP arrived and every process opened a lease; True if tokenP had not
    answered yet (the holder is inside it, so the fault really comes mid-issuance)."""
    kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=REACH_TIMEOUT)
    deadline = time.monotonic() + REACH_TIMEOUT
    for event in leased:
        assert event.wait(max(0.0, deadline - time.monotonic())), "a process never reached the issuance lease"
    return kis.stats.tokenp_success == 0


def _latest_after(outcomes: list[Outcome], moment: float) -> float:
    """Seconds from ``moment`` (``time.time()``) until the last caller held its token."""
    return max((o.at for o in outcomes if o.ok), default=moment) - moment


def _assert_common(figures: Figures, outcomes: list[Outcome], in_tokenp: bool) -> None:
    assert in_tokenp, "tokenP had already answered when the fault began: the scenario did not test mid-issuance"
    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests <= 2, f"{figures.tokenp_requests} tokenP calls"
    assert len({o.token for o in outcomes}) == 1, "callers ended with different tokens"


# ------------------------------------------------------------------------ partition
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["lost-save", "delayed-save", "lost-save-then-exit"])
def test_partition_mid_issuance(
    mode: str,
    own_redis: Callable[..., RedisServer],
    redis_prefix: str,
    kis_factory: Callable[..., FakeKIS],
    issuance_clock: Callable[[FakeKIS], IssuanceClock],
    fleet: Fleet,
    report: Callable[[Figures], Figures],
) -> None:
    """The holder's save meets a 5 s partition on its open connection: dropped and reset at heal
    (``lost-save``), or held and delivered at heal after the holder gave up on it (``delayed-save``).
    ``lost-save-then-exit``: every process exits once its callers reported, the holder's too, while
    its token is still only in its memory: leaving waits for the background save."""
    kis = kis_factory(token_delay=PARTITION_TOKENP_S)
    clock = issuance_clock(kis)
    server = own_redis()
    with FaultProxy("127.0.0.1", server.port) as proxy:
        spec = Backend("redis", redis_url=proxy.url, key_prefix=redis_prefix).spec(kis)
        started = time.perf_counter()
        stampede = _start_fleet(fleet, spec, linger=not mode.endswith("then-exit"))
        in_tokenp = _wait_mid_issuance(kis, stampede.leased)
        proxy.partition(hold=mode == "delayed-save")
        time.sleep(PARTITION_S)  # the partition's duration, not synchronisation
        healed_at = time.time()
        proxy.heal()
        outcomes = stampede.outcomes()
        wall = time.perf_counter() - started
    heal_to_all = _latest_after(outcomes, healed_at)
    egw = _egw00133(kis)
    figures = report(
        summarize(
            f"partition[{mode}]",
            "redis",
            outcomes,
            kis,
            clock,
            wall,
            egw00133=egw,
            heal_to_all_ms=round(heal_to_all * 1000),
            partition_s=PARTITION_S,
        )
    )

    _assert_common(figures, outcomes, in_tokenp)
    assert egw == 0, f"{egw} EGW00133 answers"
    assert heal_to_all <= HEAL_BOUND_S, f"the last caller held the token {heal_to_all:.2f}s after heal"


# -------------------------------------------------------------------- restart empty
@pytest.mark.timeout(120)
def test_redis_restarted_empty_mid_stampede(
    own_redis: Callable[..., RedisServer],
    redis_prefix: str,
    kis_factory: Callable[..., FakeKIS],
    issuance_clock: Callable[[FakeKIS], IssuanceClock],
    fleet: Fleet,
    report: Callable[[Figures], Figures],
) -> None:
    """SIGKILL while the holder is inside tokenP, an empty server on the same port 0.5 s later: the
    holder's fenced save lands on a store that lost its lease and fence."""
    kis = kis_factory(token_delay=RESTART_TOKENP_S)
    clock = issuance_clock(kis)
    server = own_redis()
    spec = Backend("redis", redis_url=server.url, key_prefix=redis_prefix).spec(kis)
    started = time.perf_counter()
    stampede = _start_fleet(fleet, spec)
    in_tokenp = _wait_mid_issuance(kis, stampede.leased)
    server.kill()
    time.sleep(DOWN_S)  # the outage's duration
    server.start()
    restarted_at = time.time()
    outcomes = stampede.outcomes()
    wall = time.perf_counter() - started
    figures = report(
        summarize(
            "redis-restart",
            "redis",
            outcomes,
            kis,
            clock,
            wall,
            egw00133=_egw00133(kis),
            after_restart_s=round(_latest_after(outcomes, restarted_at), 2),
        )
    )

    _assert_common(figures, outcomes, in_tokenp)


# ------------------------------------------------------------------ sentinel failover
@pytest.mark.timeout(150)
def test_sentinel_failover_mid_issuance(
    sentinel_cluster: SentinelCluster,
    redis_prefix: str,
    kis_factory: Callable[..., FakeKIS],
    issuance_clock: Callable[[FakeKIS], IssuanceClock],
    fleet: Fleet,
    report: Callable[[Figures], Figures],
) -> None:
    """The master is SIGKILLed while the holder is inside tokenP; callers use the recommended
    Sentinel client (see ``stress.workers.sentinel_master``) and ride out the election."""
    cluster = sentinel_cluster
    kis = kis_factory(token_delay=FAILOVER_TOKENP_S)
    clock = issuance_clock(kis)
    spec: dict[str, Any] = {
        "kind": "sentinel",
        "sentinels": [list(address) for address in cluster.sentinel_addresses],
        "service": cluster.service_name,
        "key_prefix": redis_prefix,
        "token_file": None,
        "redis_url": None,
        "options": {},
        "url": kis.url,
        "app_key": kis.app_key,
        "app_secret": kis.app_secret,
    }
    started = time.perf_counter()
    stampede = _start_fleet(fleet, spec)
    in_tokenp = _wait_mid_issuance(kis, stampede.leased)
    killed = cluster.kill_master()
    promoted = cluster.wait_for_promotion(30)
    promoted_at = time.time() - (time.monotonic() - promoted)
    outcomes = stampede.outcomes()
    wall = time.perf_counter() - started
    after_promotion = _latest_after(outcomes, promoted_at)
    figures = report(
        summarize(
            "sentinel-failover",
            "sentinel",
            outcomes,
            kis,
            clock,
            wall,
            egw00133=_egw00133(kis),
            election_s=round(promoted - killed, 2),
            after_promotion_s=round(after_promotion, 2),
        )
    )

    _assert_common(figures, outcomes, in_tokenp)
    assert after_promotion <= PROMOTION_BOUND_S, f"the last caller held a token {after_promotion:.2f}s after promotion"


# -------------------------------------------------------------------- eight accounts
@pytest.mark.timeout(120)
def test_eight_accounts_cold_on_one_file(
    tmp_path: Path, kis_factory: Callable[..., FakeKIS], fleet: Fleet, report: Callable[[Figures], Figures]
) -> None:
    """Eight app keys issue side by side through one token file: nobody queues behind another account.

    Bound on the slowest caller (barrier release to token held): two issuance times (2 x 0.3 s)
    plus 0.25 s of slack for 128 threads on 2 cores, client builds and the file's write lock.
    """
    kis = kis_factory(token_delay=ACCOUNT_TOKENP_S)
    accounts = [(kis.app_key, kis.app_secret)]
    for _ in range(ACCOUNTS - 1):
        key, secret = new_app_key(), new_app_secret()
        kis.add_app(key, secret)
        accounts.append((key, secret))
    spec = Backend("file", token_file=str(tmp_path / "kis" / "token.key")).spec(kis)
    ctx = fleet.context
    callers = ACCOUNT_PROCESSES * ACCOUNTS * PER_ACCOUNT
    barrier, queue = ctx.Barrier(callers), ctx.Queue()
    started = time.perf_counter()
    for _ in range(ACCOUNT_PROCESSES):
        fleet.start(accounts_process, spec, accounts, PER_ACCOUNT, barrier, queue)
    outcomes = fleet_outcomes(queue, ACCOUNT_PROCESSES, callers, HARNESS_TIMEOUT)
    wall = time.perf_counter() - started
    took = sorted(o.extra["token_s"] for o in outcomes if o.ok)
    slowest = took[-1] if took else float("nan")
    bound = 2 * ACCOUNT_TOKENP_S + ACCOUNT_SLACK_S
    figures = report(
        summarize(
            "eight-accounts",
            "file",
            outcomes,
            kis,
            None,  # the issuance clock follows one app key; per-caller times are in the notes
            wall,
            accounts=ACCOUNTS,
            egw00133=_egw00133(kis),
            p50_s=round(took[len(took) // 2], 3) if took else None,
            slowest_s=round(slowest, 3),
            bound_s=bound,
        )
    )

    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == ACCOUNTS, f"{figures.tokenp_requests} tokenP calls for {ACCOUNTS} accounts"
    per_account: dict[int, set[str | None]] = {}
    for o in outcomes:
        per_account.setdefault(o.extra.get("account", -1), set()).add(o.token)
    assert all(len(tokens) == 1 for tokens in per_account.values()), "an account's callers got different tokens"
    assert slowest <= bound, f"the slowest caller held its token after {slowest:.3f}s (bound {bound:.2f}s)"
