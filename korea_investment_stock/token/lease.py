"""The issuance lease: the right to call tokenP for one app key, as one typed object.

Every backend hands :meth:`~.storage.TokenStorage._lead` an
:class:`IssuanceLease`.  The leader uses it as a context manager *before* it
tries to take it, so the lease is owned by a ``try/finally`` from the moment
it can exist anywhere::

    with storage._new_lease(credentials) as lease:
        if lease.acquire(deadline) is Acquired.LOOK_AGAIN:
            ...                      # the store changed while we waited: read it
        if not lease.held():         # asked before every tokenP call (also between EGW00133 retries)
            ...                      # lost: stop issuing, read and acquire again
        record = issue()
        lease.save(record)           # fenced: refused if the lease has been superseded

A lease knows whether it is still held, saves fenced, and releases with the
failure (if any) that ended the issuance.  Leaving the ``with`` block releases
it unless the save already did, or the lease was handed to a background save
(:meth:`IssuanceLease.hand_off`).
"""

from __future__ import annotations

import enum
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .credentials import Credentials
from .record import TokenRecord

logger = logging.getLogger(__name__)

#: A wait for another holder this long is said once, at WARNING: it may be waiting on KIS's
#: one-issuance-per-minute window, and a caller blocked that long should know why.
LONG_WAIT_SECONDS = 5.0


class LongWait:
    """Says once, at WARNING, that a wait for another holder of the lease is taking long."""

    def __init__(self, holder: str, deadline: float) -> None:
        self._holder = holder
        self._deadline = deadline
        self._started = time.monotonic()
        self._said = False

    def tick(self) -> None:
        """Call at every look at the lease; the first call past :data:`LONG_WAIT_SECONDS` logs."""
        if self._said:
            return
        now = time.monotonic()
        if now - self._started >= LONG_WAIT_SECONDS:
            self._said = True
            logger.warning(
                "still waiting for %s to obtain the token (%.0fs so far; KIS allows one issuance per minute); "
                "giving up in %.0fs",
                self._holder,
                now - self._started,
                max(0.0, self._deadline - now),
            )


class Acquired(enum.Enum):
    """What :meth:`IssuanceLease.acquire` answers."""

    #: We hold the lease: double-check the store, then issue.
    HELD = "held"
    #: The store may have changed while we waited (a peer stored or released): read it again.
    LOOK_AGAIN = "look again"


class SaveOutcome(enum.Enum):
    """What a fenced save did."""

    #: The token is in the store now (ours, or exactly ours already: a replayed save).
    STORED = "stored"
    #: The store kept a newer token, or a newer lease's write: ours was not written.
    REFUSED = "refused"
    #: The store could only keep it in this process (read-only disk, for example): it still
    #: serves it to this process's readers.
    LOCAL = "local"
    #: The store did not take it (a custom store's ``save_token`` answered False): the
    #: single flight keeps it for this process instead.
    NOT_STORED = "not stored"


#: The purposes one app key's lease serves.  Each purpose is its own lease (one holder each), taken
#: and renewed the same way: the token issuer holds :data:`ISSUE` for one tokenP call; the real-time
#: session owner holds :data:`STREAM_OWNER` for as long as it keeps the socket.
ISSUE = "issue"
STREAM_OWNER = "stream-owner"
PURPOSES = (ISSUE, STREAM_OWNER)


def check_purpose(purpose: str) -> str:
    """``purpose`` if it names a lease we know (a typo would silently elect a second owner)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown lease purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    return purpose


#: How a :class:`ProcessLease` stores a record.
SaveFn = Callable[[TokenRecord], "SaveOutcome"]


class IssuanceLease(ABC):
    """The right to issue a token for one credential, held by one leader at a time.

    Subclasses implement :meth:`acquire`, :meth:`held`, :meth:`save` and
    :meth:`_release`.  The context manager calls :meth:`release` on exit with
    the exception that ended the block, unless the lease is settled.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        #: True once :meth:`acquire` may have taken the lease anywhere.
        self.taken = False
        #: True once released, or saved (a save releases).
        self.settled = False
        #: True while a background save owns the lease instead of the ``with`` block.
        self.handed_off = False
        #: How long the leader may need the lease once taken (set before :meth:`acquire`): a
        #: backend that renews its lease renews it this long at most.  None: the backend's default.
        self.hold_seconds: float | None = None

    @abstractmethod
    def acquire(self, deadline: float) -> Acquired:
        """Take the lease before ``deadline`` (``time.monotonic()``), or say to look again.

        Raises :class:`~..errors.TokenWaitTimeout` at the deadline, a
        :class:`~..errors.TokenIssueError` when a peer's issuance for this
        credential just failed, or a storage error.
        """

    @abstractmethod
    def held(self) -> bool:
        """True while this lease is still ours; asked before every tokenP call."""

    @abstractmethod
    def save(self, record: TokenRecord) -> SaveOutcome:
        """Store a freshly issued ``record``, fenced by this lease, and release the lease."""

    @abstractmethod
    def _release(self, failure: BaseException | None) -> None:
        """Give the lease back; ``failure`` is what ended the issuance, if anything."""

    def release(self, failure: BaseException | None = None) -> None:
        """Give the lease back once; a settled, handed-off or never-taken lease is left alone."""
        if self.handed_off:
            return
        self._release_once(failure)

    def hand_off(self) -> None:
        """Leave the lease to a background save: the ``with`` block must not release it."""
        self.handed_off = True

    def release_handed_off(self) -> None:
        """The background save's end: give the lease back unless its save already did."""
        self._release_once(None)

    def _release_once(self, failure: BaseException | None) -> None:
        if self.settled or not self.taken:
            self.settled = True
            return
        self.settled = True
        self._release(failure)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(exc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.credentials!r}, taken={self.taken}, settled={self.settled})"


class ProcessLease(IssuanceLease):
    """No cross-process lock: the in-process flight is the only coordination.

    What a custom four-method store gets: :meth:`save` calls its
    ``save_token``, under the per-key lock that also guards its compare-and-delete.
    """

    def __init__(self, credentials: Credentials, save: SaveFn) -> None:
        super().__init__(credentials)
        self._save = save

    def acquire(self, deadline: float) -> Acquired:
        self.taken = True
        return Acquired.HELD

    def held(self) -> bool:
        return not self.settled

    def save(self, record: TokenRecord) -> SaveOutcome:
        outcome = self._save(record)
        self.settled = True
        return outcome

    def _release(self, failure: BaseException | None) -> None:
        pass


class HeldLease(ABC):
    """A store's lease on one app key and purpose, held as long as its holder lives and keeps it.

    Why beside :class:`IssuanceLease`: "exactly one in the fleet" jobs that last (the real-time
    session owner) need the same election as the token issuer, not a second one, but a different
    shape of hold.  An issuance lease is waited for and held for one tokenP call; a held lease is
    *tried* without waiting (the caller polls), held for hours, and asked every few milliseconds,
    so :meth:`held` must answer without I/O from what the store last confirmed.  The backends
    build both from the same scripts / locks (``token/redis.py``, ``token/file.py``)::

        lease = storage.purpose_lease(api_key, STREAM_OWNER)
        if lease.try_acquire() is not None:      # the fencing generation, or None: someone else holds it
            while lease.held():                  # confirmed recently enough: keep the job running
                lease.keep()                     # the holder is alive: renewals may go on a while more
                ...
            lease.release()                      # owner-checked: never frees a successor's lease

    On a store that can lose a lease (Redis) :meth:`held` turns false ``fence_margin`` before the
    lease could lapse without a confirmed renewal, so a holder that closes its resource when it does
    (self-fencing) is gone before anyone else can acquire.  Renewal is bounded: it stops
    ``hold_seconds`` after the last :meth:`keep`, so a hung holder cannot keep the lease forever.
    """

    def __init__(self, purpose: str) -> None:
        self.purpose = check_purpose(purpose)
        #: The fencing generation of the current hold (0 when not held): higher than every earlier one.
        self.generation = 0

    @abstractmethod
    def try_acquire(self) -> int | None:
        """Take the lease now, without waiting: its generation, or None while another holds it.

        Already held: the same generation.  A storage error is raised (the caller tries again).
        """

    @abstractmethod
    def held(self) -> bool:
        """Still ours, as last confirmed by the store; never does I/O."""

    def keep(self) -> None:  # a lease that cannot lapse (a kernel lock) needs nothing
        """The holder is alive and working: renewals may go on ``hold_seconds`` from now."""

    @abstractmethod
    def release(self) -> None:
        """Give the lease back (owner-checked, idempotent); :meth:`held` is false from now on."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.purpose!r}, generation={self.generation}, held={self.held()})"


__all__ = [
    "ISSUE",
    "LONG_WAIT_SECONDS",
    "PURPOSES",
    "STREAM_OWNER",
    "Acquired",
    "HeldLease",
    "IssuanceLease",
    "LongWait",
    "ProcessLease",
    "SaveOutcome",
    "check_purpose",
]
