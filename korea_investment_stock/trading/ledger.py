"""The order ledger: which order numbers some caller was told about, and which orders are in flight.

Why a ledger, and why shared: KIS has no client order id, so reconciling an
unknown order means finding it among the day's orders by what was asked.
Two callers that asked for the same thing are then interchangeable, and the
only rules that keep the count right are:

* an order number a caller was told about (by an answer or by a
  reconciliation) is never handed to a second caller: :meth:`OrderLedger.claim`
  is atomic;
* a reconciliation waits while an identical request is still in flight
  anywhere (:meth:`OrderLedger.pending`), since that request's answer may
  name one of the candidates.

Both must hold across the processes and servers that share an account, so
the ledger lives where the token does: files beside the file store's token
(host-wide), keys beside the Redis store's token (fleet-wide), or, for other
stores, this process's memory.  Each shared ledger also keeps a process copy,
so a store outage while an order is answered costs a warning, never the
order; a reconciliation during an outage fails (try it again), never guesses.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

__all__ = ["FileOrderLedger", "LocalOrderLedger", "OrderLedger", "ledger_for", "process_ledger"]

_log = logging.getLogger(__name__)

#: How long an order number stays claimed (KIS's day, and the overseas session across midnight).
KNOWN_SECONDS = 4 * 86400
#: The longest a reconciliation waits for identical requests in flight.
MAX_PENDING_WAIT = 300.0


def account_digest(account: str) -> str:
    """A short stable name for an account in file and key names (the number itself stays out of them)."""
    return hashlib.sha256(account.encode("utf-8")).hexdigest()[:24]


def signature_digest(signature: str) -> str:
    """A short stable name for what a request asked (see ``orders.signature``)."""
    return hashlib.sha256(signature.encode("utf-8")).hexdigest()[:24]


class OrderLedger(ABC):
    """Claims on order numbers and tickets for requests in flight, per account."""

    @abstractmethod
    def claim(self, account: str, order_no: str) -> bool:
        """Mark ``order_no`` as told to a caller; False if some caller already has it."""

    @abstractmethod
    def is_known(self, account: str, order_no: str) -> bool:
        """Has some caller been told about ``order_no``?"""

    @abstractmethod
    def begin(self, account: str, signature: str, until: float) -> str:
        """A ticket for a request asking ``signature``, in flight until ``until`` (epoch seconds) at most."""

    @abstractmethod
    def end(self, account: str, ticket: str) -> None:
        """The request of ``ticket`` is over (answered, failed or unknown)."""

    @abstractmethod
    def pending(self, account: str, signature: str) -> float:
        """The latest ``until`` of requests asking ``signature`` still in flight; 0 when none."""


class LocalOrderLedger(OrderLedger):
    """The ledger of one process (threads share it): for stores that have no shared place."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], float] = {}
        self._flight: dict[tuple[str, str], tuple[str, float]] = {}

    def claim(self, account: str, order_no: str) -> bool:
        now = time.time()
        with self._lock:
            if self._known.get((account, order_no), 0.0) > now:
                return False
            self._known[(account, order_no)] = now + KNOWN_SECONDS
            if len(self._known) > 100_000:  # a long-lived process: forget what expired
                self._known = {k: t for k, t in self._known.items() if t > now}
            return True

    def is_known(self, account: str, order_no: str) -> bool:
        with self._lock:
            return self._known.get((account, order_no), 0.0) > time.time()

    def begin(self, account: str, signature: str, until: float) -> str:
        ticket = uuid.uuid4().hex
        with self._lock:
            self._flight[(account, ticket)] = (signature, until)
        return ticket

    def end(self, account: str, ticket: str) -> None:
        with self._lock:
            self._flight.pop((account, ticket), None)

    def pending(self, account: str, signature: str) -> float:
        now = time.time()
        with self._lock:
            return max(
                (
                    until
                    for (acct, _), (sig, until) in self._flight.items()
                    if acct == account and sig == signature and until > now
                ),
                default=0.0,
            )


class SharedOrderLedger(OrderLedger):
    """A ledger in a shared place, with this process's copy in front of it.

    Answers go through the copy first, so an outage of the shared place while
    an order is answered costs a warning, not the order.  Reconciliation reads
    the shared place and lets its errors through: a guess would be worse.
    """

    def __init__(self) -> None:
        self.local = LocalOrderLedger()

    def claim(self, account: str, order_no: str) -> bool:
        if not self.local.claim(account, order_no):
            return False
        try:
            return self._claim(account, order_no)
        except Exception as exc:  # the order is ours by KIS's answer; only other processes lose sight of it
            _log.warning("could not record order %s in the shared order ledger: %s", order_no, exc)
            return True

    def is_known(self, account: str, order_no: str) -> bool:
        return self.local.is_known(account, order_no) or self._is_known(account, order_no)

    def begin(self, account: str, signature: str, until: float) -> str:
        ticket = self.local.begin(account, signature, until)
        try:
            self._begin(account, ticket, signature, until)
        except Exception as exc:
            _log.warning("could not record an order request in the shared order ledger: %s", exc)
        return ticket

    def end(self, account: str, ticket: str) -> None:
        self.local.end(account, ticket)
        try:
            self._end(account, ticket)
        except Exception as exc:  # the ticket expires by itself at its deadline
            _log.warning("could not close an order request in the shared order ledger: %s", exc)

    def pending(self, account: str, signature: str) -> float:
        return max(self.local.pending(account, signature), self._pending(account, signature))

    @abstractmethod
    def _claim(self, account: str, order_no: str) -> bool: ...

    @abstractmethod
    def _is_known(self, account: str, order_no: str) -> bool: ...

    @abstractmethod
    def _begin(self, account: str, ticket: str, signature: str, until: float) -> None: ...

    @abstractmethod
    def _end(self, account: str, ticket: str) -> None: ...

    @abstractmethod
    def _pending(self, account: str, signature: str) -> float: ...


class FileOrderLedger(SharedOrderLedger):
    """The ledger of one host, as files in a private directory beside the token file.

    A claim is a file created with ``O_EXCL`` (atomic without a lock, and
    never through a planted symlink); a ticket is a file named after what the
    request asked, holding its deadline.  Old claims are swept now and then.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"FileOrderLedger(directory={str(self.directory)!r})"

    def _folder(self, account: str, kind: str) -> Path:
        folder = self.directory / f"orders.{account_digest(account)}" / kind
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.is_symlink() or folder.parent.is_symlink():
            raise OSError(errno.ELOOP, f"refusing a symlink in the order ledger at {folder}")
        return folder

    def _create(self, path: Path, content: bytes) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        return True

    def _claim(self, account: str, order_no: str) -> bool:
        folder = self._folder(account, "known")
        if not order_no.isalnum():
            raise ValueError(f"an order number must be letters and digits, got {order_no!r}")
        created = self._create(folder / order_no, b"")
        if created and int.from_bytes(os.urandom(1), "big") < 3:  # about one claim in 85 sweeps old ones
            self._sweep(folder, time.time() - KNOWN_SECONDS)
        return created

    def _is_known(self, account: str, order_no: str) -> bool:
        if not order_no.isalnum():
            return False
        path = self._folder(account, "known") / order_no
        try:
            return path.lstat().st_mtime > time.time() - KNOWN_SECONDS
        except FileNotFoundError:
            return False

    def _begin(self, account: str, ticket: str, signature: str, until: float) -> None:
        folder = self._folder(account, "flight")
        self._create(folder / f"{signature_digest(signature)}.{ticket}", repr(until).encode())

    def _end(self, account: str, ticket: str) -> None:
        for path in self._folder(account, "flight").glob(f"*.{ticket}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _pending(self, account: str, signature: str) -> float:
        now = time.time()
        latest = 0.0
        for path in self._folder(account, "flight").glob(f"{signature_digest(signature)}.*"):
            try:
                until = float(path.read_text(encoding="ascii") or 0)
            except (OSError, ValueError):
                continue
            if until > now:
                latest = max(latest, until)
            else:  # its process died in flight: the deadline has passed, so it can go
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return latest

    @staticmethod
    def _sweep(folder: Path, before: float) -> None:
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < before:
                    path.unlink()


#: One ledger per place: every client of a process that shares a store shares its ledger.
_LEDGERS: dict[Any, OrderLedger] = {}
_LEDGERS_LOCK = threading.Lock()
_PROCESS_LEDGER = LocalOrderLedger()


def process_ledger() -> OrderLedger:
    """This process's ledger, for stores with no shared place (and for contexts made without a store)."""
    return _PROCESS_LEDGER


def ledger_for(storage: object) -> OrderLedger:
    """The ledger that goes with a token store: host-wide for the file store, fleet-wide for Redis."""
    from ..token.file import FileTokenStorage  # the token room names the places

    with _LEDGERS_LOCK:
        if isinstance(storage, FileTokenStorage):
            directory = storage.file_path.parent  # private: the file store refuses any other
            key: Any = ("file", str(directory))
            if key not in _LEDGERS:
                _LEDGERS[key] = FileOrderLedger(directory)
            return _LEDGERS[key]
        redis_stores = sys.modules.get("korea_investment_stock.token.redis")
        if redis_stores is not None and isinstance(storage, redis_stores.RedisTokenStorage):
            key = ("redis", id(storage.redis_client), storage.key_prefix)
            if key not in _LEDGERS:
                from .ledger_redis import RedisOrderLedger

                _LEDGERS[key] = RedisOrderLedger(storage.redis_client, storage.key_prefix)
                weakref.finalize(storage, _LEDGERS.pop, key, None)  # before its id can be another's
            return _LEDGERS[key]
        return _PROCESS_LEDGER
