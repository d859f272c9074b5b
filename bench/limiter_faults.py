"""The shared budget under two faults of its store, measured: ``python -m bench.limiter_faults [--json]``.

Issue 16, points 1 and 2.  Each scenario counts departures the way the fault
tests do (:mod:`testsupport.departures`): the go times the limiters granted
and the callers' own departures, on one clock, and reports the busiest
sliding second against the promise, ``floor(rate) + 1``.

- ``redis stall``: eight limiters (each its own client, as eight processes) x
  two threads at 18.5/s on a private ``redis-server``, which is stopped
  (``SIGSTOP``) for 0.3 s four times during a 4 s run;
- ``file removed``: a process floods a file budget at 18.5/s with two threads,
  its state file is removed, and a second process joins for 3 s.

Nothing is asserted: it prints figures, and the package it measured.  To
measure another version of the package, run it from outside the repository
with that version first on ``PYTHONPATH`` and this repository after it (for
``bench`` and ``testsupport``); the worker processes inherit the order::

    git archive main | tar -x -C /tmp/main && mkdir /tmp/before && mv /tmp/main/korea_investment_stock /tmp/before
    cd /tmp && PYTHONPATH=/tmp/before:$REPO $REPO/.venv/bin/python -m bench.limiter_faults
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
from pathlib import Path
from typing import Any

from testsupport import limiter_worker
from testsupport.departures import busiest_second, record_grants, run_callers
from testsupport.redis_server import RedisServer

RATE = 18.5


def redis_stall(stall: float = 0.3, stalls: int = 4, limiters: int = 8) -> dict[str, Any]:
    """Callers of a Redis budget while the server stops ``stalls`` times for ``stall`` seconds."""
    from korea_investment_stock.limits.redis import RedisRateLimiter

    with RedisServer(name="bench-stall") as server:
        fleet = [
            RedisRateLimiter(server.client(socket_timeout=5.0), key_prefix="kis-bench:stall", rate=RATE)
            for _ in range(limiters)
        ]
        grants = [record_grants(limiter) for limiter in fleet]

        def stop_the_server(stop: threading.Event) -> None:
            for _ in range(stalls):
                stop.wait(0.6)
                server.pause()
                try:
                    stop.wait(stall)
                finally:
                    server.resume()

        seen = run_callers(
            [lambda limiter=limiter: limiter.acquire("app-key", "real", timeout=10) for limiter in fleet * 2],
            seconds=4.0,
            during=stop_the_server,
        )
    granted = [go_at for each in grants for go_at in each]
    return _row("redis stall", granted, seen.stamps, seen.timeouts, seen.errors)


def file_removed() -> dict[str, Any]:
    """A file budget whose state file is removed under load while a second process joins."""
    with tempfile.TemporaryDirectory() as workdir:
        reports = limiter_worker.state_file_pulled_under_load(Path(workdir) / "kis", RATE, Path.unlink)
    return _row(
        "file removed",
        [go_at for report in reports for go_at in report["granted"]],
        [stamp for report in reports for stamp in report["departed"]],
        sum(report["timeouts"] for report in reports),
        [error for report in reports for error in report["errors"]],
    )


def _row(name: str, granted: list[float], departed: list[float], timeouts: int, errors: list[str]) -> dict[str, Any]:
    return {
        "scenario": name,
        "rate": RATE,
        "bound": math.floor(RATE) + 1,
        "kis_limit": 20,
        "calls": len(departed),
        "busiest_second_granted": busiest_second(granted),
        "busiest_second_departed": busiest_second(departed),
        "timeouts": timeouts,
        "errors": errors[:3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limiter_faults", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    import korea_investment_stock

    rows = [redis_stall(), file_removed()]
    if args.json:
        print(json.dumps({"package": korea_investment_stock.__file__, "rows": rows}, indent=2))
        return 0
    print(f"package: {korea_investment_stock.__file__}")
    print(f"{'scenario':<14} {'rate':>5} {'bound':>5} {'calls':>5}  busiest second: granted  departed  timeouts")
    for row in rows:
        print(
            f"{row['scenario']:<14} {row['rate']:>5g} {row['bound']:>5} {row['calls']:>5}  "
            f"{row['busiest_second_granted']:>23} {row['busiest_second_departed']:>9} {row['timeouts']:>9}"
        )
        for error in row["errors"]:
            print(f"  error: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
