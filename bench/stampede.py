"""Cold stampedes and holder crashes, in real processes.

A stampede starts P processes of T threads on an empty store; a barrier
releases every caller at once; each asks for a token through one design
("kind"): our ``FileTokenStorage`` / ``LockingRedisTokenStorage``
``get_token``, or an anchor from :mod:`bench.anchors`.  Issuance is a
function that counts itself in shared memory and sleeps (200 ms by default),
so every design pays the same for it and nothing but the store differs.

Times are ``time.time()`` in every process (one clock on one host):

- ``stored_at``: when the issuing caller's save call returned;
- a caller's ``end``: when it held the token.

A *follower* is a caller that did not issue; its wait is ``end - stored_at``
of the first stored token: how long the design kept it waiting once the
token was there to read.

Everything a child runs lives at module level (the ``spawn`` start method
imports it by name), and every wait has a bound.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from korea_investment_stock.token.record import TokenRecord, format_kst

API_KEY = "PSbenchbenchbenchbenchbenchbench0001"
API_SECRET = "bench-secret-" + "s" * 167
#: Bound on any single wait for children: spawn, barrier, results.
CHILD_TIMEOUT = 120.0

OURS_FILE = "ours file"
OURS_REDIS = "ours Redis"
#: Not a design: what waking the callers alone costs here (see :class:`WakeOnlyCaller`).
WAKE_ONLY = "wake-up only (no store)"

_tls = threading.local()


# ----------------------------------------------------------------------------- issuance
class BenchIssuer:
    """Stands in for tokenP: counts the call in shared memory, sleeps, returns a fresh record.

    ``on_enter`` (crash holders) runs after counting and before sleeping.
    """

    def __init__(self, counter: Any, delay: float, on_enter: Callable[[], None] | None = None) -> None:
        self.counter = counter
        self.delay = delay
        self.on_enter = on_enter

    def __call__(self) -> TokenRecord:
        with self.counter.get_lock():
            self.counter.value += 1
            number = self.counter.value
        _tls.issued = True
        _tls.issue_started = time.time()
        if self.on_enter is not None:
            self.on_enter()
        if self.delay > 0:
            time.sleep(self.delay)
        now = time.time()
        body = {
            "access_token": f"eyJ.bench-{os.getpid()}-{number}-{uuid.uuid4().hex[:8]}.sig",
            "access_token_token_expired": format_kst(now + 86400),
            "token_type": "Bearer",
            "expires_in": 86400,
        }
        return TokenRecord.from_issue_response(body, API_KEY, API_SECRET, now=now)


# ----------------------------------------------------------------------------- designs
class Caller:
    """One design as seen by a caller thread: ``obtain(issue)`` -> (token, issued, stored_at)."""

    def obtain(self, issue: BenchIssuer) -> tuple[str, bool, float | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _stamped(cls: type) -> type:
    """A subclass of one of our stores that notes when its save of an issued token returned.

    ``_store_issued`` is the step the single flight runs right after issuance,
    with the lease held; the bench only adds a timestamp after it.
    """

    class Stamped(cls):  # type: ignore[valid-type,misc]
        def _store_issued(self, *args: Any, **kwargs: Any) -> Any:
            result = super()._store_issued(*args, **kwargs)
            _tls.stored_at = time.time()
            return result

    Stamped.__name__ = f"Stamped{cls.__name__}"
    return Stamped


def _note_renames_onto(path: str) -> None:
    """Note when a rename onto ``path`` returns: the moment our file store's token becomes visible.

    ``FileTokenStorage`` fsyncs the directory *after* the rename, so "the save
    call returned" would be late by an fsync and would flatter our followers'
    wait; the anchors' saves do no fsync.  Only bench child processes are patched.
    """
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        if os.fspath(dst) == path:
            _tls.visible_at = time.time()

    os.replace = replace


class OursCaller(Caller):
    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def obtain(self, issue: BenchIssuer) -> tuple[str, bool, float | None]:
        _tls.issued = False
        _tls.stored_at = None
        _tls.visible_at = None
        record = self.storage.get_token(API_KEY, API_SECRET, issue)
        if not getattr(_tls, "issued", False):
            return record.access_token, False, None
        # The earlier of "the rename returned" (file) and "the save hook returned".
        stamps = [t for t in (_tls.visible_at, _tls.stored_at) if t is not None]
        return record.access_token, True, min(stamps) if stamps else None

    def close(self) -> None:
        close = getattr(self.storage, "close", None)
        if callable(close):
            close()


class AnchorCaller(Caller):
    def __init__(self, anchor: Any) -> None:
        self.anchor = anchor

    def obtain(self, issue: BenchIssuer) -> tuple[str, bool, float | None]:
        outcome = self.anchor.obtain(issue)
        return outcome.token, outcome.issued, outcome.stored_at

    def close(self) -> None:
        self.anchor.close()


def redis_store_options() -> dict[str, Any]:
    """Keyword arguments our Redis store is built with in every row (the defaults)."""
    return {}


class WakeOnlyCaller(Caller):
    """A reference, not a design: waking every follower with no store and no lock at all.

    The first caller anywhere issues and then writes one byte per process to a
    shared pipe; in every other process one thread blocks reading that pipe and
    wakes its siblings through a ``threading.Event``.  That is the shape of our
    stores' wake-up (one waiter per process, in-process fan-out) minus every
    read, lock and Redis command: it shows what scheduling the callers alone
    costs on this machine.  It is not a strict lower bound: its waiters sleep
    in the kernel, while our file store's waiters poll every 2 ms and so keep
    the CPUs awake.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.flag = config["wake_flag"]
        self.token = config["wake_token"]
        self.read_fd = config["wake_reader"].fileno()
        self.write_fd = config["wake_writer"].fileno()
        self.processes = config["processes"]
        self._elect = threading.Lock()
        self._waiting = False
        self._woken = threading.Event()

    def obtain(self, issue: BenchIssuer) -> tuple[str, bool, float | None]:
        with self.flag.get_lock():
            leader = self.flag.value == 0
            self.flag.value = 1
        if leader:
            record = issue()
            self.token.value = record.access_token.encode()
            stored = time.time()
            os.write(self.write_fd, b"x" * self.processes)
            self._woken.set()
            return record.access_token, True, stored
        with self._elect:
            waiter = not self._waiting
            self._waiting = True
        if waiter:
            import select

            readable, _, _ = select.select([self.read_fd], [], [], CHILD_TIMEOUT)
            if readable:
                os.read(self.read_fd, 1)
            self._woken.set()
        elif not self._woken.wait(CHILD_TIMEOUT):
            raise TimeoutError("wake-up only: never woken")
        return self.token.value.decode(), False, None


def make_caller(kind: str, config: dict[str, Any]) -> Caller:
    """Build the per-process object for ``kind``."""
    if kind == WAKE_ONLY:
        return WakeOnlyCaller(config)
    if kind == OURS_FILE:
        from korea_investment_stock.token.file import FileTokenStorage

        path = os.path.join(config["workdir"], "token.key")
        _note_renames_onto(path)
        return OursCaller(_stamped(FileTokenStorage)(path))
    if kind == OURS_REDIS:
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        cls = _stamped(LockingRedisTokenStorage)
        return OursCaller(cls(config["redis_url"], key_prefix=config["key_prefix"], **redis_store_options()))
    from .anchors import ANCHORS

    return AnchorCaller(ANCHORS[kind](config))


def family(kind: str) -> str:
    if kind == WAKE_ONLY:
        return "none"
    if kind == OURS_FILE:
        return "file"
    if kind == OURS_REDIS:
        return "redis"
    from .anchors import ANCHORS

    return ANCHORS[kind].family


# ----------------------------------------------------------------------------- children
def _call(caller: Caller, issue: BenchIssuer) -> dict[str, Any]:
    started = time.time()
    try:
        token, issued, stored_at = caller.obtain(issue)
    except Exception as exc:
        return {"start": started, "end": time.time(), "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {
        "start": started,
        "end": time.time(),
        "pid": os.getpid(),
        "token": token,
        "issued": issued,
        "stored_at": stored_at,
        "issue_started": getattr(_tls, "issue_started", None) if issued else None,
    }


def stampede_child(kind: str, config: dict[str, Any], threads: int, barrier: Any, counter: Any, results: Any) -> None:
    """One process of a stampede: T threads behind the shared barrier."""
    caller = make_caller(kind, config)
    issue = BenchIssuer(counter, config["issue_delay"])
    out: list[dict[str, Any]] = []
    out_lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(CHILD_TIMEOUT)
        except threading.BrokenBarrierError:
            with out_lock:
                out.append({"error": "barrier broken (another process failed to start)"})
            return
        entry = _call(caller, issue)
        with out_lock:
            out.append(entry)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(CHILD_TIMEOUT)
    with out_lock:
        missing = threads - len(out)
        snapshot = list(out) + [{"error": f"caller still waiting after {CHILD_TIMEOUT:.0f}s"}] * missing
    results.put(snapshot)
    try:
        caller.close()
    except Exception:
        pass


def crash_holder_child(kind: str, config: dict[str, Any], counter: Any, in_issue: Any) -> None:
    """Start issuing, tell the parent, and hang inside issuance until killed."""
    caller = make_caller(kind, config)
    issue = BenchIssuer(counter, config["hang"], on_enter=in_issue.set)
    caller.obtain(issue)


def crash_follower_child(
    kind: str, config: dict[str, Any], threads: int, counter: Any, ready: Any, go: Any, results: Any
) -> None:
    """T threads that ask for the token once ``go`` is set; issuance is instant for them."""
    caller = make_caller(kind, config)
    issue = BenchIssuer(counter, 0.0)
    out: list[dict[str, Any]] = []
    out_lock = threading.Lock()

    def run() -> None:
        if not go.wait(CHILD_TIMEOUT):
            return
        entry = _call(caller, issue)
        with out_lock:
            out.append(entry)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.put(os.getpid())
    deadline = time.monotonic() + config["follower_timeout"]
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    with out_lock:
        missing = threads - len(out)
        snapshot = list(out) + [{"error": "still waiting at the bench cap"}] * missing
    results.put(snapshot)
    results.close()
    results.join_thread()  # the put is flushed by a feeder thread; wait for it before _exit
    os._exit(0)  # do not wait for callers stuck on a lock that will never be released


# ----------------------------------------------------------------------------- parent side
@dataclass
class Children:
    """Every child the bench started, so nothing outlives it."""

    processes: list[Any] = field(default_factory=list)

    def add(self, process: Any) -> Any:
        self.processes.append(process)
        return process

    def reap(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5.0)
        self.processes.clear()


CHILDREN = Children()


def _context() -> Any:
    return multiprocessing.get_context("spawn")


def _child_config(workdir: str, redis_url: str | None) -> dict[str, Any]:
    """What every child of one run shares: its scratch directory, the Redis and a fresh key prefix."""
    return {"workdir": workdir, "redis_url": redis_url, "key_prefix": f"kis-bench:{uuid.uuid4().hex[:12]}"}


def _drain(
    results: Any, procs: list[Any], per_child: int, timeout: float, barrier: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """Collect each child's result list; returns the entries and how many children never answered.

    A child that dies before answering breaks the barrier (so its peers stop
    waiting for it) and is not waited for.
    """
    entries: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < len(procs) and time.monotonic() < deadline:
        try:
            entries.extend(results.get(timeout=0.2))
            answered += 1
            continue
        except queue_module.Empty:
            pass
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead and barrier is not None:
            barrier.abort()
        if all(p.exitcode is not None for p in procs):
            # Everyone has exited; pick up what they managed to send, then stop.
            try:
                while answered < len(procs):
                    entries.extend(results.get(timeout=0.5))
                    answered += 1
            except queue_module.Empty:
                pass
            break
    return entries, len(procs) - answered


def run_stampede(
    kind: str,
    processes: int,
    threads: int,
    *,
    redis_url: str | None,
    issue_delay: float,
    counter_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """One cold stampede; returns raw per-caller entries plus the counts."""
    from .env import CommandCounter

    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="kis-bench-") as workdir:
        config = {**_child_config(workdir, redis_url), "issue_delay": issue_delay}
        if kind == WAKE_ONLY:
            reader, writer = ctx.Pipe(duplex=False)
            config.update(
                wake_flag=ctx.Value("i", 0),
                wake_token=ctx.Array("c", 256),
                wake_reader=reader,
                wake_writer=writer,
                processes=processes,
            )
        counter = ctx.Value("i", 0)
        barrier = ctx.Barrier(processes * threads)
        results = ctx.Queue()
        commands = CommandCounter(redis_url) if redis_url else None
        before = commands.snapshot() if commands else None
        started = time.time()
        procs = [
            CHILDREN.add(ctx.Process(target=stampede_child, args=(kind, config, threads, barrier, counter, results)))
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        entries, silent = _drain(results, procs, threads, CHILD_TIMEOUT + 30.0, barrier)
        CHILDREN.reap()
        wall = time.time() - started
        redis_total: int | None = None
        redis_per: dict[str, int] = {}
        if commands is not None and before is not None:
            redis_total, redis_per = CommandCounter.delta(before, commands.snapshot())
            commands.close()
        entries.extend({"error": "process never reported"} for _ in range(silent * threads))
        return {
            "kind": kind,
            "processes": processes,
            "threads": threads,
            "issuances": counter.value,
            "entries": entries,
            "redis_commands": redis_total,
            "redis_commands_by_name": redis_per,
            "wall_s": wall,
        }


def run_crash(
    kind: str,
    *,
    redis_url: str | None,
    follower_processes: int,
    threads: int,
    cap: float,
    settle: float = 0.3,
) -> dict[str, Any]:
    """SIGKILL a holder mid-issuance; time until the others hold a token."""
    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="kis-bench-crash-") as workdir:
        config = {**_child_config(workdir, redis_url), "hang": CHILD_TIMEOUT, "follower_timeout": cap}
        counter = ctx.Value("i", 0)
        in_issue = ctx.Event()
        go = ctx.Event()
        ready = ctx.Queue()
        results = ctx.Queue()
        followers = [
            CHILDREN.add(
                ctx.Process(target=crash_follower_child, args=(kind, config, threads, counter, ready, go, results))
            )
            for _ in range(follower_processes)
        ]
        for proc in followers:
            proc.start()
        try:
            for _ in followers:
                ready.get(timeout=CHILD_TIMEOUT)
        except queue_module.Empty:
            CHILDREN.reap(0.0)
            return {"kind": kind, "error": "a follower process did not start"}
        holder = CHILDREN.add(ctx.Process(target=crash_holder_child, args=(kind, config, counter, in_issue)))
        holder.start()
        if not in_issue.wait(CHILD_TIMEOUT):
            CHILDREN.reap(0.0)
            return {"kind": kind, "error": "the holder never started issuing"}
        go.set()
        time.sleep(settle)  # let every follower reach its wait on the holder
        killed_at = time.time()
        os.kill(holder.pid, signal.SIGKILL)
        entries, silent = _drain(results, followers, threads, cap + 10.0)
        CHILDREN.reap(1.0)
        oks = [e for e in entries if "error" not in e]
        errors = [e["error"] for e in entries if "error" in e]
        errors.extend(["process never reported"] * (silent * threads))
        takeovers = [e["issue_started"] for e in oks if e.get("issued") and e.get("issue_started")]
        return {
            "kind": kind,
            "callers": follower_processes * threads,
            "held": len(oks),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:3],
            "issuances": counter.value,
            "takeover_ms": (min(takeovers) - killed_at) * 1000.0 if takeovers else None,
            "first_hold_ms": (min(e["end"] for e in oks) - killed_at) * 1000.0 if oks else None,
            "all_hold_ms": (max(e["end"] for e in oks) - killed_at) * 1000.0 if oks and not errors else None,
            "cap_s": cap,
            "settle_s": settle,
        }
