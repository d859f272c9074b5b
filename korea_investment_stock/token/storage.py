"""``TokenStorage``: the four 0.6.x methods plus the single-flight issuance path.

How one token gets issued once, whatever the number of callers:

1. :meth:`TokenStorage.token_for` joins the in-process flight
   (:class:`~.flight.SingleFlight`): one thread per process, store and
   credential leads; the others wait for its result or error.
2. The leader runs :meth:`TokenStorage._lead`: read the store (fast path, no
   cross-process lock) and return a valid token at once.
3. On a miss: open an :class:`~.lease.IssuanceLease` (the backend's
   cross-process lock) in a ``with`` block, acquire it, read again, call
   tokenP while the lease is still held, save fenced, release.

Faults in the store are ridden out, not passed on: every store operation of
the leader retries :class:`~..errors.StorageUnavailableError` with backoff for
``outage_allowance`` seconds (a store that never answered this process still
fails at once: that is a wrong URL, not an outage).  A token KIS issued is
never thrown away: when its save fails, the leader's process uses it at once
and a background thread keeps trying to store it for the fleet.

A storage that implements only the four abstract methods still gets steps 1-3
with a :class:`~.lease.ProcessLease`: single flight within the process.
Backends override the ``_``-prefixed hooks to add cross-process leases and
cheaper reads.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from ..errors import (
    LeaseLost,
    StorageError,
    StorageUnavailableError,
    TokenError,
    TokenRateLimitedError,
    TokenWaitTimeout,
)
from ..transport import DEFAULT_TIMEOUT, call_seconds
from ..validation import check_seconds
from .credentials import Credentials
from .flight import Flight, SingleFlight
from .lease import Acquired, IssuanceLease, ProcessLease, SaveOutcome
from .record import DEFAULT_REFRESH_MARGIN, TokenRecord, key_id
from .status import Refreshed, StorageDescription, StorageHealth, TokenStatus

if TYPE_CHECKING:  # the host copy is a file store, which builds on this module
    from .hostcopy import HostCopy

logger = logging.getLogger(__name__)

#: How long the leader keeps retrying tokenP while KIS answers ``EGW00133``.
#: One issuance window is 60 s; a little more lets a window opened by someone
#: else close, then succeed, instead of failing a caller a second too early.
DEFAULT_ISSUE_DEADLINE = 70.0

#: How long a caller waits for a peer that holds the issuance lease.  A lease
#: holder is itself bounded by the issue deadline plus HTTP timeouts.
DEFAULT_WAIT_TIMEOUT = 90.0

#: How long a caller keeps retrying a store that answered before and stopped
#: answering.  A Redis restart takes about a second; a Sentinel failover takes
#: ``down-after-milliseconds`` plus an election, 10-15 s with common settings.
DEFAULT_OUTAGE_ALLOWANCE = 20.0

#: Backoff between two tries of an unavailable store: short first, so a blip
#: costs milliseconds, capped so that callers notice a healed store quickly.
OUTAGE_FIRST_DELAY = 0.05
OUTAGE_MAX_DELAY = 0.5
#: Longest pause between two tries to save a host's kept token for the fleet.
PROMOTION_MAX_DELAY = 1.0

#: While the store cannot answer, a kept token (this process's, the host's, the caller's own)
#: is used until this close to its real expiry: KIS still accepts it, where the refresh
#: margin would fail the call.  It covers one call's total deadline with room to spare.
LAST_RESORT_MARGIN = 30.0

#: How long one tokenP call may take when the issue function does not say
#: (a :class:`~.issuer.TokenIssuer` does: its ``call_seconds``).
DEFAULT_CALL_SECONDS = call_seconds(DEFAULT_TIMEOUT)

#: How long past the issue deadline and its last tokenP call an issuance lease may still be
#: held: the fenced save riding a short outage, with room to spare.  A hung holder (a custom
#: issue function that never returns) loses it then.
HOLD_SLACK = 15.0

IssueFn = Callable[[], TokenRecord]
R = TypeVar("R")


def issue_call_seconds(issue: IssueFn) -> float:
    """The longest one call of ``issue`` may take: its own ``call_seconds``, its owner's, or the default."""
    for owner in (issue, getattr(issue, "__self__", None)):
        seconds = getattr(owner, "call_seconds", None)
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
            return float(seconds)
    return DEFAULT_CALL_SECONDS


_FLIGHTS: SingleFlight[TokenRecord] = SingleFlight()
#: :meth:`TokenStorage.find_token`'s flights: looks that never issue, shared like the others.
_LOOKUPS: SingleFlight[TokenRecord | None] = SingleFlight()
_SCOPE_NUMBERS = itertools.count()


class TokenStorage(ABC):
    """Where access tokens live, and how callers agree on issuing one.

    Subclasses must implement :meth:`save_token`, :meth:`load_token`,
    :meth:`check_token_valid` and :meth:`delete_token` (the 0.6.x contract).
    Everything else has a working default.

    Settings are class attributes so that a subclass which never calls
    ``super().__init__()`` still works; :meth:`__init__` overrides them per
    instance.

    Args:
        refresh_margin: a token this close to expiry (seconds) counts as expired.
        issue_deadline: how long the leader retries tokenP while KIS says "one per minute".
        wait_timeout: how long a caller waits for a peer holding the issuance lease.
        outage_allowance: how long a caller retries a store that stopped answering.
    """

    refresh_margin: float = DEFAULT_REFRESH_MARGIN
    issue_deadline: float = DEFAULT_ISSUE_DEADLINE
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    outage_allowance: float = DEFAULT_OUTAGE_ALLOWANCE

    def __init__(
        self,
        *,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
        outage_allowance: float | None = None,
    ) -> None:
        for name, value in (
            ("refresh_margin", refresh_margin),
            ("issue_deadline", issue_deadline),
            ("wait_timeout", wait_timeout),
            ("outage_allowance", outage_allowance),
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
        credentials = Credentials(api_key, api_secret)
        del api_secret  # only the Credentials value holds it from here on
        return self.token_for(credentials, issue, stale=stale)

    def token_for(
        self,
        credentials: Credentials,
        issue: IssueFn,
        *,
        stale: str | None = None,
        fallback: TokenRecord | None = None,
    ) -> TokenRecord:
        """:meth:`get_token` for a caller that already holds a :class:`~.credentials.Credentials`.

        ``fallback`` is the token the caller holds now (one in its refresh margin):
        while the store cannot answer, it is used as long as it has not really
        expired, instead of failing a call that KIS would still accept.
        """
        # Even the fast path goes through the flight: threads of one process that ask at
        # the same moment share one store read, so store load grows with processes, not
        # threads.  The fingerprint keeps callers with another secret for the same key out
        # of this flight: they must neither receive its token nor its credential error.
        # ``stale`` is not part of the key: a forced refresh and an ordinary caller share
        # one flight (two flights would be two tokenP calls from one process).
        asked = time.monotonic()

        def retry_until(error: Exception) -> float:  # a leader's deadline ran out: when would ours?
            return asked + (self.issue_deadline if isinstance(error, TokenRateLimitedError) else self.wait_timeout)

        return _FLIGHTS.run(
            (self._flight_scope(), credentials.api_key, credentials.fingerprint),
            lambda flight: self._lead(credentials, issue, flight, fallback),
            follower_timeout=self.wait_timeout + self.issue_deadline + 30.0,
            stale=stale,
            retry_until=retry_until,
        )

    def find_token(self, credentials: Credentials) -> TokenRecord | None:
        """The fast path alone: a valid token this process can use for ``credentials``, or None.

        What :meth:`token_for` does before it would issue: one store read shared by the
        threads of this process, outages ridden out, and while the store does not answer
        a token kept in this process or on this host.  It never takes a lease and never
        issues, so a caller can decide what a miss means: ``KoreaInvestment`` calls its
        ``issue_access_token()`` (0.6.1 code patches or overrides it), which runs
        :meth:`token_for`, whose flight reads again under the lease before tokenP.
        """

        def lead(flight: Flight[TokenRecord | None]) -> TokenRecord | None:
            members = cast("Flight[TokenRecord]", flight)  # only its stale tokens are read
            outage = _OutageClock(self, lambda: self._kept_in_outage(credentials, members, None))
            try:
                return self._look(credentials, members, outage)
            except _Kept as kept:
                return kept.record

        return _LOOKUPS.run(
            (self._flight_scope(), credentials.api_key, credentials.fingerprint),
            lead,
            follower_timeout=self.wait_timeout + 30.0,
        )

    def stored_record(self, api_key: str, api_secret: str) -> TokenRecord | None:
        """The stored token for this key and secret as a record, valid or not, or None (for tools)."""
        credentials = Credentials(api_key, api_secret)
        del api_secret
        return self._read_record(credentials)

    def refresh(self, credentials: Credentials, issue: IssueFn, *, replacing: str | None) -> Refreshed:
        """Force a new token in place of ``replacing``: the one forced-refresh path.

        Runs the single flight with ``replacing`` marked stale, so many callers
        refreshing at once make one issuance, and a caller whose view is out of
        date adopts the token a peer just stored instead of replacing it again.
        The old token stays readable for everyone else until the new one is
        stored (it is still valid; deleting it first would only make peers wait).
        """
        noting = _NotingIssue(issue)
        record = self.token_for(credentials, noting, stale=replacing)
        return Refreshed(record, issued_here=bool(noting.issued) and record is noting.issued[-1])

    # ------------------------------------------------------------------ for tools
    def describe(self) -> StorageDescription:
        """Which backend this is and where it keeps tokens; never includes a password."""
        return StorageDescription(type(self).__name__, type(self).__module__)

    def status(self, api_key: str, api_secret: str, *, now: float | None = None) -> TokenStatus:
        """What is stored for this key and secret, masked.  Only reads: never calls KIS, never issues."""
        credentials = Credentials(api_key, api_secret)
        del api_secret
        record = self._read_record(credentials)
        return TokenStatus.of(record, credentials, self.describe(), self.refresh_margin, now)

    def health_check(self) -> StorageHealth:
        """Time one read of the store; an outage is reported, not raised."""
        location = self.describe().location
        started = time.perf_counter()
        try:
            self.load_token("health-check", "health-check")
        except Exception as exc:
            return StorageHealth(False, None, location, error=f"{type(exc).__name__}: {exc}")
        return StorageHealth(True, (time.perf_counter() - started) * 1000.0, location, detail="readable")

    def invalidate_token(self, api_key: str, api_secret: str, access_token: str) -> bool:
        """Delete the stored token only if it is still ``access_token``.

        A thousand callers that saw the same dead token thus delete it once, and
        none of them deletes the fresh token that replaced it.
        """
        credentials = Credentials(api_key, api_secret)
        del api_secret
        # Also from this process's unsaved tokens and the host's copy: a dead token must not come back.
        _PENDING.forget(self._flight_scope(), credentials.api_key, access_token)
        host = self._host_copy()
        if host is not None:
            host.forget(credentials, access_token)
        return self._compare_and_delete(credentials, access_token)

    def _lead(
        self,
        credentials: Credentials,
        issue: IssueFn,
        flight: Flight[TokenRecord],
        fallback: TokenRecord | None = None,
    ) -> TokenRecord:
        """The leader's path: read, lease, double-check, issue while held, save, release.

        Whenever the store does not answer, a token kept in this process or on
        this host (or the caller's ``fallback``) that has not really expired
        ends the leader's path at once (:meth:`_kept_in_outage`).
        """
        outage = _OutageClock(self, lambda: self._kept_in_outage(credentials, flight, fallback))
        try:
            return self._lead_online(credentials, issue, flight, outage)
        except _Kept as kept:
            return kept.record

    def _lead_online(
        self, credentials: Credentials, issue: IssueFn, flight: Flight[TokenRecord], outage: _OutageClock
    ) -> TokenRecord:
        """:meth:`_lead` while the store answers (``outage`` raises :class:`_Kept` when it stops)."""
        record = self._look(credentials, flight, outage)
        if record is not None:
            logger.debug("token cache hit")
            return record
        deadline = time.monotonic() + self.wait_timeout
        # The lease must outlive the issuance: every EGW00133 retry, then one more whole tokenP call.
        hold = self.issue_deadline + issue_call_seconds(issue) + HOLD_SLACK
        while True:
            with self._new_lease(credentials) as lease:
                lease.hold_seconds = hold
                if outage.ride(lambda: lease.acquire(deadline)) is Acquired.LOOK_AGAIN:
                    record = self._look(credentials, flight, outage)  # something changed while waiting
                    if record is not None:
                        return record
                    continue
                record = self._look(credentials, flight, outage)
                if record is not None:
                    return record
                kept = self._kept_on_host(credentials, flight)
                if kept is not None:  # issued here while the store could not take it: save it for the fleet
                    logger.info("storing the token this host kept (expires %s KST) for the fleet", kept.expired_text)
                    self._store_issued(kept, lease)
                    return kept
                try:
                    record, fresh = self._issue_while_held(credentials, issue, flight, lease, outage)
                except LeaseLost:
                    logger.warning("lost the token issuance lease before a tokenP call; reading the store again")
                    continue
                if not fresh:
                    return record  # a peer's token, found while KIS said "one per minute"
                flight.issued = True
                logger.info("issued a new access token (expires %s KST)", record.expired_text)
                self._store_issued(record, lease)
                return record

    def _issue_while_held(
        self,
        credentials: Credentials,
        issue: IssueFn,
        flight: Flight[TokenRecord],
        lease: IssuanceLease,
        outage: _OutageClock,
    ) -> tuple[TokenRecord, bool]:
        """Call ``issue`` while ``lease`` is held: ``(record, True)`` when tokenP gave it.

        While KIS says "one per minute" (``EGW00133``), re-read the store and
        back off within the issue deadline; a valid stored token that no member
        of the flight called stale ends the wait as ``(record, False)``.  The
        lease is asked before every tokenP call: a lost lease raises
        :class:`LeaseLost` instead of issuing beside its new holder.
        """
        deadline = time.monotonic() + self.issue_deadline
        delay = 1.0
        while True:
            if not outage.ride(lease.held):
                raise LeaseLost
            try:
                return issue(), True
            except TokenRateLimitedError as exc:
                record = self._look(credentials, flight, outage)
                if record is not None:
                    return record, False
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
                if delay == 1.0:  # the first refusal of this issuance: say once why we wait, and how long at most
                    logger.warning(
                        "KIS answered EGW00133: it issues one token per minute per app key, and another caller "
                        "got one within the last minute; retrying until it answers, for up to %.0fs",
                        remaining,
                    )
                logger.info("tokenP answered EGW00133 (one per minute); retrying in %.1fs", pause)
                time.sleep(pause)
                record = self._look(credentials, flight, outage)  # a peer may have stored one meanwhile
                if record is not None:
                    return record, False
                delay = min(delay * 2, 10.0)

    def _store_issued(self, record: TokenRecord, lease: IssuanceLease) -> None:
        """Save a token KIS just issued; if the store cannot take it now, keep it and keep trying.

        The caller gets the token either way: losing it would cost the fleet an
        ``EGW00133`` minute and the account holder one more alert.  It goes to
        the host's copy first, so it outlives this process whatever the store does.
        """
        host = self._host_copy()
        if host is not None:
            host.keep(record)
        try:
            outcome = lease.save(record)
        except StorageUnavailableError as exc:
            _PENDING.keep(self._flight_scope(), record)
            lease.hand_off()
            try:
                _BackgroundSave(self, record, lease).start()
            except RuntimeError:  # no new threads (interpreter shutdown): release as the with block would
                lease.release_handed_off()
                logger.warning("the new token could not be stored (%s); using it in this process only", exc)
                return
            logger.warning(
                "the new token could not be stored (%s); using it in this process and storing it "
                "as soon as the store answers",
                exc,
            )
            return
        except Exception as exc:  # a custom store's own error: KIS issued it all the same, keep it
            _PENDING.keep(self._flight_scope(), record)
            reason = str(exc) if isinstance(exc, StorageError) else type(exc).__name__  # ours are scrubbed
            logger.warning("the new token could not be stored (%s); using it in this process only", reason)
            return
        if outcome is SaveOutcome.NOT_STORED:  # LOCAL: the store keeps it in this process itself
            _PENDING.keep(self._flight_scope(), record)
        if outcome in (SaveOutcome.LOCAL, SaveOutcome.NOT_STORED):
            logger.warning("the new token could not be stored; using it in this process only")

    def _look(self, credentials: Credentials, flight: Flight[TokenRecord], outage: _OutageClock) -> TokenRecord | None:
        """The best valid token this process can use that no member of ``flight`` called stale.

        The store is read riding out an outage; a token kept in this process or
        on this host ends the ride at the first failed read (see ``outage``).
        """
        pending = _PENDING.get(self._flight_scope(), credentials)
        stored = outage.ride(lambda: self._read_record(credentials))
        candidates = [r for r in (stored, pending) if r is not None and self._usable(r, flight)]
        return max(candidates, key=lambda r: r.expires_at, default=None)

    def _kept_on_host(self, credentials: Credentials, flight: Flight[TokenRecord]) -> TokenRecord | None:
        """A valid token the host's copy holds for ``credentials`` (the store does not: we just looked)."""
        host = self._host_copy()
        record = host.get(credentials) if host is not None else None
        return record if record is not None and self._usable(record, flight) else None

    def _kept_in_outage(
        self, credentials: Credentials, flight: Flight[TokenRecord], fallback: TokenRecord | None
    ) -> TokenRecord | None:
        """While the store cannot answer: the best token kept here that KIS still accepts, or None.

        Kept in this process (a save the store has not taken yet), on this host
        (another process's, maybe one that is gone), or the caller's own: any
        of them beats failing a call, as long as it has not really expired
        (:data:`LAST_RESORT_MARGIN`).  One from the host's copy is also saved
        for the fleet in the background, by the first process to reach the store.
        """
        host = self._host_copy()
        pending = _PENDING.get(self._flight_scope(), credentials)
        on_host = host.get(credentials) if host is not None else None
        candidates = [
            r
            for r in (pending, on_host, fallback)
            if r is not None
            and r.belongs_to(credentials.api_key, credentials.fingerprint)
            and r.seconds_left() > LAST_RESORT_MARGIN
            and not flight.is_stale(r.access_token)
        ]
        best = max(candidates, key=lambda r: r.expires_at, default=None)
        if best is None:
            return None
        self._warn_once(
            "kept",
            "the token store is not answering; using a token kept %s (expires %s KST) until it answers again",
            "on this host" if best is on_host else "in this process",
            best.expired_text,
        )
        if best is on_host and best is not pending:
            _Promotion.start(self, credentials, best)
        return best

    def _usable(self, record: TokenRecord, flight: Flight[TokenRecord] | None = None) -> bool:
        return record.is_valid(self.refresh_margin) and (flight is None or not flight.is_stale(record.access_token))

    def _valid_record(self, credentials: Credentials) -> TokenRecord | None:
        """The stored token if valid (no flight, no outage riding): for ``check_token_valid``."""
        record = self._read_record(credentials)
        return record if record is not None and self._usable(record) else None

    def _warn_once(self, topic: str, message: str, *args: Any) -> None:
        """Warn once per problem per store, so a fast path does not flood the log.

        Logged under the backend's module (``korea_investment_stock.token.file``...),
        so a handler configured for one backend sees its warnings.
        """
        warned: set[str] = self.__dict__.setdefault("_warned_topics", set())
        if topic not in warned:
            warned.add(topic)
            logging.getLogger(type(self).__module__).warning(message, *args)

    def _problem_solved(self, topic: str) -> None:
        """The problem behind ``topic`` is gone: warn again if it comes back."""
        self.__dict__.get("_warned_topics", set()).discard(topic)

    def _save_for_fleet(self, credentials: Credentials, record: TokenRecord) -> bool:
        """Store a token kept on this host, under the lease, unless the store has one as good; True when done.

        Raises :class:`~..errors.StorageUnavailableError` while the store is down.
        """

        def as_good(stored: TokenRecord | None) -> bool:
            return stored is not None and self._usable(stored) and stored.expires_at >= record.expires_at

        if as_good(self._read_record(credentials)) or not record.is_valid(self.refresh_margin):
            return True
        with self._new_lease(credentials) as lease:
            lease.hold_seconds = HOLD_SLACK
            if lease.acquire(time.monotonic() + self.wait_timeout) is Acquired.LOOK_AGAIN:
                return False
            if as_good(self._read_record(credentials)):
                return True
            outcome = lease.save(record)
        logger.info("the token store answers again; %s the token this host kept", outcome.value)
        return True

    # ------------------------------------------------------------------ the hooks
    def _host_copy(self) -> HostCopy | None:
        """Where this store keeps new tokens on the host before saving them (a shared store's hook).

        None for stores that live on the host already (files) or that we know nothing of.
        """
        return None

    def _flight_scope(self) -> Hashable:
        """What identifies the underlying store, so instances sharing it share a flight.

        By default the store itself: a number drawn once per instance, never
        reused (``id()`` is, once an instance is collected, and would hand a new
        store the old one's unsaved token).  Its unsaved tokens go with it.
        """
        scope: Hashable | None = self.__dict__.get("_scope")
        if scope is None:
            scope = self.__dict__.setdefault("_scope", ("store", next(_SCOPE_NUMBERS)))
        return scope

    def _read_record(self, credentials: Credentials) -> TokenRecord | None:
        """The stored record for this credential (valid or not), or None."""
        data = self.load_token(credentials.api_key, credentials.secret())
        if not data:
            return None
        try:
            return TokenRecord.from_legacy_dict(data)
        except ValueError:
            logger.warning("%s.load_token returned a malformed token; ignoring it", type(self).__name__)
            return None

    def _new_lease(self, credentials: Credentials) -> IssuanceLease:
        """A not-yet-acquired issuance lease for ``credentials``; the default coordinates this process only."""
        return ProcessLease(credentials, self._save_record_for(credentials))

    def _save_record_for(self, credentials: Credentials) -> Callable[[TokenRecord], SaveOutcome]:
        def save(record: TokenRecord) -> SaveOutcome:
            with key_lock(self._flight_scope(), record.api_key):
                saved = self.save_token(record.to_legacy_dict(credentials.secret()))
            return SaveOutcome.STORED if saved else SaveOutcome.NOT_STORED

        return save

    def _compare_and_delete(self, credentials: Credentials, access_token: str) -> bool:
        """Delete only if the stored token is ``access_token``.

        The default compares then deletes in two steps; backends make it atomic.
        Within this process the two steps and the default save share a lock, so
        a delete never lands on a token saved between the compare and the delete.
        """
        with key_lock(self._flight_scope(), credentials.api_key):
            record = self._read_record(credentials)
            if record is None or record.access_token != access_token:
                return False
            return self.delete_token(credentials.api_key, credentials.secret())


class RecordTokenStorage(TokenStorage):
    """A store that reads :class:`~.record.TokenRecord` values natively (the file and Redis stores).

    Its 0.6.x readers come from :meth:`_read_record`, so every such backend
    answers ``load_token`` and ``check_token_valid`` by the same rules.
    """

    @abstractmethod
    def _read_record(self, credentials: Credentials) -> TokenRecord | None:
        """The stored record for this credential (valid or not), or None."""

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        """The stored token for this key and secret, in the 0.6.x shape; None when missing or expired."""
        credentials = Credentials(api_key, api_secret)
        del api_secret
        record = self._read_record(credentials)
        if record is None or record.seconds_left() <= 0:
            return None  # 0.6.1 callers test `if storage.load_token(...)`: an expired token is none
        return record.to_legacy_dict(credentials.secret())

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        """True when a token for this key and secret has more than the refresh margin left."""
        credentials = Credentials(api_key, api_secret)
        del api_secret
        return self._valid_record(credentials) is not None


class _NotingIssue:
    """An issue function that notes what it issued (for :meth:`TokenStorage.refresh`), keeping its call bound."""

    def __init__(self, issue: IssueFn) -> None:
        self._issue = issue
        self.call_seconds = issue_call_seconds(issue)
        self.issued: list[TokenRecord] = []

    def __call__(self) -> TokenRecord:
        record = self._issue()
        self.issued.append(record)
        return record


class _Kept(BaseException):
    """The store does not answer, and a kept token ends the leader's path (see :meth:`TokenStorage._lead`).

    Not an error, so not an ``Exception``: it unwinds through a lease's ``with`` block,
    which must release the lease as after success, without a failure marker for others.
    """

    def __init__(self, record: TokenRecord) -> None:
        super().__init__("a kept token is used while the store does not answer")
        self.record = record


class _OutageClock:
    """Rides out one caller's store outages: retry with backoff for ``outage_allowance`` seconds.

    Per caller, so each caller's allowance counts from the first failure it
    saw; reset by any call that succeeds.  ``escape`` is asked at every
    failure: a token it gives ends the ride (raised as :class:`_Kept`), even
    for a store that never answered this process (a token kept for exactly
    this store shows it is an outage, not a wrong URL).
    """

    def __init__(self, storage: TokenStorage, escape: Callable[[], TokenRecord | None] | None = None) -> None:
        self._scope = storage._flight_scope()
        _SCOPES.attach(storage, self._scope)
        # Within the caller's own wait bound, whatever the allowance says.
        self._allowance = min(storage.outage_allowance, storage.wait_timeout)
        self._since: float | None = None
        self._escape = escape

    def ride(self, operation: Callable[[], R]) -> R:
        delay = OUTAGE_FIRST_DELAY
        while True:
            try:
                result = operation()
            except StorageUnavailableError:
                kept = self._escape() if self._escape is not None else None
                if kept is not None:
                    raise _Kept(kept) from None
                if not _SCOPES.answered(self._scope):
                    raise  # never answered this process: a configuration error, fail fast
                now = time.monotonic()
                if self._since is None:
                    self._since = now
                    logger.warning("the token store is not answering; retrying for up to %.0fs", self._allowance)
                left = self._since + self._allowance - now
                if left <= 0:
                    raise
                time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, OUTAGE_MAX_DELAY)
                continue
            if self._since is not None:
                logger.info("the token store answers again after %.1fs", time.monotonic() - self._since)
                self._since = None
            _SCOPES.mark_answered(self._scope)
            return result


class _Scopes:
    """The stores (by flight scope) alive in this process, and which of them answered.

    A store that answered at least once has outages to ride out; the others'
    failures are configuration errors.  What this process remembers of a scope
    (that it answered, its unsaved tokens) goes when the last store instance on
    it is collected, so neither a long-running process nor a new store on a
    reused address inherits it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[Hashable, int] = {}
        self._answered: set[Hashable] = set()
        #: Scopes of collected stores, not yet counted down.  A finalizer runs inside the
        #: garbage collector, on whatever thread allocated: it may hold any lock of ours
        #: there, so it only appends (atomic) and the next caller does the rest.
        self._gone: deque[Hashable] = deque()
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:  # a lock held by a parent thread would never be released in the child
        self._lock = threading.Lock()

    def attach(self, storage: TokenStorage, scope: Hashable) -> None:
        """Count ``storage`` as a store on ``scope`` until it is collected (once per instance)."""
        self._reap()
        if storage.__dict__.get("_attached_scope") == scope:
            return
        try:
            weakref.finalize(storage, self._gone.append, scope)
        except TypeError:  # a store that cannot be weakly referenced keeps its scope for good
            return
        storage.__dict__["_attached_scope"] = scope
        with self._lock:
            self._stores[scope] = self._stores.get(scope, 0) + 1

    def _reap(self) -> None:
        """Count down the scopes of collected stores; forget those with no store left."""
        if not self._gone:
            return
        emptied = []
        with self._lock:
            while self._gone:
                scope = self._gone.popleft()
                left = self._stores.get(scope, 1) - 1
                if left > 0:
                    self._stores[scope] = left
                    continue
                self._stores.pop(scope, None)
                self._answered.discard(scope)
                emptied.append(scope)
        for scope in emptied:
            _PENDING.drop_scope(scope)

    def answered(self, scope: Hashable) -> bool:
        return scope in self._answered

    def mark_answered(self, scope: Hashable) -> None:
        if scope not in self._answered:  # the common case takes no lock
            with self._lock:
                self._answered.add(scope)

    def __len__(self) -> int:
        self._reap()
        return len(self._answered)


class _PendingTokens:
    """Tokens this process obtained but the store does not hold (yet), per store and app key.

    Shared by every storage instance on the same store (same flight scope), so
    a second client built during an outage reuses the token instead of issuing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[Hashable, str], TokenRecord] = {}
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:  # a lock held by a parent thread would never be released in the child
        self._lock = threading.Lock()

    def keep(self, scope: Hashable, record: TokenRecord) -> None:
        with self._lock:
            key = (scope, key_id(record.api_key))
            held = self._tokens.get(key)
            if held is None or held.expires_at <= record.expires_at:
                self._tokens[key] = record

    def get(self, scope: Hashable, credentials: Credentials) -> TokenRecord | None:
        if not self._tokens:  # the common case costs one attribute read
            return None
        with self._lock:
            record = self._tokens.get((scope, key_id(credentials.api_key)))
        if record is not None and record.belongs_to(credentials.api_key, credentials.fingerprint):
            return record
        return None

    def drop_scope(self, scope: Hashable) -> None:
        """Forget every token of a store that is gone."""
        with self._lock:
            for key in [k for k in self._tokens if k[0] == scope]:
                del self._tokens[key]

    def forget(self, scope: Hashable, api_key: str, access_token: str | None = None) -> None:
        """Drop the pending token for ``api_key`` (only if it is ``access_token``, when given)."""
        if not self._tokens:
            return
        with self._lock:
            key = (scope, key_id(api_key))
            held = self._tokens.get(key)
            if held is not None and access_token in (None, held.access_token):
                del self._tokens[key]


_PENDING = _PendingTokens()
_SCOPES = _Scopes()


def scope_number(obj: object) -> int:
    """A number drawn once per object: never reused, unlike ``id()`` once the object is collected.

    Stores that share an object (say, a redis client given as ``client=``) share a
    flight through it.  An object that cannot be weakly referenced gets a new
    number each time: its stores then coordinate their threads alone.
    """
    try:
        with _OBJECT_NUMBERS_LOCK:
            number = _OBJECT_NUMBERS.get(obj)
            if number is None:
                number = _OBJECT_NUMBERS[obj] = next(_SCOPE_NUMBERS)
            return number
    except TypeError:  # unhashable, or no weak references
        return next(_SCOPE_NUMBERS)


_OBJECT_NUMBERS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_OBJECT_NUMBERS_LOCK = threading.Lock()


class _Promotion:
    """Saves a token kept on this host for the fleet once the store answers: the first process there does.

    Started by a process that served a host-copy token while the store was
    down (its issuer may be gone); one per process and token, until the token
    is stored, the store holds one as good, or it is too close to expiry.  A
    process that exits meanwhile waits for it as for a background save.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _running: ClassVar[set[tuple[Hashable, str]]] = set()

    def __init__(self, storage: TokenStorage, credentials: Credentials, record: TokenRecord) -> None:
        self._storage = storage
        self._credentials = credentials
        self._record = record
        self._key = (storage._flight_scope(), record.access_token)

    @classmethod
    def start(cls, storage: TokenStorage, credentials: Credentials, record: TokenRecord) -> None:
        promotion = cls(storage, credentials, record)
        with cls._lock:
            if promotion._key in cls._running:
                return
            cls._running.add(promotion._key)
        thread = threading.Thread(target=promotion._run, name="kis-token-save-for-fleet", daemon=True)
        try:
            _BACKGROUND.add(thread, storage.outage_allowance)  # an exiting process waits for it, bounded
            thread.start()
        except RuntimeError:  # interpreter shutdown: nobody left to save it for
            with cls._lock:
                cls._running.discard(promotion._key)

    def _run(self) -> None:
        delay = OUTAGE_FIRST_DELAY
        try:
            while self._record.seconds_left() > LAST_RESORT_MARGIN:
                try:
                    if self._storage._save_for_fleet(self._credentials, self._record):
                        return
                except (StorageUnavailableError, TokenWaitTimeout):
                    pass  # still down, or a peer holds the lease: try again soon
                except Exception as exc:  # a store or marker error: the next issuance decides
                    reason = str(exc) if isinstance(exc, StorageError | TokenError) else type(exc).__name__
                    logger.warning("gave up saving the token kept on this host (%s)", reason)
                    return
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, PROMOTION_MAX_DELAY)
        finally:
            with self._lock:
                self._running.discard(self._key)

    @classmethod
    def _after_fork(cls) -> None:  # the parent's threads do not run here
        cls._lock = threading.Lock()
        cls._running = set()


os.register_at_fork(after_in_child=_Promotion._after_fork)


class _BackgroundSave:
    """Keeps trying to store a token the store could not take, until it is stored or no longer valid.

    Holds the lease it was handed (the lease's own renewal keeps it, within its
    bound), so the fleet does not issue beside it; the save, fenced as ever,
    releases it.
    """

    def __init__(self, storage: TokenStorage, record: TokenRecord, lease: IssuanceLease) -> None:
        self._storage = storage
        self._record = record
        self._lease = lease

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="kis-token-background-save", daemon=True)
        _BACKGROUND.add(thread, self._storage.outage_allowance)
        thread.start()

    def _run(self) -> None:
        scope = self._storage._flight_scope()
        delay = OUTAGE_FIRST_DELAY
        try:
            while self._record.is_valid(self._storage.refresh_margin):
                try:
                    outcome = self._lease.save(self._record)
                except StorageUnavailableError:
                    time.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, OUTAGE_MAX_DELAY)
                    continue
                except StorageError as exc:
                    logger.warning("giving up storing the new token (%s); this process keeps using it", exc)
                    return
                if outcome is SaveOutcome.STORED:
                    _PENDING.forget(scope, self._record.api_key, self._record.access_token)
                    logger.info("stored the new token after the store came back")
                elif outcome is SaveOutcome.REFUSED:
                    _PENDING.forget(scope, self._record.api_key, self._record.access_token)
                    logger.info("the store came back with a newer token; using that one")
                return
        finally:
            self._lease.release_handed_off()


class _BackgroundSaves:
    """The background saves of this process, so that exiting waits for them (bounded).

    A worker that got its token and exits would otherwise take the only copy
    of a freshly issued token with it: the fleet would then wait out the lease
    and meet ``EGW00133`` for a minute.  Daemon threads die with the
    interpreter, so the wait runs at exit: from :mod:`atexit`, and from a
    :mod:`multiprocessing` finalizer (its children leave through ``os._exit``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[tuple[threading.Thread, float]] = []
        self._hooked_pid: int | None = None
        #: When waiting at exit ends (monotonic): one deadline per process, however many
        #: exit hooks call :meth:`wait` (atexit and multiprocessing's both run in a parent).
        self._exit_deadline: float | None = None
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:  # a parent's saves do not run in a forked child
        self._lock = threading.Lock()
        self._threads = []
        self._hooked_pid = None
        self._exit_deadline = None

    def add(self, thread: threading.Thread, bound: float) -> None:
        with self._lock:
            self._threads = [(t, b) for t, b in self._threads if t.is_alive()]
            self._threads.append((thread, bound))
            if self._hooked_pid != os.getpid():
                self._hooked_pid = os.getpid()
                atexit.register(self._wait_at_exit)
                from multiprocessing import util  # a light stdlib module; only once a save is pending

                util.Finalize(None, self._wait_at_exit, exitpriority=100)

    def _wait_at_exit(self) -> None:
        with self._lock:
            threads = [(t, b) for t, b in self._threads if t.is_alive()]
            if self._exit_deadline is None:
                self._exit_deadline = time.monotonic() + max((b for _, b in threads), default=0.0)
            left = self._exit_deadline - time.monotonic()
        self.wait(max(0.0, left))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every pending save, each at most its store's outage allowance (or ``timeout``).

        True when none is left running.
        """
        with self._lock:
            threads = [(t, b) for t, b in self._threads if t.is_alive()]
        if threads:
            logger.info("waiting for %d token save(s) the store has not taken yet", len(threads))
        end = time.monotonic() + (timeout if timeout is not None else max((b for _, b in threads), default=0.0))
        for thread, _ in threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t, _ in threads)


_BACKGROUND = _BackgroundSaves()


def wait_for_pending_saves(timeout: float | None = None) -> bool:
    """Wait until tokens this process could not store yet are stored; True when none is pending.

    Runs by itself at exit.  Call it before a hard exit (``os._exit``) or at the
    end of a job that must not leave its token only in memory.
    """
    return _BACKGROUND.wait(None if timeout is None else check_seconds("timeout", timeout))


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
