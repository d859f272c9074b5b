"""Worker for the multi-process master-file test.

A ``spawn`` child imports this by name, so it lives outside the test module.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any


def symbols_worker(base_url: str, cache_dir: str, barrier: Any, threads: int, results: Any) -> None:
    """Release ``threads`` threads together (after every process is ready), each calling ``symbols()``.

    Puts ``(pid, [outcome, ...])`` on ``results``; an outcome is
    ``("ok", rows, kospi_rows)`` or ``("error", traceback)``.
    """
    import pandas  # noqa: F401  (imported before the barrier: the race is on the cache, not on imports)
    import requests

    from korea_investment_stock.market.masters import MasterFiles

    session = requests.Session()
    files = MasterFiles(session, base_url=base_url, cache_dir=cache_dir)
    start = threading.Barrier(threads)
    outcomes: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            start.wait(timeout=30)
            frame = files.symbols()
            outcome: tuple[Any, ...] = ("ok", len(frame), int((frame["시장"] == "코스피").sum()))
        except BaseException:
            outcome = ("error", traceback.format_exc())
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    barrier.wait(timeout=60)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    if len(outcomes) < threads:
        outcomes.append(("error", f"{threads - len(outcomes)} thread(s) still running after 60 s"))
    results.put((os.getpid(), outcomes))
