"""In-process single flight: one leader thread per store and credential, followers share its outcome.

Only the leader talks to the backend, so backend load grows with processes, not
threads.  Three rules keep the sharing honest:

- **One flight per key, whatever each caller considers stale.**  A forced
  refresh (``stale=<token>``) and an ordinary caller join the same flight; the
  stale tokens of every member are visible to the leader through
  :meth:`Flight.is_stale`, and a follower that still receives its own stale
  token simply goes round again.  Two flights for one key would mean two
  tokenP calls from one process.
- **Errors belong to their thread.**  Each follower raises its own copy of the
  leader's exception, chained to it, so tracebacks do not grow with every
  re-raise and no two threads mutate one exception object.
- **A deadline is the caller's own.**  A leader that gave up because *its*
  deadline ran out (``TokenRateLimitedError``, ``TokenWaitTimeout``) does not
  end the wait of a follower whose own deadline is later (by a second or
  more): that follower goes round and leads.  Any other failure (bad credentials, KIS's error answer)
  is the followers' own too: the one call was made on their behalf.
- **A ``BaseException`` stays where it was raised.**  ``KeyboardInterrupt`` or
  ``SystemExit`` in the leader ends the leader's thread only; its followers
  take the flight over instead of being interrupted themselves.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import TokenError, TokenRateLimitedError, TokenWaitTimeout

T = TypeVar("T")

#: Failures that say a leader's own time ran out, not that the token cannot be had.
DEADLINE_ERRORS = (TokenRateLimitedError, TokenWaitTimeout)
#: For a follower: until when (``time.monotonic()``) it would itself have kept trying after
#: such a failure, or None when the failure is its own too.
RetryUntil = Callable[[Exception], "float | None"]
#: A follower goes round on a leader's deadline only with at least this much of its own left:
#: one that asked a moment after a leader with the same deadline would only repeat a hopeless try.
MIN_RETRY_SECONDS = 1.0


@dataclass(eq=False)
class Flight(Generic[T]):
    """One leader's run, as its members see it."""

    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: Exception | None = None
    abandoned: bool = False  # the leader left with a BaseException: someone else must lead
    #: The leader got its result from the issuer itself (tokenP), not from the store.  KIS
    #: hands the same token back within hours, so such a result is current even when a
    #: member called it stale: going round would only call tokenP again.
    issued: bool = False
    stale: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def is_stale(self, access_token: str) -> bool:
        """True when any member of this flight asked for ``access_token`` to be replaced."""
        with self._lock:
            return access_token in self.stale

    def _join(self, stale: str | None) -> None:
        if stale is not None:
            with self._lock:
                self.stale.add(stale)


class SingleFlight(Generic[T]):
    """Deduplicate concurrent requests per key within this process.

    Results are compared with a caller's ``stale`` value through their
    ``access_token`` attribute (a :class:`~.record.TokenRecord`'s).

    State is reset in a forked child: a flight whose leader thread lived in the
    parent would never finish in the child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight[T]] = {}
        #: Per key, the last result the issuer itself gave and when (monotonic).
        self._issued: dict[Hashable, tuple[T, float]] = {}
        # Bound method kept by the fork hook; the instance lives as long as the module.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._flights = {}
        self._issued = {}

    def run(
        self,
        key: Hashable,
        lead: Callable[[Flight[T]], T],
        follower_timeout: float,
        *,
        stale: str | None = None,
        retry_until: RetryUntil | None = None,
    ) -> T:
        """The token for ``key``, running ``lead`` once for all concurrent callers.

        ``stale`` is this caller's token to replace (or None); a result equal to
        it is not accepted, and the caller goes round again.  ``follower_timeout``
        bounds how long this caller waits for other threads in all.
        ``retry_until`` says, for a leader's :data:`DEADLINE_ERRORS`, until when
        this caller's own deadline runs: before then it goes round instead of
        failing with the leader.
        """
        asked = time.monotonic()
        deadline = asked + follower_timeout
        while True:
            with self._lock:
                issued = self._issued.get(key)
                if (
                    stale is not None
                    and issued is not None
                    and issued[1] >= asked
                    and getattr(issued[0], "access_token", None) == stale
                ):
                    # The issuer answered our stale token after we asked: KIS says it is
                    # current (the same token within hours), so this refresh is done.
                    return issued[0]
                flight = self._flights.get(key)
                leading = flight is None
                if flight is None:
                    flight = self._flights[key] = Flight[T]()
                flight._join(stale)
            if leading:
                return self._lead(key, flight, lead)
            if not flight.done.wait(max(0.0, deadline - time.monotonic())):
                raise TokenWaitTimeout(
                    f"waited {follower_timeout:.1f}s for another thread of this process to obtain the token; "
                    "retry, and check the KIS host and the token store if it keeps happening"
                )
            if flight.abandoned:
                continue  # the leader was interrupted: this thread may lead now
            if flight.error is not None:
                if _outlives(flight.error, retry_until):
                    continue  # the leader's own deadline ran out; ours has not
                raise _own_copy(flight.error) from flight.error
            result = flight.result
            if stale is not None and not flight.issued and getattr(result, "access_token", None) == stale:
                continue  # joined after the leader read the store: ask again, with our stale token known
            return result  # type: ignore[return-value]  # a finished, unabandoned flight without error has one

    def _lead(self, key: Hashable, flight: Flight[T], lead: Callable[[Flight[T]], T]) -> T:
        try:
            flight.result = lead(flight)
            if flight.issued:
                with self._lock:
                    self._issued[key] = (flight.result, time.monotonic())
            return flight.result
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.abandoned = True
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()


def _outlives(error: Exception, retry_until: RetryUntil | None) -> bool:
    """True when ``error`` was a leader's own deadline and this caller's deadline is still ahead."""
    if retry_until is None or not isinstance(error, DEADLINE_ERRORS):
        return False
    until = retry_until(error)
    return until is not None and until - time.monotonic() >= MIN_RETRY_SECONDS


def _own_copy(error: Exception) -> Exception:
    """A fresh instance of ``error`` for one follower (same class, message and attributes)."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception class copy cannot rebuild: say what happened, keep the class family
        return TokenError(f"another thread's attempt to obtain the token failed: {type(error).__name__}: {error}")
    clone.__traceback__ = None
    clone.__cause__ = None
    clone.__context__ = None
    return clone
