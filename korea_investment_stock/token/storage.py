"""``TokenStorage``: the four 0.6.x methods plus the single-flight issuance path.

How one token gets issued once, whatever the number of callers:

1. :meth:`TokenStorage.get_token` joins the in-process flight
   (:class:`~.flight.SingleFlight`): one thread per process, store and key
   leads; the others wait for its result or error.
2. The leader runs :meth:`TokenStorage._lead`: read the store (fast path, no
   cross-process lock) and return a valid token at once.
3. On a miss: take the backend's cross-process lock (a hook), read again,
   call tokenP, save, release.

A storage that implements only the four abstract methods still gets steps 1-2:
single flight within the process.  Backends override the ``_``-prefixed hooks
to add cross-process locking and cheaper reads.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import ConfigurationError, TokenRateLimitedError, TokenWaitTimeout
from .flight import SingleFlight
from .record import DEFAULT_REFRESH_MARGIN, TokenRecord, credential_fingerprint

logger = logging.getLogger(__name__)

#: How long the leader keeps retrying tokenP while KIS answers ``EGW00133``.
#: One issuance window is 60 s; a little more lets a window opened by someone
#: else close, then succeed, instead of failing a caller a second too early.
DEFAULT_ISSUE_DEADLINE = 70.0

#: How long a caller waits for a peer that holds the issuance lock.  A lock
#: holder is itself bounded by the issue deadline plus HTTP timeouts.
DEFAULT_WAIT_TIMEOUT = 90.0

IssueFn = Callable[[], TokenRecord]

_FLIGHTS: SingleFlight[TokenRecord] = SingleFlight()

#: Handle returned by the default lock hook: "no cross-process lock, go ahead".
NO_LOCK: Any = object()


class TokenStorage(ABC):
    """Where access tokens live, and how callers agree on issuing one.

    Subclasses must implement :meth:`save_token`, :meth:`load_token`,
    :meth:`check_token_valid` and :meth:`delete_token` (the 0.6.x contract).
    Everything else has a working default.

    Settings are class attributes so that a subclass which never calls
    ``super().__init__()`` still works; :meth:`__init__` overrides them per
    instance.
    """

    refresh_margin: float = DEFAULT_REFRESH_MARGIN
    issue_deadline: float = DEFAULT_ISSUE_DEADLINE
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT

    def __init__(
        self,
        *,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
    ) -> None:
        for name, value in (
            ("refresh_margin", refresh_margin),
            ("issue_deadline", issue_deadline),
            ("wait_timeout", wait_timeout),
        ):
            if value is not None:
                setattr(self, name, check_seconds(name, value))

    # ------------------------------------------------------------------ 0.6.x API
    @abstractmethod
    def save_token(self, token_data: dict[str, Any]) -> bool:
        """Store a token given in the 0.6.x dict shape; True when stored."""

    @abstractmethod
    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        """The stored token for this key and secret in the 0.6.x dict shape, or None."""

    @abstractmethod
    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        """True when a token for this key and secret is stored and not about to expire."""

    @abstractmethod
    def delete_token(self, api_key: str, api_secret: str) -> bool:
        """Forget the token for this key; True when something was deleted."""

    # ------------------------------------------------------------ the single flight
    def get_token(self, api_key: str, api_secret: str, issue: IssueFn, *, stale: str | None = None) -> TokenRecord:
        """A valid token for this key, calling ``issue`` only if nobody else can.

        ``issue`` performs the tokenP request and returns the new record; it is
        called at most once per miss across everything that shares this store.
        ``stale`` names a token the caller wants replaced (a forced refresh): a
        stored token equal to it counts as missing, so the flight issues a new
        one, while a different valid token (a peer's refresh) is used as is.
        The stale token stays readable for everyone else meanwhile.
        """
        # Even the fast path goes through the flight: threads of one process that ask at
        # the same moment share one store read, so store load grows with processes, not
        # threads.  The fingerprint keeps callers with another secret for the same key out
        # of this flight: they must neither receive its token nor its credential error.
        return _FLIGHTS.run(
            (self._flight_scope(), api_key, credential_fingerprint(api_key, api_secret), stale),
            lambda: self._lead(api_key, api_secret, issue, stale),
            follower_timeout=self.wait_timeout + self.issue_deadline + 30.0,
        )

    def invalidate_token(self, api_key: str, api_secret: str, access_token: str) -> bool:
        """Delete the stored token only if it is still ``access_token``.

        A thousand callers that saw the same dead token thus delete it once, and
        none of them deletes the fresh token that replaced it.
        """
        return self._compare_and_delete(api_key, api_secret, access_token)

    def _lead(self, api_key: str, api_secret: str, issue: IssueFn, stale: str | None = None) -> TokenRecord:
        """The leader's path: read, lock, double-check, issue, save, release."""
        record = self._read_valid(api_key, api_secret, stale)
        if record is not None:
            logger.debug("token cache hit")
            return record
        deadline = time.monotonic() + self.wait_timeout
        while True:
            handle = self._acquire_issue_lock(api_key, deadline)
            if handle is None:
                record = self._read_valid(api_key, api_secret, stale)  # something changed while waiting
                if record is not None:
                    return record
                continue
            failure: BaseException | None = None
            try:
                record = self._read_valid(api_key, api_secret, stale)
                if record is not None:
                    return record
                record = self._issue_within_deadline(api_key, api_secret, issue, stale=stale)
                logger.info("issued a new access token (expires %s KST)", record.expired_text)
                try:
                    saved = self._save_issued(record, api_secret, handle)
                except Exception as exc:  # KIS already issued it: losing it would cost an EGW00133 minute
                    logger.warning(
                        "the new token could not be stored (%s); using it in this process only", type(exc).__name__
                    )
                else:
                    if not saved:
                        logger.warning("the new token could not be stored; using it in this process only")
                return record
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._release_issue_lock(api_key, handle, failure)

    def _issue_within_deadline(
        self, api_key: str, api_secret: str, issue: IssueFn, *, stale: str | None = None
    ) -> TokenRecord:
        """Call ``issue``; while KIS says "one per minute", re-read the store and back off.

        A valid stored token ends the wait, unless it is ``stale`` (the token a
        forced refresh is replacing).
        """
        deadline = time.monotonic() + self.issue_deadline
        delay = 1.0
        while True:
            try:
                return issue()
            except TokenRateLimitedError as exc:
                record = self._read_valid(api_key, api_secret, stale)
                if record is not None:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TokenRateLimitedError(
                        "KIS allows one token issuance per minute per app key (EGW00133) and kept "
                        f"refusing for {self.issue_deadline:.0f}s; no other caller stored a token "
                        "meanwhile. Wait a minute, or check for another program using this app key.",
                        code=exc.code,
                        status=exc.status,
                    ) from None
                pause = min(remaining, delay * random.uniform(0.8, 1.2))
                logger.info("tokenP answered EGW00133 (one per minute); retrying in %.1fs", pause)
                time.sleep(pause)
                record = self._read_valid(api_key, api_secret, stale)  # a peer may have stored one meanwhile
                if record is not None:
                    return record
                delay = min(delay * 2, 10.0)

    def _read_valid(self, api_key: str, api_secret: str, stale: str | None = None) -> TokenRecord | None:
        """The stored token if it is valid and not ``stale``, else None."""
        record = self._read_record(api_key, api_secret)
        if record is not None and record.is_valid(self.refresh_margin) and record.access_token != stale:
            return record
        return None

    # ------------------------------------------------------------------ the hooks
    def _flight_scope(self) -> Hashable:
        """What identifies the underlying store, so instances sharing it share a flight."""
        return id(self)

    def _read_record(self, api_key: str, api_secret: str) -> TokenRecord | None:
        """The stored record for this key and secret (valid or not), or None."""
        data = self.load_token(api_key, api_secret)
        if not data:
            return None
        try:
            return TokenRecord.from_legacy_dict(data)
        except ValueError:
            logger.warning("%s.load_token returned a malformed token; ignoring it", type(self).__name__)
            return None

    def _acquire_issue_lock(self, api_key: str, deadline: float) -> Any:
        """Take the cross-process issuance lock before ``deadline`` (monotonic).

        Return a handle when the lock is held, or None when the store may have
        changed and should be read again.  Raise :class:`TokenWaitTimeout` at
        the deadline.  The default has no cross-process lock.
        """
        if time.monotonic() > deadline:
            raise TokenWaitTimeout(
                f"gave up waiting for the token issuance lock after {self.wait_timeout:.0f}s; "
                "retry, or raise wait_timeout if issuance is slow"
            )
        return NO_LOCK

    def _release_issue_lock(self, api_key: str, handle: Any, failure: BaseException | None) -> None:
        """Release what :meth:`_acquire_issue_lock` returned; ``failure`` is the issue error, if any."""

    def _save_issued(self, record: TokenRecord, api_secret: str, handle: Any) -> bool:
        """Store a freshly issued record while holding the lock ``handle``."""
        with key_lock(self._flight_scope(), record.api_key):
            return self.save_token(record.to_legacy_dict(api_secret))

    def _compare_and_delete(self, api_key: str, api_secret: str, access_token: str) -> bool:
        """Delete only if the stored token is ``access_token``.

        The default compares then deletes in two steps; backends make it atomic.
        Within this process the two steps and the default save share a lock, so
        a delete never lands on a token saved between the compare and the delete.
        """
        with key_lock(self._flight_scope(), api_key):
            record = self._read_record(api_key, api_secret)
            if record is None or record.access_token != access_token:
                return False
            return self.delete_token(api_key, api_secret)


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as float seconds, or :class:`ConfigurationError`.

    Every setting that bounds a wait goes through here: NaN would make every
    token look expired and infinity would make a wait endless.  ``positive``
    also refuses 0, for settings that are divided or slept in a loop.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"{name} must be a finite, non-negative number of seconds, got {value!r}")
    if positive and value == 0:
        raise ConfigurationError(f"{name} must be more than 0 seconds, got {value!r}")
    return float(value)


#: Striped locks that make a save and a compare-and-delete of one key exclusive
#: within this process: a fixed pool, so short-lived storages and many app keys
#: cost nothing; collisions only serialise.
_KEY_LOCK_STRIPES = 64
_KEY_LOCKS = [threading.RLock() for _ in range(_KEY_LOCK_STRIPES)]


def key_lock(scope: Hashable, api_key: str) -> threading.RLock:
    """The in-process lock for ``api_key`` in the store ``scope`` (see :meth:`TokenStorage._flight_scope`).

    Held only around one save or one compare-and-delete (bounded by the store's
    own I/O timeouts), never while waiting for a peer, so it needs no timeout
    of its own.  Reset in a forked child.
    """
    return _KEY_LOCKS[hash((scope, api_key)) % _KEY_LOCK_STRIPES]


def _reset_key_locks() -> None:  # a lock held by a parent thread would never be released in the child
    _KEY_LOCKS[:] = [threading.RLock() for _ in range(_KEY_LOCK_STRIPES)]


os.register_at_fork(after_in_child=_reset_key_locks)
