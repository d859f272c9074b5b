"""A token KIS issued is readable by the other processes of its host at once, whatever happens to Redis.

The issue's probe, for real: Redis behind a loopback proxy that drops every byte
(a partition), a leader process that gets its token from the fake KIS while
Redis is cut off, serves its threads and leaves through ``os._exit`` (as forked
workers do).  Before the host copy, the host's other processes then waited out
KIS's one-per-minute window.  Now they read the token the leader kept on the
host, and the first process to reach Redis after the partition saves it for
the fleet: one tokenP call in all, no ``EGW00133``.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from korea_investment_stock.token.redis import RedisKeys
from testsupport.faultproxy import FaultProxy

from .host_workers import host_callers, leader_then_hard_exit
from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401
from .redis_workers import HANG

pytestmark = pytest.mark.real_redis
CTX = multiprocessing.get_context("spawn")


def run(target: Any, env: dict[str, str], kwargs: dict[str, Any], threads: int, results: Any) -> Any:
    process = CTX.Process(target=target, args=(env, kwargs, threads, results))
    process.start()
    return process


def test_a_leader_that_exits_hard_during_a_partition_leaves_its_token_to_the_host(
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
    fake_kis_factory: Any,
    tmp_path: Path,
) -> None:
    kis = fake_kis_factory(token_delay=1.0)  # KIS's real 60 s window: a second issuance would wait it out
    upstream = urlparse(redis_url)
    proxy = FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 6379)
    kwargs = {
        "redis_url": proxy.redis_url(int(upstream.path.lstrip("/") or 0)),
        "prefix": redis_prefix,
        "kis_url": kis.url,
        "app_key": kis.app_key,
        "app_secret": kis.app_secret,
    }
    this_host = {"KOREA_INVESTMENT_TOKEN_FILE": str(tmp_path / "host-a" / "token.key")}
    other_host = {"KOREA_INVESTMENT_TOKEN_FILE": str(tmp_path / "host-b" / "token.key")}
    results = CTX.Queue()
    processes = []
    try:
        processes.append(run(leader_then_hard_exit, this_host, kwargs, 4, results))
        kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, HANG)  # the leader holds the lease, inside tokenP
        proxy.partition()  # Redis is cut off, bytes dropped, before the leader can save
        leader = results.get(timeout=HANG)
        processes[0].join(HANG)
        assert processes[0].exitcode == 0 and leader["errors"] == [] and len(set(leader["tokens"])) == 1
        token = leader["tokens"][0]

        # The host's other processes, while Redis is still cut off.
        for _ in range(3):
            processes.append(run(host_callers, this_host, kwargs, 8, results))
        others = [results.get(timeout=HANG * 2) for _ in range(3)]
        errors = [e for r in others for e in r["errors"]]
        waits = sorted(w for r in others for w in r["waits"])
        print(
            f"host-keeps-token: callers={len(waits)} tokenP={kis.stats.tokenp_requests} "
            f"EGW00133={kis.stats.tokenp_rejected.get('EGW00133', 0)} wait_s p50={waits[len(waits) // 2]:.2f} "
            f"max={waits[-1] if waits else float('nan'):.2f} errors={len(errors)}"
        )
        assert errors == [], errors[:3]
        assert {t for r in others for t in r["tokens"]} == {token}
        assert kis.stats.tokenp_requests == 1 and kis.stats.tokenp_rejected == {}
        assert waits[-1] < 20.0, f"a caller waited {waits[-1]:.1f}s: it waited on KIS, not on the host's copy"

        # Redis comes back: the first process to reach it saves the token for the fleet, so a
        # server on another host finds it there, with no tokenP call of its own.
        proxy.heal()
        deadline = time.monotonic() + 30.0
        stored = None
        admin = redis.Redis.from_url(redis_url, decode_responses=True)
        key = RedisKeys.for_api_key(redis_prefix, kis.app_key).token
        while stored is None and time.monotonic() < deadline:
            stored = admin.hget(key, "access_token")
            if stored is None:
                time.sleep(0.1)  # polling a key someone else writes: there is nothing to wait on
        assert stored == token, "nobody saved the host's token in Redis after the partition"
        processes.append(run(host_callers, other_host, kwargs, 4, results))
        elsewhere = results.get(timeout=HANG)
        assert elsewhere["errors"] == [] and set(elsewhere["tokens"]) == {token}
        assert kis.stats.tokenp_requests == 1
    finally:
        proxy.close()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
