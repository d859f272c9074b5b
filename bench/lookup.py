"""Rows 1 and 2: a stored-token lookup, and ``KoreaInvestment()`` with a valid stored token.

Both run in the bench's own process against a token stored beforehand.
Latency comes from a timed pass (``perf_counter_ns`` around each call); the
cost in round trips comes from a separate counted pass, so counting adds
nothing to the timings:

- Redis: ``INFO stats`` delta on the bench's private server, per call;
- file: ``open`` calls (``os.open`` and ``io.open``), per call.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from korea_investment_stock.token.record import TokenRecord, format_kst

from .naive import NaiveFileTokenStorage, NaiveRedisTokenStorage
from .stats import summarize_us

API_KEY = "PSlookuplookuplookuplookuplookup0001"
API_SECRET = "lookup-secret-" + "q" * 166
COUNTED_CALLS = 200


def _record() -> TokenRecord:
    now = time.time()
    body = {
        "access_token": f"eyJ.lookup-{uuid.uuid4().hex}.sig",
        "access_token_token_expired": format_kst(now + 86400),
        "token_type": "Bearer",
        "expires_in": 86400,
    }
    return TokenRecord.from_issue_response(body, API_KEY, API_SECRET, now=now)


def _never_issue() -> TokenRecord:
    raise AssertionError("the lookup bench found no stored token: issue() must not be called")


@contextlib.contextmanager
def count_opens() -> Iterator[list[int]]:
    """Count files opened (``os.open``, ``io.open`` of a path) while the block runs: file round trips."""
    counter = [0]
    real_os_open, real_io_open = os.open, io.open

    def os_open(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return real_os_open(*args, **kwargs)

    def io_open(*args: Any, **kwargs: Any) -> Any:
        if args and not isinstance(args[0], int):  # io.open(fd) (os.fdopen) opens nothing new
            counter[0] += 1
        return real_io_open(*args, **kwargs)

    os.open, io.open = os_open, io_open  # type: ignore[assignment]
    try:
        yield counter
    finally:
        os.open, io.open = real_os_open, real_io_open  # type: ignore[assignment]


def _time_calls(call: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        started = clock()
        call()
        samples.append((clock() - started) / 1000.0)
    return samples


def _measure(
    impl: str, backend: str, op: str, call: Callable[[], Any], iterations: int, redis_url: str | None
) -> dict[str, Any]:
    from .env import CommandCounter

    samples = _time_calls(call, iterations, warmup=max(50, iterations // 20))
    if backend == "redis":
        assert redis_url is not None
        counter = CommandCounter(redis_url)
        before = counter.snapshot()
        for _ in range(COUNTED_CALLS):
            call()
        total, per = CommandCounter.delta(before, counter.snapshot())
        counter.close()
        trips = total / COUNTED_CALLS
        detail = {name: round(calls / COUNTED_CALLS, 2) for name, calls in sorted(per.items())}
    else:
        with count_opens() as opened:
            for _ in range(COUNTED_CALLS):
                call()
        trips = opened[0] / COUNTED_CALLS
        detail = {"open": trips}
    return {
        "impl": impl,
        "backend": backend,
        "op": op,
        "round_trips": round(trips, 2),
        "round_trip_detail": detail,
        **summarize_us(samples),
    }


def _ops(storage: Any, ours: bool) -> list[tuple[str, Callable[[], Any]]]:
    def check_and_load() -> Any:
        if not storage.check_token_valid(API_KEY, API_SECRET):
            raise AssertionError("stored token not valid")
        return storage.load_token(API_KEY, API_SECRET)

    ops: list[tuple[str, Callable[[], Any]]] = [("check_token_valid + load_token", check_and_load)]
    if ours:
        ops.append(("get_token (fast path)", lambda: storage.get_token(API_KEY, API_SECRET, _never_issue)))
    return ops


def bench_lookups(redis_url: str | None, iterations: int) -> list[dict[str, Any]]:
    """Naive vs ours on each backend; one token stored before timing starts."""
    from korea_investment_stock.token.file import FileTokenStorage

    rows: list[dict[str, Any]] = []
    record = _record()
    with tempfile.TemporaryDirectory(prefix="kis-bench-lookup-") as workdir:
        naive_file = NaiveFileTokenStorage(os.path.join(workdir, "naive.key"))
        ours_file = FileTokenStorage(os.path.join(workdir, "ours.key"))
        for impl, storage, ours in (("naive 0.6.x", naive_file, False), ("ours", ours_file, True)):
            storage.save_token(record.to_legacy_dict(API_SECRET))
            for op, call in _ops(storage, ours):
                rows.append(_measure(impl, "file", op, call, iterations, None))
    if redis_url:
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        prefix = f"kis-bench-lookup:{uuid.uuid4().hex[:12]}"
        naive_redis = NaiveRedisTokenStorage(redis_url, key_prefix=f"{prefix}:naive")
        ours_redis = LockingRedisTokenStorage(redis_url, key_prefix=f"{prefix}:ours")
        try:
            for impl, storage, ours in (("naive 0.6.x", naive_redis, False), ("ours", ours_redis, True)):
                storage.save_token(record.to_legacy_dict(API_SECRET))
                for op, call in _ops(storage, ours):
                    rows.append(_measure(impl, "redis", op, call, iterations, redis_url))
        finally:
            naive_redis.close()
            close = getattr(ours_redis, "close", None)
            if callable(close):
                close()
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """naive ÷ ours for the same backend and operation (higher is better for ours)."""
    naive = {(r["backend"], r["op"]): r for r in rows if r["impl"].startswith("naive")}
    for row in rows:
        base = naive.get((row["backend"], "check_token_valid + load_token"))
        if base is None or row is base:
            continue
        row["naive_over_ours"] = {
            "p50": round(base["p50_us"] / max(row["p50_us"], 0.01), 2),
            "p99": round(base["p99_us"] / max(row["p99_us"], 0.01), 2),
            "round_trips": round(base["round_trips"] / max(row["round_trips"], 0.01), 2),
        }


def bench_construction(redis_url: str | None, iterations: int) -> list[dict[str, Any]]:
    """``KoreaInvestment()`` against a fake KIS on loopback, with a valid token already stored.

    One store instance is shared by every construction (a long-lived process
    making clients); the first construction issues the token, the timed ones
    must not call tokenP at all.
    """
    from korea_investment_stock import KoreaInvestment
    from korea_investment_stock.testing import FakeKIS
    from korea_investment_stock.testing.state import new_app_key, new_app_secret
    from korea_investment_stock.token.file import FileTokenStorage

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kis-bench-ctor-") as workdir, FakeKIS(rest_rate_limit=None) as kis:
        stores: list[tuple[str, Any]] = [("file", FileTokenStorage(os.path.join(workdir, "token.key")))]
        if redis_url:
            from korea_investment_stock.token.redis import LockingRedisTokenStorage

            prefix = f"kis-bench-ctor:{uuid.uuid4().hex[:12]}"
            stores.append(("redis", LockingRedisTokenStorage(redis_url, key_prefix=prefix)))
        for backend, storage in stores:
            # An app key per store: a second issuance for one key within a minute would
            # get EGW00133 and sit in the library's back-off instead of being measured.
            app_key, app_secret = new_app_key(), new_app_secret()
            kis.add_app(app_key, app_secret)

            def construct() -> None:
                client = KoreaInvestment(app_key, app_secret, "12345678-01", token_storage=storage, base_url=kis.url)
                client.shutdown()

            construct()  # issues and stores the token
            issued_before = kis.stats.tokenp_requests
            samples = _time_calls(construct, iterations, warmup=max(20, iterations // 20))
            tokenp_during = kis.stats.tokenp_requests - issued_before
            rows.append({"backend": backend, "tokenp_calls_while_timed": tokenp_during, **summarize_us(samples)})
            close = getattr(storage, "close", None)
            if callable(close):
                close()
    return rows
