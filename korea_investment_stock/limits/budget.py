"""The per-second REST budget of one app key, and the limiter interface every backend implements.

KIS counts REST calls per app key in any one second (20/s real, 2/s mock) and
answers ``EGW00201`` above it.  The limiter spaces calls by GCRA (the generic
cell rate algorithm): each acquire reserves the next free slot, ``interval =
1 / rate`` after the previous one, and the caller sleeps until its slot.  No
fixed windows (so no double burst at a second boundary), no polling, and
callers are served in the order they asked.  A slot further away than the
caller's deadline is not taken: the call fails at once and sends nothing.

The rate is the nominal budget minus :data:`SAFETY_MARGIN`: slots are stamped
here, but KIS counts arrivals, and the network can bring two calls closer
together than they left.  With the margin, 21 calls in a row span 1.08 s, so
about 80 ms of jitter can pass before KIS sees 21 in one second.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import ConfigurationError, LimiterStoreUnavailable, RateLimitWaitTimeout
from ..notices import warn_once
from ..token.record import key_id
from ..validation import MAX_SECONDS, check_seconds

logger = logging.getLogger(__name__)

#: KIS's budgets per app key (shared/kis-api.md, notice of 2025-08).
NOMINAL_RATES: Mapping[str, float] = {"real": 20.0, "mock": 2.0}
#: The share of the budget left unused, for network jitter (see the module docstring).
SAFETY_MARGIN = 0.075
#: How long a caller may wait for its slot before the call fails unsent.
DEFAULT_ACQUIRE_TIMEOUT = 30.0
#: How long the fleet pauses after an ``EGW00201`` that a caller outside the limiter caused.
PENALTY_SECONDS = 1.0
#: While a shared limiter's store is unreachable, each process spends this share of the budget alone.
FALLBACK_SHARE = 0.25
#: How long a process keeps to its fallback before it tries the shared store again.
FALLBACK_RETRY_SECONDS = 5.0
#: Grants remembered per app key, for "budget used in the last second".
RECENT_GRANTS = 128
#: The slowest rate a limiter accepts: one call per day.  Every accepted rate is enforced (the
#: stores keep a budget's state until its next slot); a slower one is refused, not ignored.
MIN_RATE = 1.0 / 86400

ENV_RATE_LIMIT = "KOREA_INVESTMENT_RATE_LIMIT"
ENVIRONMENTS = ("real", "mock")


def default_rate(environment: str) -> float:
    """Calls per second the limiter allows by default: the nominal budget minus the margin."""
    return NOMINAL_RATES[check_environment(environment)] * (1.0 - SAFETY_MARGIN)


def check_environment(environment: str) -> str:
    """``real`` or ``mock``, or :class:`ConfigurationError`."""
    if environment not in ENVIRONMENTS:
        raise ConfigurationError(f"environment must be 'real' or 'mock', got {environment!r}")
    return environment


def check_rate(rate: object, name: str = "rate") -> float:
    """A finite number of calls per second, at least :data:`MIN_RATE`, or :class:`ConfigurationError`."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ConfigurationError(f"{name} must be a positive, finite number of calls per second, got {rate!r}")
    if rate < MIN_RATE:
        raise ConfigurationError(
            f"{name} must be at least one call per day ({MIN_RATE:.3g} calls per second), got {rate!r}"
        )
    return float(rate)


#: Words for "no limiter" in ``KOREA_INVESTMENT_RATE_LIMIT``; any spelling of zero means the same.
OFF_WORDS = ("off", "none", "false", "no")


def rate_from_env(environ: Mapping[str, str]) -> float | bool | None:
    """``KOREA_INVESTMENT_RATE_LIMIT``: a number (calls per second), ``off``, or unset.

    Returns the rate, ``False`` for ``off`` or zero (``0``, ``0.0``: every
    spelling of zero means off, the common reading of a zero rate limit), or
    ``None`` when unset (the default applies).
    """
    raw = (environ.get(ENV_RATE_LIMIT) or "").strip()
    if not raw:
        return None
    if raw.lower() in OFF_WORDS:
        return False
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if value == 0:
        return False
    if not MIN_RATE <= value < math.inf:
        raise ConfigurationError(
            f"{ENV_RATE_LIMIT}={raw!r} is not a rate; use calls per second (e.g. 18 or 1.5), at least one "
            f"call per day ({MIN_RATE:.3g}), or 'off' or 0 for no limiter"
        )
    return value


def warn_if_over_budget(rate: float, environment: str) -> None:
    """Log once per process when ``rate`` is above KIS's budget for ``environment`` (20/s real, 2/s mock).

    Such a rate is allowed (a test against a fake server wants it), but against
    KIS it buys ``EGW00201`` answers and retries, not speed.
    """
    nominal = NOMINAL_RATES[environment]
    if rate > nominal:
        warn_once(
            logger,
            ("rate over budget", rate, environment),
            "the rate limit %g/s is above KIS's %g/s for a %s app key: KIS answers EGW00201 above it. "
            "Unset %s (or the limiter's rate=) for the default (%g/s), or set it at most %g",
            rate,
            nominal,
            environment,
            ENV_RATE_LIMIT,
            default_rate(environment),
            nominal,
        )


def bucket_id(api_key: str, environment: str) -> str:
    """The name of one budget: the app key's id and the environment (a key is real or mock)."""
    return f"{key_id(api_key)}.{check_environment(environment)}"


#: What :func:`bucket_id` names look like: a store entry named otherwise is not a budget of ours.
BUCKET_NAME = re.compile(r"[0-9a-f]{32}\.(?:real|mock)")
#: The app key whose budget ``kis-token health`` probes when it knows no app key.
PROBE_KEY = "health-check"


@dataclass(frozen=True)
class Usage:
    """One budget as the limiter sees it now: the rate, and the grants of the last second."""

    bucket: str
    rate: float
    used_last_second: int
    #: Seconds until the next free slot (0 when a call could go now).
    backlog_seconds: float

    @property
    def share_used(self) -> float:
        """``used_last_second`` as a share of the rate (1.0: the budget is spent)."""
        return self.used_last_second / self.rate if self.rate else 0.0


def reserve(tat: float, now: float, interval: float, max_wait: float) -> tuple[float, float] | None:
    """GCRA: the slot for a call asked at ``now`` and the next theoretical arrival time, or None.

    ``tat`` is the earliest time the next call may go.  None when that is more
    than ``max_wait`` away: the caller gives up and nothing is reserved.
    """
    slot = max(tat, now)
    if slot - now > max_wait:
        return None
    return slot, slot + interval


class FairLock:
    """A lock that serves its waiters first come, first served, each waiting until its own deadline.

    ``threading.Lock`` wakes whichever waiter the scheduler picks: in one run of
    30 threads sharing a budget, 54 calls timed out and 6 threads got no call in
    6 s while one got 15.  Here each waiter queues behind the others and the
    lock is handed to the first in line; one whose deadline passes leaves the
    line without taking anyone's turn.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        #: One locked lock per waiter, released to hand the lock over (held stays True).
        self._line: deque[threading.Lock] = deque()

    def acquire(self, deadline: float) -> bool:
        """Wait for the lock until ``deadline`` (``time.monotonic()``); False if not had by then."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            ticket = threading.Lock()
            ticket.acquire()
            self._line.append(ticket)
        if ticket.acquire(timeout=max(0.0, min(deadline - time.monotonic(), MAX_SECONDS))):
            return True
        with self._mutex:
            if ticket in self._line:
                self._line.remove(ticket)
                return False
        return True  # handed over between our timeout and now: ours after all

    def release(self) -> None:
        """Hand the lock to the first in line, or free it."""
        with self._mutex:
            if self._line:
                self._line.popleft().release()
            else:
                self._held = False


def departure(replied_at: float, wait: float) -> float:
    """When a call may leave whose slot a remote store granted ``wait`` seconds ahead, on our clock.

    The store measured ``wait`` on its own clock when its script ran, which was
    some time between our request and its reply: after a stall (a slow
    command, a fork, a retransmit) long after we asked.  Counted from when we
    asked, the call would leave as early as the stall was long, and a second
    would hold more calls than the rate.  Counted from when the reply arrived,
    it never leaves before its slot; it is late by at most the reply's trip
    back, which (unlike the stall before the script) costs no slot to anyone.
    """
    return replied_at + wait


class RateLimiter(ABC):
    """Spaces REST calls so that everyone sharing this limiter stays inside one budget.

    Args:
        rate: calls per second for every bucket; default by environment (:func:`default_rate`).

    :meth:`acquire` is the one call a client makes before each request.
    Backends implement :meth:`_reserve`, :meth:`_penalize` and :meth:`_usage`.
    """

    backend = "abstract"

    def __init__(self, rate: float | None = None) -> None:
        self.rate = check_rate(rate) if rate is not None else None
        _LIVE.add(self)

    def _after_fork(self) -> None:
        """In a forked child: new locks (a parent thread may have held one), nothing of the parent's open."""

    def rate_for(self, environment: str) -> float:
        """The calls per second this limiter grants a bucket of ``environment``."""
        return self.rate if self.rate is not None else default_rate(environment)

    def acquire(self, api_key: str, environment: str, timeout: float = DEFAULT_ACQUIRE_TIMEOUT) -> float:
        """Wait for this call's slot; return the seconds waited.

        Raises :class:`RateLimitWaitTimeout` at once when the slot is more than
        ``timeout`` away: the caller sends nothing, and no slot is used up.
        """
        timeout = check_seconds("timeout", timeout)
        rate = self.rate_for(environment)
        bucket = bucket_id(api_key, environment)
        if self.rate is not None:
            warn_if_over_budget(rate, environment)
        deadline = time.monotonic() + timeout
        with self._turn(bucket, deadline) as ours:
            go_at = self._reserve(bucket, rate, max(0.0, deadline - time.monotonic())) if ours else None
            if go_at is None:
                raise RateLimitWaitTimeout(
                    f"the per-second budget of this app key ({rate:g}/s, {self.backend}) has no slot within "
                    f"{timeout:g}s; nothing was sent. Fewer callers, or a longer rate_limit_wait"
                )
            wait = go_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        return max(0.0, wait)

    @contextmanager
    def _turn(self, bucket: str, deadline: float) -> Iterator[bool]:
        """Held from reserving a slot until it comes; yields False if not had by ``deadline``.

        The default holds nothing: every thread reserves at once, first come,
        first served.
        """
        yield True

    def penalize(self, api_key: str, environment: str, seconds: float = PENALTY_SECONDS) -> None:
        """KIS answered ``EGW00201`` anyway (someone outside the limiter spent the budget): pause everyone.

        New slots start ``seconds`` later; several answers within one penalty count once.
        """
        self._penalize(bucket_id(api_key, environment), check_seconds("seconds", seconds))

    def usage(self, api_key: str, environment: str) -> Usage:
        """The rate and the grants of the last second for one app key."""
        return self._usage(bucket_id(api_key, environment), self.rate_for(environment))

    def usage_of(self, bucket: str) -> Usage:
        """:meth:`usage` for a bucket named by :meth:`buckets` (``<key id>.<environment>``).

        For ``kis-token limit``: a shared limiter reads its store or raises, never its fallback.
        """
        environment = bucket.rpartition(".")[2]
        return self._usage(bucket, self.rate_for(environment))

    def probe(self, environment: str, api_key: str | None = None) -> Usage:
        """Check that this limiter's store can be used now, for ``kis-token health``: the budget's usage.

        ``api_key``'s budget, or the store alone when None.  A shared limiter
        really tries its store (a Redis write and read, the state file's safety)
        and raises :class:`~..errors.LimiterStoreUnavailable` saying what is
        wrong (``denied`` for a permission problem) instead of falling back.
        """
        return self.usage(api_key or PROBE_KEY, environment)

    def buckets(self) -> list[str]:
        """The budgets this limiter knows of (for ``kis-token limit``)."""
        return []

    def describe(self) -> str:
        """Where the budget is kept, for ``kis-token health``."""
        return self.backend

    def close(self) -> None:
        """Release what this limiter holds open (``KoreaInvestment.shutdown()`` calls it).

        Nothing by default.  A closed limiter still works: it opens what it needs
        again when next used, so closing a limiter other clients share is safe.
        """

    @abstractmethod
    def _reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        """Reserve the next slot of ``bucket``: when it comes (``time.monotonic()``), or None if beyond ``max_wait``.

        An absolute time, not a delay: the time spent getting the answer is then
        not added to the wait, so calls leave as evenly spaced as they were reserved.
        """

    @abstractmethod
    def _penalize(self, bucket: str, seconds: float) -> None:
        """Push the next free slot of ``bucket`` to ``seconds`` from now, once per penalty."""

    @abstractmethod
    def _usage(self, bucket: str, rate: float) -> Usage:
        """What :meth:`usage` reports for ``bucket``."""


class NoRateLimit(RateLimiter):
    """No budget at all: every call goes at once (``KOREA_INVESTMENT_RATE_LIMIT=off``)."""

    backend = "off"

    def acquire(self, api_key: str, environment: str, timeout: float = DEFAULT_ACQUIRE_TIMEOUT) -> float:
        return 0.0

    def _reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        return time.monotonic()

    def _penalize(self, bucket: str, seconds: float) -> None:
        return None

    def _usage(self, bucket: str, rate: float) -> Usage:
        return Usage(bucket, math.inf, 0, 0.0)

    def rate_for(self, environment: str) -> float:
        return math.inf


@dataclass
class _Bucket:
    tat: float = 0.0
    penalty_until: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_GRANTS))


class ProcessRateLimiter(RateLimiter):
    """The budget shared by the threads of one process (a custom token store's default).

    Also what a shared limiter falls back to while its store cannot be reached.
    """

    backend = "process"

    def __init__(self, rate: float | None = None) -> None:
        super().__init__(rate)
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def buckets(self) -> list[str]:
        with self._lock:
            return sorted(self._buckets)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _bucket(self, bucket: str) -> _Bucket:
        state = self._buckets.get(bucket)
        if state is None:
            state = self._buckets[bucket] = _Bucket()
        return state

    def _reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        with self._lock:
            state = self._bucket(bucket)
            now = time.monotonic()
            granted = reserve(state.tat, now, 1.0 / rate, max_wait)
            if granted is None:
                return None
            slot, state.tat = granted
            state.recent.append(slot)
            return slot

    def _penalize(self, bucket: str, seconds: float) -> None:
        with self._lock:
            state = self._bucket(bucket)
            now = time.monotonic()
            if now >= state.penalty_until:
                state.penalty_until = now + seconds
                state.tat = max(state.tat, now) + seconds

    def _usage(self, bucket: str, rate: float) -> Usage:
        with self._lock:
            state = self._bucket(bucket)
            now = time.monotonic()
            used = sum(1 for slot in state.recent if now - 1.0 < slot <= now)
            return Usage(bucket, rate, used, max(0.0, state.tat - now))


class SharedRateLimiter(RateLimiter):
    """A limiter whose budget lives in a shared store (a file, Redis), with a fallback when it cannot.

    While the store cannot be used, callers spend :data:`FALLBACK_SHARE` of the
    budget in the fallback limiter (:meth:`_new_fallback`; one warning), and try
    the store again after :data:`FALLBACK_RETRY_SECONDS`.  No caller waits on a
    store that is down longer than that store's own timeouts.
    """

    #: The share of the rate the fallback spends.  A fallback that is itself a shared limiter is
    #: given the reduced rate already, and passes it on whole to its own fallback.
    fallback_share = FALLBACK_SHARE

    def __init__(self, rate: float | None = None) -> None:
        super().__init__(rate)
        self._fallback = self._new_fallback()
        self._fallback_until = 0.0
        self._fallback_warned = False
        self._turns: dict[str, FairLock] = {}
        self._turns_guard = threading.Lock()

    def _after_fork(self) -> None:
        self._turns, self._turns_guard = {}, threading.Lock()
        self._fallback._after_fork()

    def close(self) -> None:
        self._fallback.close()

    def _new_fallback(self) -> RateLimiter:
        """What callers spend while the store cannot be used: this process's own share, by default."""
        return ProcessRateLimiter()

    @contextmanager
    def _turn(self, bucket: str, deadline: float) -> Iterator[bool]:
        """One slot in the shared store at a time per process: processes take turns, not threads.

        Without it a process's threads each hold a slot far ahead, and the share
        of a process depends on how its threads happened to line up.  With it,
        each process waits behind at most one slot of every other process, so
        processes and servers share the budget evenly, and a pause after an
        ``EGW00201`` reaches everyone within one slot.  The threads of a process
        get their turns in the order they asked (:class:`FairLock`).
        """
        with self._turns_guard:
            turn = self._turns.get(bucket)
            if turn is None:
                turn = self._turns[bucket] = FairLock()
        if not turn.acquire(deadline):
            yield False
            return
        try:
            yield True
        finally:
            turn.release()

    def _reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        if not self._falling_back():
            try:
                return self._shared_reserve(bucket, rate, max_wait)
            except LimiterStoreUnavailable as exc:
                self._fall_back(exc)
        return self._fallback._reserve(bucket, rate * self.fallback_share, max_wait)

    def _penalize(self, bucket: str, seconds: float) -> None:
        if not self._falling_back():
            try:
                self._shared_penalize(bucket, seconds)
                return
            except LimiterStoreUnavailable as exc:
                self._fall_back(exc)
        self._fallback._penalize(bucket, seconds)

    def _usage(self, bucket: str, rate: float) -> Usage:
        if not self._falling_back():
            try:
                return self._shared_usage(bucket, rate)
            except LimiterStoreUnavailable as exc:
                self._fall_back(exc)
        return self._fallback._usage(bucket, rate * self.fallback_share)

    def usage_of(self, bucket: str) -> Usage:
        environment = bucket.rpartition(".")[2]
        return self._shared_usage(bucket, self.rate_for(environment))

    def probe(self, environment: str, api_key: str | None = None) -> Usage:
        bucket = bucket_id(api_key or PROBE_KEY, environment)
        return self._shared_probe(bucket, self.rate_for(environment))

    @property
    def falling_back(self) -> bool:
        """True while this process spends its fallback share instead of the shared budget."""
        return self._falling_back()

    def _falling_back(self) -> bool:
        return time.monotonic() < self._fallback_until

    def _fall_back(self, exc: LimiterStoreUnavailable) -> None:
        self._fallback_until = time.monotonic() + FALLBACK_RETRY_SECONDS
        if not self._fallback_warned:
            self._fallback_warned = True
            share = self.fallback_share
            kept = f"{round(share * 100)}% of the budget" if share < 1 else "the same share of the budget"
            logging.getLogger(type(self).__module__).warning(
                "the shared rate limit at %s cannot be used (%s); until it can, callers keep to %s, counted in "
                "%s, and try the shared one again every %gs",
                self.describe(),
                exc,
                kept,
                self._fallback.describe(),
                FALLBACK_RETRY_SECONDS,
            )

    @abstractmethod
    def _shared_reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        """:meth:`_reserve` in the shared store; :class:`LimiterStoreUnavailable` when it cannot."""

    @abstractmethod
    def _shared_penalize(self, bucket: str, seconds: float) -> None:
        """:meth:`_penalize` in the shared store."""

    @abstractmethod
    def _shared_usage(self, bucket: str, rate: float) -> Usage:
        """:meth:`_usage` from the shared store."""

    def _shared_probe(self, bucket: str, rate: float) -> Usage:
        """:meth:`probe` in the shared store: by default, a read of the budget."""
        return self._shared_usage(bucket, rate)


#: Every limiter of this process, so that a forked child can give each new locks.
_LIVE: weakref.WeakSet[RateLimiter] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for limiter in list(_LIVE):
        limiter._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
