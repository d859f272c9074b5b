"""Row 5 (issue 12): the per-second REST budget of one app key, ours against the designs people use.

Fleet floods: P processes x T threads quote flat out against a fresh fake KIS
that allows 20 accepted calls per app key in any sliding second and answers
``EGW00201`` above it.  Every flood is :func:`testsupport.flood.run_flood`, the
one harness the rate-limit tests and the stress suite use too, so the figures
are counted the same way: accepted calls and ``EGW00201`` answers are the fake
server's own counters over the window; per-process shares count only the calls
each process completed inside it.  The designs:

- ``ours file`` / ``ours Redis``: the token store's default limiter (GCRA, the
  processes take turns, 18.5/s = the nominal 20/s minus the 7.5 % safety margin);
- ``per-process 19/s``: a limiter of its own in each process (python-kis's design);
- ``sleep 50 ms``: no limiter, a fixed pause after every call (KIS's official samples);
- ``none (retries)``: no limiter; the client retries ``EGW00201`` with backoff (0.6.x).

The baselines run on the file token store; ``KOREA_INVESTMENT_RATE_LIMIT`` is
unset for every flood (the parent's and the children's environment), and each
Redis flood gets a fresh key prefix, so no budget carries over between rows.

Acquire overhead: ``acquire()`` with no contention (one thread, a rate so high
that no call ever waits, which is checked and reported), per backend, timed
with ``perf_counter_ns`` after a warm-up; for Redis also the replies the client
read per acquire (a ``redis.Connection`` that counts ``read_response``) and
the commands the server ran for it (``INFO commandstats``), in a separate
counted pass so counting adds nothing to the timings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from korea_investment_stock.testing import FakeKIS

from .stats import summarize_us
from .targets import target_row

#: (label, FloodConfig fields) for each design row.
FLEET_DESIGNS: list[tuple[str, dict[str, Any]]] = [
    ("ours file", {"design": "ours", "storage": "file"}),
    ("ours Redis", {"design": "ours", "storage": "redis"}),
    ("per-process 19/s", {"design": "per-process", "storage": "file", "per_process_rate": 19.0}),
    ("sleep 50 ms", {"design": "sleep", "storage": "file", "sleep_per_call": 0.05}),
    ("none (retries)", {"design": "none", "storage": "file"}),
]
OURS = ("ours file", "ours Redis")
BASELINES = tuple(label for label, _ in FLEET_DESIGNS if label not in OURS)
#: The fake KIS's budget per app key, as KIS has it for a real account.
NOMINAL_RATE = 20

# Targets of issue 12.
TARGET_SIZE = "8x16"
BUDGET_USED_MIN = 0.90
SHARE_DEVIATION_MAX = 0.20
FILE_P99_MAX_US = 100.0
REDIS_P99_MAX_US = 1000.0
REDIS_ROUND_TRIPS = 1.0

#: Calls per second the acquire-overhead limiters allow: no call ever waits for a slot.
UNLIMITED_RATE = 1e9
ACQUIRE_KEY = "bench-key"
ACQUIRE_WARMUP = 200
COUNTED_ACQUIRES = 200


# --------------------------------------------------------------------------- fleet floods
@contextlib.contextmanager
def _rate_limit_unset() -> Iterator[str | None]:
    """``KOREA_INVESTMENT_RATE_LIMIT`` removed from this process's environment (spawned children inherit it)."""
    from korea_investment_stock.limits import ENV_RATE_LIMIT

    saved = os.environ.pop(ENV_RATE_LIMIT, None)
    try:
        yield saved
    finally:
        if saved is not None:
            os.environ[ENV_RATE_LIMIT] = saved


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def _call_latency(result: Any) -> dict[str, float]:
    from korea_investment_stock.testing import percentile

    calls = [ms for report in result.reports for ms in report.call_ms]
    if not calls:
        return {"call_p50_ms": float("nan"), "call_p99_ms": float("nan"), "call_max_ms": float("nan")}
    return {
        "call_p50_ms": round(percentile(calls, 0.50), 1),
        "call_p99_ms": round(percentile(calls, 0.99), 1),
        "call_max_ms": round(max(calls), 1),
    }


def run_fleet_rows(
    sizes: list[tuple[int, int]],
    seconds: float,
    redis_url: str | None,
    workdir: Path,
    *,
    designs: list[str] | None = None,
    baseline_sizes: list[tuple[int, int]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One flood per size and design row, each on a fresh fake KIS; a dict of figures per row.

    ``designs`` limits the rows (labels of :data:`FLEET_DESIGNS`); ``baseline_sizes``
    (default: every size) limits the sizes the baselines run at.  A Redis row is
    skipped when ``redis_url`` is None; a flood that fails is a row with ``error``.
    """
    from testsupport.flood import FloodConfig, run_flood, summary_fields

    wanted = [(label, fields) for label, fields in FLEET_DESIGNS if designs is None or label in designs]
    rows: list[dict[str, Any]] = []
    with _rate_limit_unset():
        for processes, threads in sizes:
            size = f"{processes}x{threads}"
            for label, fields in wanted:
                if label in BASELINES and baseline_sizes is not None and (processes, threads) not in baseline_sizes:
                    continue
                if fields["storage"] == "redis" and not redis_url:
                    continue
                if progress:
                    progress(f"ratelimit flood {size} {label} ({seconds:g} s window)")
                directory = workdir / f"{size}-{_slug(label)}"
                directory.mkdir(parents=True, exist_ok=True)
                began = time.monotonic()
                row: dict[str, Any] = {"label": label, "size": size, "processes": processes, "threads": threads}
                try:
                    with FakeKIS(rest_rate_limit=NOMINAL_RATE) as kis:
                        config = FloodConfig(
                            url=kis.url,
                            app_key=kis.app_key,
                            app_secret=kis.app_secret,
                            token_file="",  # run_flood gives each group its own
                            redis_url=redis_url if fields["storage"] == "redis" else None,
                            key_prefix=f"kis-bench:{uuid.uuid4().hex}",
                            threads=threads,
                            rate_limit=None,
                            **fields,
                        )
                        result = run_flood(kis, config, processes, seconds, workdir=directory)
                    row.update(summary_fields(result))
                    row.update(_call_latency(result))
                    row["missing_processes"] = result.missing_processes
                    row["per_process"] = [
                        {
                            "pid": r.pid,
                            "ok_in_window": r.ok_in_window,
                            "ok_total": r.ok_total,
                            "rate_limited": r.rate_limited,
                            "other_errors": r.other_errors,
                        }
                        for r in result.reports
                    ]
                    row["nominal_rate"] = result.nominal_rate
                    row["line"] = result.line(label)
                except Exception as exc:  # one broken flood must not lose the other rows
                    row["error"] = f"{type(exc).__name__}: {exc}"
                row["wall_s"] = round(time.monotonic() - began, 2)
                rows.append(row)
    return rows


# --------------------------------------------------------------------------- acquire overhead
def _time_acquires(limiter: Any, samples: int, warmup: int) -> tuple[list[float], int]:
    """(µs per acquire, how many of them waited for a slot)."""
    acquire = limiter.acquire
    for _ in range(warmup):
        acquire(ACQUIRE_KEY, "real", timeout=5)
    clock = time.perf_counter_ns
    times: list[float] = []
    waited = 0
    for _ in range(samples):
        started = clock()
        wait = acquire(ACQUIRE_KEY, "real", timeout=5)
        times.append((clock() - started) / 1000.0)
        if wait > 0:
            waited += 1
    return times, waited


def _row(backend: str, limiter: Any, times: list[float], waited: int) -> dict[str, Any]:
    return {
        "backend": backend,
        "limiter": type(limiter).__name__,
        "rate": UNLIMITED_RATE,
        "waited": waited,
        **summarize_us(times),
        "raw_us": [round(t, 1) for t in times],
    }


def _redis_round_trips(redis_url: str, key_prefix: str) -> dict[str, Any]:
    """Replies read per acquire (client side) and commands run per acquire (server side)."""
    import redis

    from korea_investment_stock.limits.redis import RedisRateLimiter

    from .env import CommandCounter

    replies = [0]

    class CountingConnection(redis.Connection):
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            replies[0] += 1
            return super().read_response(*args, **kwargs)

    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    counter = CommandCounter(redis_url)
    try:
        limiter = RedisRateLimiter(client, key_prefix=key_prefix, rate=UNLIMITED_RATE)
        limiter.acquire(ACQUIRE_KEY, "real", timeout=5)  # connects, loads the script (EVALSHA falls back once)
        before = counter.snapshot()
        replies[0] = 0
        for _ in range(COUNTED_ACQUIRES):
            limiter.acquire(ACQUIRE_KEY, "real", timeout=5)
        read = replies[0]
        _total, per = CommandCounter.delta(before, counter.snapshot())
    finally:
        counter.close()
        client.close()
        pool.disconnect()
    return {
        "round_trips": round(read / COUNTED_ACQUIRES, 3),
        "server_commands_per_acquire": {name: round(n / COUNTED_ACQUIRES, 2) for name, n in sorted(per.items())},
    }


def measure_acquire_overhead(redis_url: str | None, samples: int) -> list[dict[str, Any]]:
    """``acquire()`` with no contention, per backend: p50/p99/max µs (and round trips for Redis)."""
    from korea_investment_stock.limits import FileRateLimiter, ProcessRateLimiter

    rows: list[dict[str, Any]] = []
    with _rate_limit_unset():
        process = ProcessRateLimiter(UNLIMITED_RATE)
        rows.append(_row("process", process, *_time_acquires(process, samples, ACQUIRE_WARMUP)))

        with tempfile.TemporaryDirectory(prefix="kis-bench-limit-") as directory:
            limiter = FileRateLimiter(directory, UNLIMITED_RATE)
            try:
                row = _row("file", limiter, *_time_acquires(limiter, samples, ACQUIRE_WARMUP))
            finally:
                limiter.close()
            row["falling_back"] = limiter.falling_back
            rows.append(row)

        if redis_url:
            import redis

            from korea_investment_stock.limits.redis import RedisRateLimiter

            prefix = f"kis-bench:{uuid.uuid4().hex}"
            client = redis.Redis.from_url(redis_url)
            try:
                redis_limiter = RedisRateLimiter(client, key_prefix=prefix, rate=UNLIMITED_RATE)
                row = _row("redis", redis_limiter, *_time_acquires(redis_limiter, samples, ACQUIRE_WARMUP))
                row["falling_back"] = redis_limiter.falling_back
            finally:
                client.close()
            row.update(_redis_round_trips(redis_url, f"{prefix}:counted"))
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- targets
def _target(name: str, wanted: str, measured: str, ok: bool | None) -> dict[str, Any]:
    return target_row(name, wanted, measured, ok, labels=("met", "MISSED"))


def fleet_checks(row: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, wanted, measured, ok) for one of our fleet rows: the four fleet targets of issue 12."""
    if "error" in row:
        return [("flood", "runs", row["error"], False)]
    return [
        ("EGW00201", "0", str(row["egw00201"]), row["egw00201"] == 0),
        ("caller errors", "0", str(row["caller_errors"]), row["caller_errors"] == 0),
        (
            "budget used",
            f">= {BUDGET_USED_MIN * 100:.0f}%",
            f"{row['budget_used'] * 100:.1f}%",
            row["budget_used"] >= BUDGET_USED_MIN,
        ),
        (
            "worst share deviation",
            f"<= {SHARE_DEVIATION_MAX * 100:.0f}%",
            f"{row['worst_share_deviation'] * 100:.0f}%",
            row["worst_share_deviation"] <= SHARE_DEVIATION_MAX,
        ),
    ]


def verdict(row: dict[str, Any]) -> str:
    """The table's target column for a fleet row: met, MISSED (which), or '-' where no target applies."""
    if row["label"] not in OURS or row["size"] != TARGET_SIZE:
        return "-"
    missed = [f"{what} {measured}" for what, _wanted, measured, ok in fleet_checks(row) if not ok]
    return "met" if not missed else "MISSED: " + ", ".join(missed)


def acquire_verdict(row: dict[str, Any]) -> str:
    if row["backend"] == "file":
        return "met" if row["p99_us"] <= FILE_P99_MAX_US else f"MISSED: p99 > {FILE_P99_MAX_US:.0f} us"
    if row["backend"] == "redis":
        missed = []
        if row.get("round_trips") != REDIS_ROUND_TRIPS:
            missed.append(f"{row.get('round_trips')} round trips")
        if row["p99_us"] > REDIS_P99_MAX_US:
            missed.append(f"p99 > {REDIS_P99_MAX_US:.0f} us")
        return "met" if not missed else "MISSED: " + ", ".join(missed)
    return "-"


def evaluate_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    fleet = section.get("fleet") or []
    for label in OURS:
        row = next((r for r in fleet if r["label"] == label and r["size"] == TARGET_SIZE), None)
        name = f"fleet {TARGET_SIZE} {label}"
        if row is None:
            for what, wanted in (
                ("EGW00201", "0"),
                ("caller errors", "0"),
                ("budget used", f">= {BUDGET_USED_MIN * 100:.0f}%"),
                ("worst share deviation", f"<= {SHARE_DEVIATION_MAX * 100:.0f}%"),
            ):
                out.append(_target(f"{name}: {what}", wanted, "-", None))
            continue
        for what, wanted, measured, ok in fleet_checks(row):
            out.append(_target(f"{name}: {what}", wanted, measured, ok))
    acquire = {r["backend"]: r for r in section.get("acquire") or []}
    file_row = acquire.get("file")
    out.append(
        _target(
            "acquire, no contention: file p99",
            f"<= {FILE_P99_MAX_US:.0f} us",
            f"{file_row['p99_us']:.1f} us" if file_row else "-",
            file_row["p99_us"] <= FILE_P99_MAX_US if file_row else None,
        )
    )
    redis_row = acquire.get("redis")
    out.append(
        _target(
            "acquire, no contention: Redis round trips",
            f"{REDIS_ROUND_TRIPS:g}",
            f"{redis_row['round_trips']:g}" if redis_row else "-",
            redis_row["round_trips"] == REDIS_ROUND_TRIPS if redis_row else None,
        )
    )
    out.append(
        _target(
            "acquire, no contention: Redis p99 (loopback)",
            f"<= {REDIS_P99_MAX_US:.0f} us",
            f"{redis_row['p99_us']:.1f} us" if redis_row else "-",
            redis_row["p99_us"] <= REDIS_P99_MAX_US if redis_row else None,
        )
    )
    return out
