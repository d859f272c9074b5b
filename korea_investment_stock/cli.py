"""``python -m korea_investment_stock``: the command line.

Each command prints a human summary, or one JSON document with ``--json``, and
exits 0 on success, 1 when the work ran but failed its promise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .demo import run_demo

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _demo(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r  processes finished: {done}/{total}", end="", file=sys.stderr, flush=True)

    result = run_demo(
        args.processes, args.threads, storage=args.storage, redis_url=args.redis_url, on_progress=progress
    )
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        wait = summary["wait_ms"]
        print(
            f"korea-investment-stock demo: {result.processes} processes x {result.threads} threads, "
            f"one app key, {result.storage} token store, fake KIS server"
        )
        print(f"callers:        {result.callers}")
        print(f"tokenP calls:   {result.tokenp_calls}")
        print(f"errors:         {result.errors}")
        print(f"shared token:   {'yes' if result.distinct_tokens == 1 else f'no ({result.distinct_tokens} tokens)'}")
        print(f"waited (ms):    p50 {wait['p50']:.1f}  p95 {wait['p95']:.1f}  max {wait['max']:.1f}")
        print(f"wall time (s):  {result.wall_s:.2f}")
        for sample in result.error_samples:
            print(f"error sample:   {sample}")
    ok = result.tokenp_calls == 1 and result.errors == 0 and result.distinct_tokens == 1
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="python -m korea_investment_stock", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="stampede a fake KIS server and count tokenP calls")
    demo.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--threads", type=int, default=25, help="threads per process (default 25)")
    demo.add_argument("--storage", choices=("file", "redis"), default="file", help="token store (default file)")
    demo.add_argument("--redis-url", default=None, help="Redis URL for --storage redis")
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m korea_investment_stock`` and the ``kis-token`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "processes", 1) < 1 or getattr(args, "threads", 1) < 1:
        parser.error("--processes and --threads must be at least 1")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
