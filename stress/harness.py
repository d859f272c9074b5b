"""Helpers the stress tests run in the pytest process: figures, the issuance clock, threads.

The private redis-servers are :class:`testsupport.redis_server.RedisServer`.

Child-process code lives in :mod:`stress.workers`; this module never runs in a child.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from korea_investment_stock.testing import FakeKIS, percentile

#: Longest any single wait in the harness may take (queues, barriers, joins).
HARNESS_TIMEOUT = 120.0


# ------------------------------------------------------------------------------ figures
@dataclass
class Figures:
    """One scenario's summary line (and JSON object)."""

    scenario: str
    backend: str
    callers: int
    tokenp_requests: int
    tokenp_success: int
    tokens_minted: int
    errors: int
    waits_ms: list[float] = field(repr=False)
    wall_s: float
    notes: dict[str, Any] = field(default_factory=dict)

    def _wait(self, q: float) -> float:
        """0.0 when no caller had a wait to measure, so the line and the JSON stay plain numbers."""
        return percentile(self.waits_ms, q) if self.waits_ms else 0.0

    @property
    def wait_p50(self) -> float:
        return self._wait(0.50)

    @property
    def wait_p95(self) -> float:
        return self._wait(0.95)

    @property
    def wait_max(self) -> float:
        return max(self.waits_ms, default=0.0)

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (
            f"{self.scenario} backend={self.backend} callers={self.callers} tokenP={self.tokenp_requests} "
            f"issued={self.tokenp_success} minted={self.tokens_minted} errors={self.errors} "
            f"wait_after_store_ms p50={self.wait_p50:.1f} p95={self.wait_p95:.1f} max={self.wait_max:.1f} "
            f"wall={self.wall_s:.2f}s{extra}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["waits_ms"]
        data["wait_after_store_ms"] = {
            "p50": round(self.wait_p50, 2),
            "p95": round(self.wait_p95, 2),
            "max": round(self.wait_max, 2),
            "n": len(self.waits_ms),
        }
        data["wall_s"] = round(self.wall_s, 3)
        data["line"] = self.line()
        return data


@dataclass
class Outcome:
    """What one caller ended with: a token, or an error, and when (``time.time()``)."""

    ok: bool
    token: str | None = None
    at: float = 0.0
    error_type: str | None = None
    error: str | None = None
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(**data)

    @classmethod
    def failure(
        cls, exc: BaseException, started: float | None = None, *, keep: bool = False, limit: int = 300
    ) -> Outcome:
        """A caller that ended with ``exc``; ``elapsed`` since ``started`` (a ``perf_counter``) when
        given, and the exception object itself in ``extra["exc"]`` with ``keep``."""
        return cls(
            ok=False,
            at=time.time(),
            error_type=type(exc).__name__,
            error=str(exc)[:limit],
            elapsed=0.0 if started is None else time.perf_counter() - started,
            extra={"exc": exc} if keep else {},
        )


def errors_of(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


def error_sample(outcomes: Iterable[Outcome], n: int = 3) -> list[str]:
    seen = sorted({f"{o.error_type}: {o.error}" for o in outcomes if not o.ok})
    return seen[:n]


# ------------------------------------------------------------------- the issuance clock
class IssuanceClock:
    """Records when the fake KIS handed out each token (successful tokenP answers).

    Woken by the fake server's own change notifications (no polling).  The time
    is the server's ``stats.last_issued_at`` (``time.time()``, no ``advance``
    used in this suite): the leader stores the token right after this answer,
    so "wait after the token was stored" for a caller is its ``time.time()``
    when it held the token minus the latest answer for that token before it.
    """

    def __init__(self, kis: FakeKIS) -> None:
        self._kis = kis
        self._answers: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen = kis.stats.tokenp_success
        self._thread = threading.Thread(target=self._run, name="issuance-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(int(HARNESS_TIMEOUT * 20)):  # bounded: 0.05 s per idle round
            if self._stop.is_set():
                return
            seen = self._seen
            try:
                snap = self._kis.wait_for_stats(lambda s: s.tokenp_success > seen, timeout=0.05)
            except TimeoutError:
                continue
            except Exception:  # the server stopped
                return
            tokens = self._kis.issued_tokens()
            if tokens and snap.last_issued_at is not None:
                with self._lock:
                    self._answers.append((snap.last_issued_at, tokens[-1]))
            self._seen = snap.tokenp_success

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def stored_at(self, token: str | None, at: float) -> float | None:
        """The latest answer handing out ``token`` no later than ``at`` (or the latest one at all)."""
        with self._lock:
            answers = list(self._answers)
        same = [t for t, tok in answers if tok == token]
        before = [t for t in same if t <= at]
        if before:
            return max(before)
        return min(same) if same else None

    def waits_ms(self, outcomes: Iterable[Outcome]) -> list[float]:
        waits = []
        for o in outcomes:
            if not o.ok or o.token is None:
                continue
            stored = self.stored_at(o.token, o.at)
            if stored is not None:
                waits.append(max(0.0, (o.at - stored) * 1000.0))
        return waits


# ---------------------------------------------------------------------------- threads
def run_threads(n: int, body: Callable[[int, threading.Barrier], Outcome], timeout: float = 60.0) -> list[Outcome]:
    """Run ``body(i, barrier)`` in ``n`` threads; a thread that does not finish reports an error."""
    barrier = threading.Barrier(n)
    results: list[Outcome | None] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = body(i, barrier)
        except BaseException as exc:  # the body reports its own errors; this is a harness bug
            results[i] = Outcome.failure(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [
        r if r is not None else Outcome(ok=False, error_type="Hang", error=f"did not finish in {timeout:.0f}s")
        for r in results
    ]


def drain(queue: Any, n: int, timeout: float = HARNESS_TIMEOUT) -> list[Any]:
    """Take ``n`` items from a multiprocessing queue, or as many as arrive before ``timeout``."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    for _ in range(n):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            items.append(queue.get(timeout=remaining))
        except Exception:
            break
    return items


def fleet_outcomes(queue: Any, processes: int, callers: int, timeout: float = HARNESS_TIMEOUT) -> list[Outcome]:
    """Every caller's outcome from ``processes`` workers that each put one batch of outcome dicts
    on ``queue``; the callers of a process that did not report in time count as hung."""
    outcomes = [Outcome.from_dict(d) for batch in drain(queue, processes, timeout) for d in batch]
    return outcomes + [Outcome(ok=False, error_type="Hang", error="process did not report")] * (callers - len(outcomes))


def acquire_n(semaphore: Any, n: int, timeout: float) -> bool:
    """Acquire a multiprocessing semaphore ``n`` times before ``timeout``; False if it ran out."""
    deadline = time.monotonic() + timeout
    for _ in range(n):
        if not semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
    return True


def summarize(
    scenario: str,
    backend: str,
    outcomes: list[Outcome],
    kis: FakeKIS,
    clock: IssuanceClock | None,
    wall: float,
    before: Any = None,
    **notes: Any,
) -> Figures:
    """Figures from the fake server's own counters (since ``before``, a stats snapshot)."""
    after = kis.stats
    base = (before.tokenp_requests, before.tokenp_success, before.tokens_issued) if before else (0, 0, 0)
    return Figures(
        scenario=scenario,
        backend=backend,
        callers=len(outcomes),
        tokenp_requests=after.tokenp_requests - base[0],
        tokenp_success=after.tokenp_success - base[1],
        tokens_minted=after.tokens_issued - base[2],
        errors=len(errors_of(outcomes)),
        waits_ms=clock.waits_ms(outcomes) if clock is not None else [],
        wall_s=wall,
        notes=notes,
    )


def client_wave(
    spec: dict[str, Any],
    n: int,
    storages: list[Any] | None = None,
    timeout: float = 60.0,
    **client_kwargs: Any,
) -> list[Outcome]:
    """``n`` threads in this process, released together, each building a client and quoting once.

    ``storages`` (one per thread) defaults to a new store instance each.  A
    failed caller's exception object is kept in ``extra["exc"]``.
    """
    from .workers import make_storage, new_client, quote

    stores = storages if storages is not None else [make_storage(spec) for _ in range(n)]

    def body(i: int, barrier: threading.Barrier) -> Outcome:
        barrier.wait(30)
        t0 = time.perf_counter()
        try:
            client = new_client(spec, stores[i], **client_kwargs)
            got = time.time()
            with client:
                quote(client)
        except Exception as exc:
            return Outcome.failure(exc, t0, keep=True)
        return Outcome(ok=True, token=client._token.access_token, at=got, elapsed=time.perf_counter() - t0)

    return run_threads(n, body, timeout=timeout)
