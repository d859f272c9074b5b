"""The stampede demo: many processes and threads start at once against a fake KIS.

It shows the library's promise on one machine with no setup: P processes x T
threads, released by one barrier, each build a ``KoreaInvestment`` and make a
quotation call; the fake server counts how many tokens were really issued.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..testing import FakeKIS, percentile
from ..token.redis_connect import DEFAULT_REDIS_URL, ENV_REDIS_URL

ACCOUNT = "12345678-01"
SYMBOL = "005930"
#: Upper bound for the whole demo; workers that pass it report an error.
WORKER_TIMEOUT = 120.0


#: The wait figures the demo prints, by nearest rank.
_WAIT_QUANTILES = (("p50", 0.50), ("p95", 0.95), ("max", 1.0))


def _or_zero(value: float) -> float:
    """No callers measured (all failed): print 0, the errors line says why."""
    return 0.0 if math.isnan(value) else value


@dataclass
class DemoResult:
    """What the demo measured; ``waits_ms`` are per-caller times to obtain a token."""

    storage: str
    processes: int
    threads: int
    callers: int
    tokenp_calls: int
    tokens_issued: int
    errors: int
    distinct_tokens: int
    waits_ms: list[float] = field(repr=False)
    wall_s: float
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no raw per-caller list)."""
        data = asdict(self)
        del data["waits_ms"]
        data["wait_ms"] = {name: round(_or_zero(percentile(self.waits_ms, q)), 2) for name, q in _WAIT_QUANTILES}
        return data


def _caller(
    barrier: Barrier, results: list[tuple[str, float, str]], config: dict[str, Any], make_storage: Callable[[], Any]
) -> None:
    from ..client import KoreaInvestment

    try:
        storage = make_storage()  # as an application would at start-up, before the stampede
        barrier.wait(WORKER_TIMEOUT)
        started = time.perf_counter()
        client = KoreaInvestment(
            config["app_key"],
            config["app_secret"],
            ACCOUNT,
            token_storage=storage,
            base_url=config["url"],
        )
        waited = (time.perf_counter() - started) * 1000.0
        with client:
            answer = client.fetch_domestic_price("J", SYMBOL)
        if answer.get("rt_cd") != "0":
            raise RuntimeError(f"quotation failed: {answer.get('msg_cd')} {answer.get('msg1')}")
        results.append(("ok", waited, client.access_token or ""))
    except Exception as exc:
        results.append(("error", 0.0, f"{type(exc).__name__}: {exc}"))


def _storage_factory(config: dict[str, Any]) -> Callable[[], Any]:
    if config["storage"] == "redis":
        from ..token.redis import LockingRedisTokenStorage

        return lambda: LockingRedisTokenStorage(config["redis_url"], key_prefix=config["key_prefix"])
    from ..token.file import FileTokenStorage

    return lambda: FileTokenStorage(config["token_file"])


def _process_main(barrier: Barrier, queue: Any, config: dict[str, Any]) -> None:
    results: list[tuple[str, float, str]] = []
    make_storage = _storage_factory(config)
    threads = [
        threading.Thread(target=_caller, args=(barrier, results, config, make_storage))
        for _ in range(config["threads"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WORKER_TIMEOUT)
    queue.put(results)


def run_demo(
    processes: int = 4,
    threads: int = 25,
    storage: str = "file",
    redis_url: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the stampede against a fresh fake KIS and report what happened."""
    if processes < 1 or threads < 1:
        raise ConfigurationError("processes and threads must be at least 1")
    if storage not in ("file", "redis"):
        raise ConfigurationError("storage must be 'file' or 'redis'")
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="kis-demo-") as workdir, FakeKIS(rest_rate_limit=None) as kis:
        config = {
            "app_key": kis.app_key,
            "app_secret": kis.app_secret,
            "url": kis.url,
            "threads": threads,
            "storage": storage,
            "token_file": str(Path(workdir) / "token.key"),
            "redis_url": redis_url or os.environ.get(ENV_REDIS_URL, DEFAULT_REDIS_URL),
            "key_prefix": f"kis-demo:{os.getpid()}:{time.time_ns()}",
        }
        barrier = context.Barrier(processes * threads)
        queue = context.Queue()
        workers = [context.Process(target=_process_main, args=(barrier, queue, config)) for _ in range(processes)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        collected: list[tuple[str, float, str]] = []
        for done in range(processes):
            try:
                collected.extend(queue.get(timeout=WORKER_TIMEOUT))
            except Exception:
                break
            if on_progress is not None:
                on_progress(done + 1, processes)
        wall = time.perf_counter() - started
        for worker in workers:
            worker.join(5.0)
            if worker.is_alive():
                worker.kill()
        stats = kis.stats
    callers = processes * threads
    oks = [entry for entry in collected if entry[0] == "ok"]
    errors = [entry[2] for entry in collected if entry[0] == "error"]
    missing = callers - len(collected)
    if missing:
        errors.extend([f"caller did not report within {WORKER_TIMEOUT:.0f}s"] * missing)
    return DemoResult(
        storage=storage,
        processes=processes,
        threads=threads,
        callers=callers,
        tokenp_calls=stats.tokenp_requests,
        tokens_issued=stats.tokens_issued,
        errors=len(errors),
        distinct_tokens=len({entry[2] for entry in oks}),
        waits_ms=[entry[1] for entry in oks],
        wall_s=round(wall, 3),
        error_samples=sorted(set(errors))[:5],
    )
