"""One process of a fleet that spends a budget: ``python -m testsupport.limiter_worker``.

It builds a limiter (a file budget in a directory, or a Redis budget), acquires
once and prints ``ready``, then runs :func:`testsupport.departures.run_callers`
for a while and prints one JSON line: the go times its limiter granted and its
callers' departures (``time.monotonic()``, one clock for the host's processes).
The fault tests and the bench start several, make the fault happen between
them, and count the fleet's busiest second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, cast

ROOT = Path(__file__).resolve().parents[1]
#: The longest the parent waits for a worker's ready line or its report.
WORKER_TIMEOUT = 60.0


def _limiter(args: argparse.Namespace) -> Any:
    if args.backend == "file":
        from korea_investment_stock.limits import FileRateLimiter

        return FileRateLimiter(args.directory, rate=args.rate)
    import redis

    from korea_investment_stock.limits.redis import RedisRateLimiter

    client = redis.Redis.from_url(args.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return RedisRateLimiter(client, key_prefix=args.key_prefix, rate=args.rate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="limiter_worker")
    parser.add_argument("--backend", choices=("file", "redis"), default="file")
    parser.add_argument("--directory", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--key-prefix", default="kis-test:worker")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)

    from testsupport.departures import record_grants, run_callers

    limiter = _limiter(args)
    granted = record_grants(limiter)
    limiter.acquire("app-key", "real", timeout=30)
    print("ready", flush=True)
    seen = run_callers(
        [lambda: limiter.acquire("app-key", "real", timeout=30)] * args.threads,
        args.seconds,
    )
    report = {
        "pid": os.getpid(),
        "granted": granted,
        "departed": seen.stamps,
        "timeouts": seen.timeouts,
        "errors": seen.errors,
        "falling_back": bool(getattr(limiter, "falling_back", False)),
    }
    print(json.dumps(report), flush=True)
    return 0


def start(*args: str) -> subprocess.Popen[str]:
    """Start a worker with ``args`` and return once it printed ``ready`` (its first slot is taken).

    An inherited ``PYTHONPATH`` comes first (the bench measures another version of
    the package that way); this repository follows it, for ``testsupport``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "testsupport.limiter_worker", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # not ROOT: "-m" puts the working directory first on sys.path
    )
    output = cast(IO[str], worker.stdout)  # stdout=PIPE always gives one
    line = output.readline().strip()
    if line != "ready":
        worker.kill()
        worker.wait(WORKER_TIMEOUT)
        raise RuntimeError(f"limiter worker did not start: {line!r}")
    return worker


def finish(worker: subprocess.Popen[str]) -> dict[str, Any]:
    """The worker's report, once it exits (killed if it overstays :data:`WORKER_TIMEOUT`)."""
    try:
        out, _ = worker.communicate(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(WORKER_TIMEOUT)
        raise
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def state_file_pulled_under_load(directory: Path, rate: float, pull: Callable[[Path], None]) -> list[dict[str, Any]]:
    """Two workers' reports: one floods the budget in ``directory``, ``pull`` removes or replaces
    its state file, then a second worker joins (the scenario behind issue 16, point 2)."""
    from korea_investment_stock.limits import FileRateLimiter
    from korea_investment_stock.limits.budget import bucket_id

    common = ("--directory", str(directory), "--rate", str(rate), "--threads", "2")
    workers = [start(*common, "--seconds", "3.5")]
    try:
        pull(FileRateLimiter(directory).state_path(bucket_id("app-key", "real")))
        workers.append(start(*common, "--seconds", "3.0"))
        return [finish(worker) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(30)


if __name__ == "__main__":
    sys.exit(main())
