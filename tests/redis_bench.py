"""Measure the Redis stores on a private real redis-server: ``python -m tests.redis_bench [--json]``.

Reports what the Redis issue asks for:

- round trips per ``load_token`` (``INFO commandstats`` delta over the calls);
- median and p99 ``load_token`` time over ``--calls`` calls;
- for ``--processes`` x ``--threads`` cold callers: tokenP calls (counted by
  the fake KIS server), each caller's wait after the token was stored
  (p50/p95/max, against the moment the "ready" message reached a listener
  here), and Redis commands processed (``INFO stats`` delta, our own
  measuring commands subtracted), with a per-command breakdown.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from typing import Any

import redis

from korea_investment_stock.testing import FakeKIS, percentile
from korea_investment_stock.token.redis import LockingRedisTokenStorage, RedisKeys

from .redis_fixtures import start_redis
from .redis_workers import API_KEY, API_SECRET, HANG, make_record, stampede_worker

#: What the stores send outside scripts (the rest of INFO's count runs inside Lua).
CLIENT_COMMANDS = (
    "hgetall",
    "evalsha",
    "eval",
    "script|load",
    "subscribe",
    "unsubscribe",
    "ping",
    "hello",
    "auth",
    "select",
    "client|setinfo",
)


def commandstats(admin: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in admin.info("commandstats").items()}


def total_commands(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_commands_processed"])


def measure_reads(url: str, calls: int) -> dict[str, Any]:
    storage = LockingRedisTokenStorage(url, key_prefix=f"bench:{uuid.uuid4().hex[:8]}")
    storage.save_token(make_record().to_legacy_dict(API_SECRET))
    storage.load_token(API_KEY, API_SECRET)  # warm the connection
    admin = redis.Redis.from_url(url, decode_responses=True)
    before = commandstats(admin)
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        storage.load_token(API_KEY, API_SECRET)
        durations.append((time.perf_counter() - started) * 1000)
    after = commandstats(admin)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    commands = sum(v for k, v in delta.items() if k != "info")
    return {
        "calls": calls,
        "round_trips_per_load_token": commands / calls,
        "commands": {k: v for k, v in delta.items() if v and k != "info"},
        "load_token_ms_median": statistics.median(durations),
        "load_token_ms_p99": percentile(durations, 0.99),
    }


def measure_stampede(url: str, processes_n: int, threads_n: int, token_delay: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(url, decode_responses=True)
    with FakeKIS(rest_rate_limit=None, token_delay=token_delay) as kis:
        channel = RedisKeys.for_api_key(prefix, kis.app_key).channel
        listener = admin.pubsub()
        listener.subscribe(channel)
        listener.get_message(timeout=5)  # the confirmation
        stored_at: list[float] = []

        def listen() -> None:
            message = listener.get_message(timeout=HANG)
            while message is not None and message["type"] != "message":
                message = listener.get_message(timeout=HANG)
            stored_at.append(time.time())

        watcher = threading.Thread(target=listen, daemon=True)
        watcher.start()
        barrier = ctx.Barrier(processes_n * threads_n)
        results = ctx.Queue()
        kwargs = {
            "redis_url": url,
            "prefix": prefix,
            "threads": threads_n,
            "kis_url": kis.url,
            "app_key": kis.app_key,
            "app_secret": kis.app_secret,
        }
        before_stats, before_total = commandstats(admin), total_commands(admin)
        processes = [ctx.Process(target=stampede_worker, args=(kwargs, barrier, results)) for _ in range(processes_n)]
        for process in processes:
            process.start()
        reports = [results.get(timeout=HANG) for _ in processes]
        for process in processes:
            process.join(HANG)
        watcher.join(HANG)
        after_total, after_stats = total_commands(admin), commandstats(admin)
        tokenp = kis.stats.tokenp_requests
        listener.close()
    # An INFO reply counts the commands before it, not itself: the first total's own INFO is ours.
    commands = after_total - before_total - 1
    breakdown = {k: after_stats.get(k, 0) - before_stats.get(k, 0) for k in after_stats if k != "info"}
    # INFO counts commands run inside our Lua scripts too; these are the ones clients send themselves.
    round_trips = sum(breakdown.get(k, 0) for k in CLIENT_COMMANDS)
    # Time each caller spent after the token was in Redis (a caller released late by the
    # barrier starts its clock at its own start).
    waits = [max(0.0, (f - max(s, stored_at[0])) * 1000) for r in reports for s, f in zip(r["started"], r["finished"])]
    late_starts = sum(s > stored_at[0] for r in reports for s in r["started"])
    return {
        "processes": processes_n,
        "token_delay_s": token_delay,
        "threads": threads_n,
        "tokenp_calls": tokenp,
        "errors": [e for r in reports for e in r["errors"]],
        "distinct_tokens": len({t for r in reports for t in r["tokens"]}),
        "wait_after_stored_ms_p50": percentile(waits, 0.50),
        "wait_after_stored_ms_p95": percentile(waits, 0.95),
        "wait_after_stored_ms_max": max(waits),
        "callers_started_after_store": late_starts,
        "redis_commands": commands,
        "redis_commands_per_process": round(commands / processes_n, 1),
        "client_round_trips": round_trips,
        "client_round_trips_per_process": round(round_trips / processes_n, 1),
        "redis_commands_by_name": {k: v for k, v in sorted(breakdown.items()) if v > 0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--token-delay", type=float, default=0.2, help="fake tokenP latency, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    server = start_redis()
    try:
        report = {
            "redis_server": server.url,
            "reads": measure_reads(server.url, args.calls),
            "stampede": measure_stampede(server.url, args.processes, args.threads, args.token_delay),
        }
    finally:
        server.stop()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    reads, stampede = report["reads"], report["stampede"]
    print(
        f"load_token x{reads['calls']}: {reads['round_trips_per_load_token']:.2f} round trips each "
        f"{reads['commands']}; median {reads['load_token_ms_median']:.3f} ms, p99 {reads['load_token_ms_p99']:.3f} ms"
    )
    print(
        f"stampede {stampede['processes']}x{stampede['threads']} (tokenP takes {stampede['token_delay_s']}s): "
        f"tokenP calls {stampede['tokenp_calls']}, "
        f"errors {len(stampede['errors'])}, distinct tokens {stampede['distinct_tokens']}"
    )
    print(
        f"  wait after the token was stored: p50 {stampede['wait_after_stored_ms_p50']:.2f} ms, "
        f"p95 {stampede['wait_after_stored_ms_p95']:.2f} ms, max {stampede['wait_after_stored_ms_max']:.2f} ms "
        f"({stampede['callers_started_after_store']} callers started after the store)"
    )
    print(
        f"  Redis commands processed: {stampede['redis_commands']} "
        f"({stampede['redis_commands_per_process']} per process, counting commands run inside Lua scripts)"
    )
    print(
        f"  client round trips: {stampede['client_round_trips']} "
        f"({stampede['client_round_trips_per_process']} per process; the rest of INFO's count ran inside Lua scripts)"
    )
    print(f"  by command: {stampede['redis_commands_by_name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
