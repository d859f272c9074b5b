"""A total deadline for HTTP calls: a watchdog cuts the connection of a call that runs past it.

Why: ``requests``/urllib3 timeouts bound each socket operation, not the call.
A host that trickles its answer (a byte every second, each read well inside
the read timeout) can hold a call, and with it a token issuance lease, for as
long as the answer is long.  Nothing in urllib3 bounds the whole call, so
sessions made by :func:`~.transport.new_session` use connection classes that
report their socket to the call running on this thread, and one watchdog
thread shuts that socket down when the call's deadline passes: the blocked
read returns at once and the call fails like any dropped connection.

The watchdog is one daemon thread per process, started on first use (again in
a forked child), waking only at the nearest deadline.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["CallDeadline", "bounded", "pool_classes"]


class CallDeadline:
    """One HTTP call's deadline and the sockets it used; :attr:`expired` once the watchdog cut them."""

    __slots__ = ("_lock", "_sockets", "at", "expired", "finished", "sent", "tracked")

    def __init__(self, at: float) -> None:
        #: When the call must be over (``time.monotonic()``).
        self.at = at
        self.expired = False
        self.finished = False
        #: A connection of ours served the call, so :attr:`sent` is known (a foreign session's is not).
        self.tracked = False
        #: Some byte of a request was handed to a connected socket: the host may have it.
        self.sent = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def attach(self, sock: socket.socket) -> None:
        """Watch ``sock`` for this call; cut it at once if the deadline already passed."""
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return
        _cut(sock)

    def expire(self) -> None:
        """The deadline passed: cut every socket of the call, unless it finished first."""
        with self._lock:
            if self.finished:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _cut(sock)

    def finish(self) -> None:
        """The call is over: the watchdog leaves its sockets alone from now on (they go back to the pool)."""
        with self._lock:
            self.finished = True
            self._sockets = []


def _cut(sock: socket.socket) -> None:
    # shutdown, not close: the socket object stays owned by urllib3 (which closes it), but
    # every blocked or later recv/send on it returns at once.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """Expires calls at their deadlines: a heap of deadlines and one thread sleeping until the nearest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, CallDeadline]] = []
        self._numbers = itertools.count()
        self._pid: int | None = None
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:  # the parent's thread does not exist here; its calls are not ours
        self._cond = threading.Condition()
        self._heap = []
        self._pid = None

    def watch(self, call: CallDeadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.at, next(self._numbers), call))
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="kis-http-deadline", daemon=True).start()
            if self._heap[0][2] is call:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    # Finished calls are dropped from the top, so a quiet process keeps no garbage.
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        call = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(left)
            call.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[CallDeadline]:
    """Run the HTTP call(s) inside the block within ``seconds`` in all.

    Calls made through a session of :func:`~.transport.new_session` on this
    thread are cut when the time is up; check :attr:`CallDeadline.expired` when
    the call fails to tell that apart from a dropped connection.
    """
    call = CallDeadline(time.monotonic() + seconds)
    outer = getattr(_current, "call", None)
    _current.call = call
    _WATCHDOG.watch(call)
    try:
        yield call
    finally:
        call.finish()
        _current.call = outer


def _report(sock: Any) -> None:
    """Hand a connection's socket to the call running on this thread, if it has a deadline."""
    call = getattr(_current, "call", None)
    if call is not None and isinstance(sock, socket.socket):
        call.tracked = True
        call.attach(sock)


def _sending() -> None:
    """Record that the call on this thread is about to write request bytes to a connected socket."""
    call = getattr(_current, "call", None)
    if call is not None:
        call.tracked = True
        call.sent = True


class _SendTracking:
    """Marks the current call as sent just before the first byte goes out (after any connect).

    Why: whether a failed request could have reached the host decides whether
    an order may be sent again.  Only a request whose bytes never met a
    connected socket provably did not.
    """

    sock: Any
    auto_open: int

    def send(self, data: Any) -> None:
        if self.sock is None and self.auto_open:
            self.connect()  # type: ignore[attr-defined]  # http.client would connect here; a failure is unsent
        _sending()
        super().send(data)  # type: ignore[misc]


class _DeadlineHTTPConnection(_SendTracking, HTTPConnection):
    """An urllib3 connection that reports its socket to the current call (new or reused)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _report(sock)  # before TLS or the request: a trickled handshake is cut too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _report(self.sock)  # a kept-alive connection from the pool
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(_SendTracking, HTTPSConnection):
    """:class:`_DeadlineHTTPConnection` for https."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _report(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _report(self.sock)
        super().request(*args, **kwargs)


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


def pool_classes() -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes by scheme whose connections honour :func:`bounded`."""
    return {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}
