"""Many processes, one real Redis, one fake KIS: the fleet issues once, survives a killed holder.

Processes are spawned (a clean interpreter each, as separate servers would
be), build their own stores, meet at a barrier, then call ``get_token`` from
many threads at once.  Counts come from the fake KIS server itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from korea_investment_stock.token.record import key_id

from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401
from .redis_workers import HANG, env_worker, stampede_worker

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

CTX = multiprocessing.get_context("spawn")


def kis_kwargs(kis) -> dict:
    return {"kis_url": kis.url, "app_key": kis.app_key, "app_secret": kis.app_secret}


def collect(results, count: int) -> list[dict]:
    return [results.get(timeout=HANG) for _ in range(count)]


def reap(processes) -> None:
    for process in processes:
        process.join(HANG)
        if process.is_alive():
            process.kill()
            process.join(5)


def start_stampede(kwargs: dict, processes_n: int) -> tuple[list, object, object]:
    """``processes_n`` stampede workers of ``kwargs["threads"]`` threads each, all behind one barrier.

    Returns the processes, the results queue and the barrier: the caller must keep the barrier
    referenced until the workers are done (a started spawn process drops its arguments, and a
    collected barrier's semaphores are gone before the children can open them).
    """
    barrier = CTX.Barrier(processes_n * kwargs["threads"])
    results = CTX.Queue()
    processes = [CTX.Process(target=stampede_worker, args=(kwargs, barrier, results)) for _ in range(processes_n)]
    for process in processes:
        process.start()
    return processes, results, barrier


def stampede(kwargs: dict, processes_n: int) -> list[dict]:
    """Run a stampede to the end; every worker's report."""
    processes, results, barrier = start_stampede(kwargs, processes_n)
    try:
        return collect(results, processes_n)
    finally:
        reap(processes)


def test_8_processes_x_25_threads_cold_issue_exactly_once(redis_url, redis_prefix, fake_kis_factory):  # noqa: F811
    kis = fake_kis_factory(token_delay=0.2)
    processes_n, threads_n = 8, 25
    kwargs = {"redis_url": redis_url, "prefix": redis_prefix, "threads": threads_n, **kis_kwargs(kis)}
    reports = stampede(kwargs, processes_n)
    errors = [e for r in reports for e in r["errors"]]
    tokens = [t for r in reports for t in r["tokens"]]
    assert errors == []
    assert len(tokens) == processes_n * threads_n
    assert len(set(tokens)) == 1
    assert kis.stats.tokenp_requests == 1
    assert kis.issued_tokens() == [tokens[0]]


def test_two_servers_sharing_only_redis_issue_once(redis_url, tmp_path, fake_kis_factory):  # noqa: F811
    """Two groups of processes, separate token-file directories, configured only by environment."""
    kis = fake_kis_factory(token_delay=0.2)
    groups, per_group, threads_n = 2, 2, 8
    barrier = CTX.Barrier(groups * per_group * threads_n)
    results = CTX.Queue()
    processes = []
    for group in range(groups):
        env = {
            "KOREA_INVESTMENT_TOKEN_STORAGE": "redis",
            "KOREA_INVESTMENT_REDIS_URL": redis_url,
            "KOREA_INVESTMENT_TOKEN_FILE": str(tmp_path / f"server-{group}" / "token.key"),
        }
        for _ in range(per_group):
            kwargs = {"threads": threads_n, **kis_kwargs(kis)}
            processes.append(CTX.Process(target=env_worker, args=(env, kwargs, barrier, results)))
    for process in processes:
        process.start()
    try:
        reports = collect(results, len(processes))
    finally:
        reap(processes)
        client = redis.Redis.from_url(redis_url)  # the default prefix: remove this app key's names
        client.delete(*client.scan_iter(match=f"korea_investment:token:{{{key_id(kis.app_key)}}}*"), "-")
    assert [e for r in reports for e in r["errors"]] == []
    assert {r["storage"] for r in reports} == {"LockingRedisTokenStorage"}
    tokens = {t for r in reports for t in r["tokens"]}
    assert len(tokens) == 1
    assert kis.stats.tokenp_requests == 1
    assert not any(Path(tmp_path / f"server-{g}" / "token.key").exists() for g in range(groups))


def test_sigkill_of_the_lease_holder_mid_issuance(redis_url, redis_prefix, fake_kis_factory):  # noqa: F811
    """Kill the process holding the lease while its tokenP call hangs; the rest converge within a lease."""
    lease = 3.0
    kis = fake_kis_factory(token_delay=3.0, issue_window=0)
    processes_n, threads_n = 4, 4
    kwargs = {
        "redis_url": redis_url,
        "prefix": redis_prefix,
        "threads": threads_n,
        "storage": {"lease_seconds": lease},
        **kis_kwargs(kis),
    }
    processes, results, barrier = start_stampede(kwargs, processes_n)
    try:
        kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, 60)  # the holder is inside tokenP now
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        lock_key = f"{redis_prefix}:{{{key_id(kis.app_key)}}}:lock"
        owner = client.get(lock_key)
        assert owner is not None
        holder = int(owner.split(":")[-2])
        assert holder in {p.pid for p in processes}
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        kis.configure(token_delay=0.0)  # the next leader's call is quick
        reports = collect(results, processes_n - 1)
        converged = time.monotonic() - killed_at
    finally:
        reap(processes)
    assert holder not in {r["pid"] for r in reports}
    assert [e for r in reports for e in r["errors"]] == []
    tokens = [t for r in reports for t in r["tokens"]]
    assert len(tokens) == (processes_n - 1) * threads_n and len(set(tokens)) == 1
    assert kis.stats.tokenp_success <= 2
    assert lease / 2 <= converged <= lease + 3.0, f"took {converged:.1f}s after the kill"


def test_a_failed_issuance_fails_its_process_and_the_others_retry_once_after_the_backoff(
    redis_url,  # noqa: F811
    redis_prefix,  # noqa: F811
    fake_kis_factory,
):
    """KIS's 500 is the leader's process's answer; other servers wait out the marker, then share one try.

    (Before issue 16, point 15, every server failed with the leader: a failure that was not theirs.)
    """
    kis = fake_kis_factory()
    kis.set_token_fault("http500", delay=1.5)
    processes_n, threads_n = 3, 3
    kwargs = {"redis_url": redis_url, "prefix": redis_prefix, "threads": threads_n, **kis_kwargs(kis)}
    reports = stampede(kwargs, processes_n)
    errors = [e for r in reports for e in r["errors"]]
    tokens = [t for r in reports for t in r["tokens"]]
    assert len(errors) == threads_n and all(e.startswith("TokenIssueError") for e in errors), errors
    assert len(tokens) == (processes_n - 1) * threads_n and len(set(tokens)) == 1
    assert kis.stats.tokenp_requests == 2, "one failed call, then one for every other server: no stampede"
