"""A fleet flooding one app key: P processes x T threads quoting flat out against a fake KIS.

Shared by the rate-limit tests, the stress suite's fleet flood and the bench,
so all three measure the same thing the same way:

- every process builds its store and one client (which obtains the token)
  before the start barrier, so the window measures quoting only;
- the parent reads the fake server's own counters at the start and the end of
  the window: accepted calls and ``EGW00201`` answers are what KIS would count;
- each caller stamps its successful calls (wall clock, shared by the host's
  processes), so per-process shares count only calls inside the window;
- after the window each process reports at once and is ended: calls still queued
  for a slot are abandoned, so a run lasts its window plus start-up.

Designs (``design=``), for the bench's side-by-side rows:

- ``ours``: the default limiter of the token store (file or Redis);
- ``per-process``: a limiter of its own in each process at ``per_process_rate`` (python-kis's 19/s), with
  no pause on ``EGW00201`` (that is ours: it would make the baseline look better or worse than it is);
- ``sleep``: no limiter, a fixed pause after every call (KIS's samples: 50 ms);
- ``none``: no limiter; the client retries ``EGW00201`` with backoff.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from korea_investment_stock.limits import ProcessRateLimiter
from korea_investment_stock.testing import FakeKIS, percentile

ACCOUNT = "12345678-01"
SYMBOL = "005930"
#: The longest any wait of the harness may take (start barrier, results, joins).
HARNESS_TIMEOUT = 120.0
DESIGNS = ("ours", "per-process", "sleep", "none")


@dataclass(frozen=True)
class FloodConfig:
    """What every process of one flood is told (plain data: it crosses ``spawn``)."""

    url: str
    app_key: str
    app_secret: str
    storage: str  # "file" or "redis"
    token_file: str
    redis_url: str | None = None
    key_prefix: str = "kis-flood"
    design: str = "ours"
    threads: int = 8
    mock: bool = False
    per_process_rate: float = 19.0
    sleep_per_call: float = 0.05
    rate_limit: str | None = None  # KOREA_INVESTMENT_RATE_LIMIT for the children; None: unset


@dataclass
class ProcessReport:
    """One process's callers, summed."""

    pid: int
    group: int
    ok_in_window: int = 0
    ok_total: int = 0
    rate_limited: int = 0
    other_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)


@dataclass
class FloodResult:
    """The flood as KIS saw it, and as the callers saw it."""

    design: str
    storage: str
    processes: int
    threads: int
    seconds: float
    nominal_rate: float
    accepted: int
    egw00201: int
    reports: list[ProcessReport]

    @property
    def caller_errors(self) -> int:
        """Calls that ended in an exception (``RateLimitExceededError`` included)."""
        return sum(r.rate_limited + r.other_errors for r in self.reports) + self.missing_processes

    @property
    def missing_processes(self) -> int:
        return self.processes - len(self.reports)

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.seconds

    @property
    def budget_used(self) -> float:
        """Accepted calls in the window as a share of the nominal budget (20/s real, 2/s mock)."""
        return self.accepted_per_second / self.nominal_rate

    @property
    def shares(self) -> list[float]:
        """Each process's in-window calls as a share of all in-window calls."""
        total = sum(r.ok_in_window for r in self.reports)
        return [r.ok_in_window / total if total else 0.0 for r in self.reports]

    @property
    def worst_share_deviation(self) -> float:
        """The largest distance of a process's share from the fair share, relative to it (0.2: 20 %)."""
        if not self.reports:
            return 1.0
        fair = 1.0 / len(self.reports)
        return max(abs(share - fair) / fair for share in self.shares)

    def line(self, name: str) -> str:
        """The one summary line the stress suite and the bench print."""
        shares = "/".join(f"{share * 100:.0f}" for share in self.shares)
        waits = [w for r in self.reports for w in r.call_ms]
        p99 = percentile(waits, 0.99) if waits else 0.0
        return (
            f"{name} design={self.design} backend={self.storage} fleet={self.processes}x{self.threads} "
            f"window={self.seconds:.0f}s accepted={self.accepted} ({self.accepted_per_second:.1f}/s) "
            f"EGW00201={self.egw00201} errors={self.caller_errors} budget_used={self.budget_used * 100:.1f}% "
            f"shares%={shares} worst_share_dev={self.worst_share_deviation * 100:.0f}% call_p99_ms={p99:.0f}"
        )


def _accepted(kis: FakeKIS) -> tuple[int, int]:
    stats = kis.stats
    rejected = sum(stats.rest_rejected.values())
    return stats.rest_requests - rejected, stats.rest_rejected.get("EGW00201", 0)


def run_flood(
    kis: FakeKIS,
    config: FloodConfig,
    processes: int,
    seconds: float,
    *,
    groups: int = 1,
    workdir: Path,
    before_window: Callable[[], None] | None = None,
) -> FloodResult:
    """Flood ``kis`` with ``processes`` x ``config.threads`` callers for ``seconds``; read the counters.

    ``groups`` > 1 splits the processes into groups that share nothing but the
    Redis named in ``config`` (each its own token file and directory): "servers".
    ``before_window`` runs once every client holds its token, before the window
    opens: a fault the window should measure (a Redis stopped, say).
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    stop = context.Event()
    window = context.Array("d", 2)  # wall-clock start and end of the window, for the callers' stamps
    results = context.Queue()
    workers = []
    for index in range(processes):
        group = index % groups
        directory = workdir / f"group-{group}"
        directory.mkdir(parents=True, exist_ok=True)
        own = FloodConfig(**{**config.__dict__, "token_file": str(directory / "token.key")})
        workers.append(
            context.Process(target=flood_process, args=(own, group, start, stop, window, results), daemon=True)
        )
    for worker in workers:
        worker.start()
    reports: list[ProcessReport] = []
    try:
        start.wait(HARNESS_TIMEOUT)  # every client holds its token now
        if before_window is not None:
            before_window()
        accepted_before, refused_before = _accepted(kis)
        window[0] = time.time()
        stop.wait(seconds)  # the measured window (stop is set by nobody else)
        window[1] = time.time()
        accepted_after, refused_after = _accepted(kis)
        stop.set()
        deadline = time.monotonic() + HARNESS_TIMEOUT
        while len(reports) < processes and time.monotonic() < deadline:
            try:
                reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except Exception:
                break
    finally:
        stop.set()
        start.abort()
        for worker in workers:
            worker.join(2)  # it exits by itself once its report is out; callers in a slot's wait do not hold it
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    nominal = 2.0 if config.mock else 20.0
    return FloodResult(
        design=config.design,
        storage=config.storage,
        processes=processes,
        threads=config.threads,
        seconds=seconds,
        nominal_rate=nominal,
        accepted=accepted_after - accepted_before,
        egw00201=refused_after - refused_before,
        reports=sorted(reports, key=lambda r: r.pid),
    )


class PerProcessOnly(ProcessRateLimiter):
    """python-kis's design: a budget per process and nothing more (no fleet-wide pause on EGW00201)."""

    def _penalize(self, bucket: str, seconds: float) -> None:
        return None


def _make_client(config: FloodConfig) -> Any:
    from korea_investment_stock import KoreaInvestment
    from korea_investment_stock.limits import NoRateLimit

    if config.storage == "redis":
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        storage: Any = LockingRedisTokenStorage(config.redis_url or "", key_prefix=config.key_prefix)
    else:
        from korea_investment_stock.token.file import FileTokenStorage

        storage = FileTokenStorage(config.token_file)
    if config.design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {config.design!r}")
    limiter: Any = None  # the store's default
    if config.design == "per-process":
        limiter = PerProcessOnly(config.per_process_rate)
    elif config.design in ("sleep", "none"):
        limiter = NoRateLimit()
    return KoreaInvestment(
        config.app_key,
        config.app_secret,
        ACCOUNT,
        mock=config.mock,
        token_storage=storage,
        base_url=config.url,
        rate_limiter=limiter,
        pool_size=max(config.threads, 1),
    )


def flood_process(config: FloodConfig, group: int, start: Any, stop: Any, window: Any, results: Any) -> None:
    """One process of the flood: its callers quote until ``stop``; one :class:`ProcessReport` on ``results``."""
    if config.rate_limit is None:
        os.environ.pop("KOREA_INVESTMENT_RATE_LIMIT", None)
    else:
        os.environ["KOREA_INVESTMENT_RATE_LIMIT"] = config.rate_limit
    report = ProcessReport(pid=os.getpid(), group=group)
    stamps: list[float] = []
    lock = threading.Lock()
    try:
        client = _make_client(config)
    except BaseException:
        report.other_errors += 1
        report.error_samples.append(traceback.format_exc(limit=3))
        start.abort()
        results.put(report)
        return

    # The callers watch a local event, never the shared one: a process ended while one of its
    # threads sat in the shared Event's lock would leave that lock taken for every other process.
    local_stop = threading.Event()
    args = (client, config, local_stop, report, stamps, lock)
    threads = [threading.Thread(target=_quote_until_stopped, args=args, daemon=True) for _ in range(config.threads)]
    try:
        start.wait(HARNESS_TIMEOUT)
    except threading.BrokenBarrierError:
        report.other_errors += 1
        report.error_samples.append("the start barrier broke")
        results.put(report)
        return
    for thread in threads:
        thread.start()
    stop.wait(HARNESS_TIMEOUT)
    local_stop.set()
    # Report at once: callers still queued for a slot would otherwise each send one more call
    # (a tail of a whole queue, 17 s at 4x8 on the mock budget).  They are daemon threads, and
    # the parent ends this process once it has the report; the counters were read at the window's end.
    begin, end = window[0], window[1]
    with lock:
        report.ok_in_window = sum(1 for stamp in stamps if begin <= stamp <= end)
        results.put(report)


def _quote_until_stopped(
    client: Any,
    config: FloodConfig,
    stop: threading.Event,
    report: ProcessReport,
    stamps: list[float],
    lock: threading.Lock,
) -> None:
    """One caller: quote flat out until ``stop``, stamping each success (wall clock) for the window."""
    from korea_investment_stock.errors import RateLimitExceededError

    def note(sample: str) -> None:
        if len(report.error_samples) < 3:
            report.error_samples.append(sample)

    while not stop.is_set():
        began = time.perf_counter()
        try:
            answer = client.fetch_domestic_price("J", SYMBOL)
            ended = time.time()
            with lock:
                report.call_ms.append((time.perf_counter() - began) * 1000.0)
                if answer.get("rt_cd") == "0":
                    report.ok_total += 1
                    stamps.append(ended)
                else:
                    report.other_errors += 1
                    note(f"{answer.get('msg_cd')}: {answer.get('msg1')}")
        except RateLimitExceededError as exc:
            with lock:
                report.rate_limited += 1
                note(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            with lock:
                report.other_errors += 1
                note(f"{type(exc).__name__}: {exc}")
        if config.design == "sleep":
            stop.wait(config.sleep_per_call)


def summary_fields(result: FloodResult) -> dict[str, Any]:
    """The JSON the stress suite and the bench record for one flood."""
    return {
        "design": result.design,
        "backend": result.storage,
        "processes": result.processes,
        "threads": result.threads,
        "seconds": result.seconds,
        "accepted": result.accepted,
        "accepted_per_second": round(result.accepted_per_second, 2),
        "egw00201": result.egw00201,
        "caller_errors": result.caller_errors,
        "budget_used": round(result.budget_used, 4),
        "shares": [round(share, 4) for share in result.shares],
        "worst_share_deviation": round(result.worst_share_deviation, 4),
        "error_samples": sorted({s for r in result.reports for s in r.error_samples})[:5],
    }
