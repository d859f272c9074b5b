"""``python -m bench``: every comparison of issues 5 and 12 in one run, a table and ``--json``.

Rows:

1. stored-token lookup, ours vs the naive 0.6.x flows (file and Redis);
2. ``KoreaInvestment()`` with a valid stored token (fake KIS on loopback);
3. cold stampedes P x T with a 200 ms issuance, ours vs the anchors;
4. holder crash recovery (SIGKILL mid-issuance);
5. rate limits (issue 12): fleet floods 1x8, 4x8 and 8x16 against a fake KIS
   that allows 20 calls/s, ours (file, Redis) beside per-process 19/s, a fixed
   50 ms sleep and no limiter with retries; and ``acquire()`` with no contention.

``--quick`` (122.7 s in all, rate-limit floods included, in one ``./run bench --quick`` on an
idle 2-core machine: the last line prints each run's duration) runs
stampedes 4x8 and 8x16 once each (no 16x16; portalocker's RedisLock at 4x8
only) and the crash row for our two stores; the full mode (301.9 s in the run
docs/performance.md shows, which had no rate-limit floods yet) runs 4x8,
8x16 and 16x16 three times each and adds the anchors to the crash row.  Redis rows use a private
``redis-server`` on a free loopback port unless ``--redis-url`` is given.
Every child process is killed before the bench returns, Ctrl-C and SIGTERM included.

The rate-limit floods run a 5 s window in quick mode (10 s in full), each on a
fresh fake KIS, at 1x8, 4x8 and 8x16 for every design (15 floods; the baselines
are not trimmed in quick mode, as they fit), longer than the window alone
since each flood adds 0.3-2 s of process start-up and tail to its window on
2 cores.  ``--fleet-sizes``, ``--fleet-seconds``, ``--fleet-designs`` and
``--acquire-samples`` narrow them for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.env import load_average, machine_facts, redis_server, redis_version
from bench.stampede import CHILDREN, OURS_FILE, OURS_REDIS, WAKE_ONLY, family, run_crash, run_stampede
from bench.stats import summarize_ms

QUICK_SIZES = [(4, 8), (8, 16)]
#: Quick mode runs these designs at 4x8 only: one 8x16 run of portalocker's RedisLock
#: alone takes 25-55 s on 2 cores (its election probes grow with the waiters).
QUICK_SMALL_ONLY = {"portalocker RedisLock"}
FULL_SIZES = [(4, 8), (8, 16), (16, 16)]
ANCHOR_KINDS = ["redis-py Lock", "python-redis-lock", "filelock", "portalocker file", "portalocker RedisLock"]
#: Rate-limit fleet floods (processes x threads) and their measured window, seconds.
FLEET_SIZES = [(1, 8), (4, 8), (8, 16)]
QUICK_FLEET_SECONDS = 5.0
FULL_FLEET_SECONDS = 10.0
QUICK_ACQUIRE_SAMPLES = 2000
FULL_ACQUIRE_SAMPLES = 10000
ALL_SECTIONS = "lookup,construction,stampede,crash,ratelimit"
#: A stampede cell is not repeated once one run of it took longer than this.
REPEAT_BUDGET_S = 20.0
#: Crash rows for anchors with a lock that never expires wait at most this long.
ANCHOR_CRASH_CAP_S = 10.0


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        procs, _, threads = part.strip().lower().partition("x")
        sizes.append((int(procs), int(threads)))
    return sizes


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="stampedes 4x8 and 8x16 once each, 5 s floods (about 2 minutes on 2 cores)"
    )
    parser.add_argument("--json", metavar="PATH", help="write every number (and the raw waits) here")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument("--sizes", help="stampede sizes, e.g. 4x8,8x16 (default by mode)")
    parser.add_argument("--runs", type=int, help="runs per stampede size and design (quick 1, full 3)")
    parser.add_argument("--kinds", help="comma-separated designs to stampede (default: all)")
    parser.add_argument("--issue-delay", type=float, default=0.2, help="simulated issuance, seconds (0.2)")
    parser.add_argument("--plot", metavar="PNG", help="plot follower waits at 8x16 (needs matplotlib)")
    parser.add_argument("--only", help=f"comma-separated sections: {ALL_SECTIONS} (default: all)")
    parser.add_argument("--fleet-sizes", help="rate-limit flood sizes, e.g. 1x8,4x8 (default 1x8,4x8,8x16)")
    parser.add_argument("--fleet-seconds", type=float, help="rate-limit flood window, seconds (quick 5, full 10)")
    parser.add_argument("--fleet-designs", help="comma-separated rate-limit designs to flood (default: all)")
    parser.add_argument("--acquire-samples", type=int, help="timed acquires per backend (quick 2000, full 10000)")
    return parser.parse_args(argv)


def _ours_redis_available() -> str | None:
    """None when our Redis store can run here, else why not."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'korea-investment-stock[redis]')"
    try:
        from korea_investment_stock.token import redis as _ours  # noqa: F401
    except ImportError as exc:
        return f"korea_investment_stock.token.redis cannot be imported ({exc})"
    return None


def _aggregate(kind: str, processes: int, threads: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    waits: list[float] = []
    detection: list[float] = []
    fanout: list[float] = []
    totals: list[float] = []
    errors: list[str] = []
    distinct: list[int] = []
    for run in runs:
        entries = run["entries"]
        oks = [e for e in entries if "error" not in e]
        errors.extend(e["error"] for e in entries if "error" in e)
        stamps = [e["stored_at"] for e in oks if e.get("issued") and e.get("stored_at")]
        if stamps:
            stored = min(stamps)
            followers = [e for e in oks if not e.get("issued")]
            waits.extend((e["end"] - stored) * 1000.0 for e in followers)
            # Where the wait goes: the first holder in each other process (noticing the
            # store across processes) and the rest of that process's threads (fan-out).
            issuer_pids = {e["pid"] for e in oks if e.get("issued")}
            by_pid: dict[int, list[float]] = {}
            for e in followers:
                if e["pid"] not in issuer_pids:
                    by_pid.setdefault(e["pid"], []).append(e["end"])
            for ends in by_pid.values():
                first = min(ends)
                detection.append((first - stored) * 1000.0)
                fanout.extend((end - first) * 1000.0 for end in ends)
        if oks:
            released = min(e["start"] for e in oks)
            totals.extend((e["end"] - released) * 1000.0 for e in oks)
        distinct.append(len({e["token"] for e in oks}))
    commands = [r["redis_commands"] for r in runs if r["redis_commands"] is not None]
    return {
        "size": f"{processes}x{threads}",
        "processes": processes,
        "threads": threads,
        "kind": kind,
        "family": family(kind),
        "runs": len(runs),
        "issuances": [r["issuances"] for r in runs],
        "distinct_tokens": distinct,
        "follower_wait": summarize_ms(waits),
        "first_follower_per_other_process": summarize_ms(detection),
        "rest_of_process_after_its_first": summarize_ms(fanout),
        "caller_total": summarize_ms(totals),
        "redis_commands": commands if family(kind) == "redis" else [],
        "redis_commands_by_name": [r["redis_commands_by_name"] for r in runs] if family(kind) == "redis" else [],
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "wall_s": [round(r["wall_s"], 2) for r in runs],
        "raw_follower_waits_ms": [round(w, 3) for w in waits],
    }


def _lease_seconds() -> float | None:
    """Our Redis store's default lease, read from the class rather than assumed."""
    try:
        from korea_investment_stock.token import redis as ours
    except ImportError:
        return None
    for name in ("DEFAULT_LEASE", "DEFAULT_LOCK_LEASE", "DEFAULT_LEASE_SECONDS", "LEASE"):
        value = getattr(ours, name, None)
        if isinstance(value, int | float):
            return float(value)
    cls = ours.LockingRedisTokenStorage
    for name in ("lease", "lock_lease", "lease_seconds", "lock_timeout"):
        value = getattr(cls, name, None)
        if isinstance(value, int | float):
            return float(value)
    return None


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    sections = {name.strip() for name in (args.only or ALL_SECTIONS).split(",")}
    unknown = sections - set(ALL_SECTIONS.split(","))
    if unknown:
        print(f"bench: unknown section(s) {', '.join(sorted(unknown))}; choose from {ALL_SECTIONS}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    sizes = _parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    runs_per_cell = args.runs or (1 if args.quick else 3)
    lookup_iterations = 2000 if args.quick else 10000
    ctor_iterations = 300 if args.quick else 1000
    fleet_sizes = _parse_sizes(args.fleet_sizes) if args.fleet_sizes else FLEET_SIZES
    fleet_seconds = args.fleet_seconds or (QUICK_FLEET_SECONDS if args.quick else FULL_FLEET_SECONDS)
    fleet_designs = [d.strip() for d in args.fleet_designs.split(",")] if args.fleet_designs else None
    acquire_samples = args.acquire_samples or (QUICK_ACQUIRE_SAMPLES if args.quick else FULL_ACQUIRE_SAMPLES)
    started = time.time()
    notes: list[str] = []
    result: dict[str, Any] = {"mode": mode, "started_at": started, "argv": sys.argv[1:]}
    try:
        with redis_server(args.redis_url) as redis_url:
            try:
                ours_redis_problem = _ours_redis_available() if redis_url else "no Redis (redis-server not on PATH)"
                if ours_redis_problem:
                    notes.append(f"Our Redis rows skipped: {ours_redis_problem}.")
                ours_redis_url = None if ours_redis_problem else redis_url
                facts = machine_facts(redis_version(redis_url) if redis_url else None)
                result["machine"] = facts
                result["redis"] = {
                    "url": "private redis-server on loopback" if not args.redis_url else "given with --redis-url",
                    "shared_with_others": bool(args.redis_url),
                }
                if args.redis_url:
                    notes.append("--redis-url given: command counts include anything else that server ran meanwhile.")
                lease = _lease_seconds() if not ours_redis_problem else None
                result["config"] = {
                    "sizes": [f"{p}x{t}" for p, t in sizes],
                    "runs_per_cell": runs_per_cell,
                    "issue_delay_s": args.issue_delay,
                    "lookup_iterations": lookup_iterations,
                    "construction_iterations": ctor_iterations,
                    "ours_redis_lease_s": lease,
                    "sections": sorted(sections),
                }
                report.print_header(
                    mode,
                    facts,
                    sizes,
                    runs_per_cell,
                    args.issue_delay,
                    sections=sections,
                    fleet=(fleet_sizes, fleet_seconds),
                )
                _progress("redis-server up" if redis_url else "no Redis")

                if "lookup" in sections:
                    _progress("lookup")
                    from bench.lookup import bench_lookups

                    result["lookup"] = bench_lookups(ours_redis_url, lookup_iterations)
                    if redis_url and not ours_redis_url:
                        notes.append("Naive Redis lookup not run either: it is compared with ours only.")
                if "construction" in sections:
                    _progress("construction")
                    from bench.lookup import bench_construction

                    result["construction"] = bench_construction(ours_redis_url, ctor_iterations)

                if "stampede" in sections:
                    kinds = [OURS_FILE, OURS_REDIS, *ANCHOR_KINDS, WAKE_ONLY]
                    if args.kinds:
                        wanted = [k.strip() for k in args.kinds.split(",")]
                        kinds = [k for k in kinds if k in wanted]
                    cells = []
                    for processes, threads in sizes:
                        for kind in kinds:
                            if family(kind) == "redis" and not redis_url:
                                continue
                            if kind == OURS_REDIS and not ours_redis_url:
                                continue
                            if args.quick and kind in QUICK_SMALL_ONLY and processes * threads > 32:
                                notes.append(
                                    f"Quick mode ran {kind} at 4x8 only (one 8x16 run takes 25-55 s here); "
                                    "the full mode runs it at every size."
                                )
                                continue
                            runs = []
                            for number in range(runs_per_cell):
                                _progress(f"stampede {processes}x{threads} {kind} run {number + 1}/{runs_per_cell}")
                                run = run_stampede(
                                    kind, processes, threads, redis_url=redis_url, issue_delay=args.issue_delay
                                )
                                runs.append(run)
                                if run["wall_s"] > REPEAT_BUDGET_S and number + 1 < runs_per_cell:
                                    notes.append(
                                        f"{kind} at {processes}x{threads}: one run took {run['wall_s']:.0f}s, "
                                        f"so it ran {len(runs)} time(s) instead of {runs_per_cell}."
                                    )
                                    break
                            cells.append(_aggregate(kind, processes, threads, runs))
                    result["stampede"] = cells

                if "crash" in sections:
                    crash_rows = []
                    crash_kinds: list[tuple[str, float]] = [(OURS_FILE, 5.0)]
                    if ours_redis_url:
                        crash_kinds.append((OURS_REDIS, (lease or 30.0) + 10.0))
                    if not args.quick and redis_url:
                        crash_kinds += [(k, ANCHOR_CRASH_CAP_S) for k in ANCHOR_KINDS]
                    elif not args.quick:
                        crash_kinds += [(k, ANCHOR_CRASH_CAP_S) for k in ANCHOR_KINDS if family(k) == "file"]
                    for kind, cap in crash_kinds:
                        _progress(f"crash {kind}")
                        row = run_crash(kind, redis_url=redis_url, follower_processes=3, threads=4, cap=cap)
                        row["family"] = family(kind)
                        row["lease_s"] = lease if kind == OURS_REDIS else None
                        crash_rows.append(row)
                    result["crash"] = crash_rows

                if "ratelimit" in sections:
                    result["ratelimit"] = _ratelimit_section(
                        ours_redis_url, fleet_sizes, fleet_seconds, fleet_designs, acquire_samples
                    )
                    if redis_url and not ours_redis_url:
                        notes.append("Rate limits: the Redis rows need our Redis store; skipped with it.")
            finally:
                CHILDREN.reap(grace=0.5)  # before redis-server stops, so no child outlives it
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping children", file=sys.stderr)
        return 130
    finally:
        CHILDREN.reap(grace=0.0)

    result["finished_at"] = time.time()
    result["duration_s"] = round(result["finished_at"] - started, 1)
    result["load_average_end"] = load_average()
    result["targets"] = report.evaluate_targets(result)
    result["notes"] = notes + report.automatic_notes(result)
    print(report.render(result))
    if args.plot:
        try:
            report.plot(result, args.plot)
            print(f"plot: {args.plot} ({os.path.getsize(args.plot) // 1024} KB)")
        except ImportError:
            print("plot skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"json: {args.json}")
    return 0


def _ratelimit_section(
    redis_url: str | None,
    sizes: list[tuple[int, int]],
    seconds: float,
    designs: list[str] | None,
    samples: int,
) -> dict[str, Any]:
    """Row 5: acquire overhead first (a quiet machine), then the fleet floods; the targets of issue 12."""
    import tempfile

    from bench import ratelimit

    _progress(f"ratelimit acquire overhead ({samples} acquires per backend)")
    section: dict[str, Any] = {
        "config": {
            "fleet_sizes": [f"{p}x{t}" for p, t in sizes],
            "fleet_seconds": seconds,
            "fleet_designs": designs or [label for label, _ in ratelimit.FLEET_DESIGNS],
            "nominal_rate": ratelimit.NOMINAL_RATE,
            "acquire_samples": samples,
            "acquire_warmup": ratelimit.ACQUIRE_WARMUP,
            "acquire_rate": ratelimit.UNLIMITED_RATE,
            "rate_limit_env_unset": True,
        },
        "acquire": ratelimit.measure_acquire_overhead(redis_url, samples),
    }
    with tempfile.TemporaryDirectory(prefix="kis-bench-flood-") as workdir:
        section["fleet"] = ratelimit.run_fleet_rows(
            sizes, seconds, redis_url, Path(workdir), designs=designs, progress=_progress
        )
    section["targets"] = ratelimit.evaluate_targets(section)
    return section


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` blocks stop every child and redis-server."""
    raise KeyboardInterrupt


_T0 = time.monotonic()


def _progress(what: str) -> None:
    print(f"  [{time.monotonic() - _T0:6.1f}s] {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
