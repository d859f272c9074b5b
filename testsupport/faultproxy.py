"""A loopback TCP proxy that injects network faults into tests.

The Redis token store has to survive what real networks do: partitions that
make calls time out, peers that reset, slow links, a server that comes back on
another address.  This proxy produces those faults on demand, without root,
iptables or sleeps in the code under test.

Partition model (the simplest one that is still faithful to TCP):

* Connections that were forwarding when :meth:`FaultProxy.partition` was called
  stay open but go silent: bytes read from either side are dropped, and a FIN
  or reset from one side is not passed to the other.  At :meth:`FaultProxy.heal`
  they are reset (RST to the client).  Dropped bytes would leave the two ends
  of the stream out of step, which TCP never does, so a reset is the honest
  outcome - it is what a client sees when a NAT or middlebox forgot the flow.
* Connections accepted during the partition complete the handshake (the kernel
  does that) but are not connected upstream, so the client waits and times out
  instead of being refused.  Their bytes stay unread in the kernel, as if TCP
  were retransmitting; at heal they are connected upstream and delivered.
* ``partition(hold=True)`` is a stall instead of a cut: connections that were
  forwarding stay open, keep every byte read from either side (FINs included,
  in order) and deliver them all at :meth:`FaultProxy.heal`, as TCP does when
  a link comes back before the peers gave up.  A client that timed out
  meanwhile sees its request executed late - the case a late save must
  survive.  New connections behave as in a plain partition.

Every thread is a daemon and every loop waits at most ``_POLL`` seconds before
it checks the stop flag, so a broken test cannot hang the run.
"""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import struct
import threading
import time
from collections import deque
from types import TracebackType

__all__ = ["FaultProxy"]

_POLL = 0.05  # longest wait before any loop re-checks its flags
_CONNECT_TIMEOUT = 2.0  # to the upstream
_SEND_TIMEOUT = 5.0  # a peer that stops reading for this long is cut off
_CHUNK = 65536
_EOF = b""  # queued to pass a FIN on, in order with the data before it


class _State(enum.Enum):
    PENDING = "pending"  # accepted during a partition, no upstream yet
    LIVE = "live"  # forwarding
    DOOMED = "doomed"  # was live when a partition began: silent, reset at heal
    HELD = "held"  # was live when a holding partition began: bytes kept, delivered at heal
    CLOSED = "closed"


def _abort(sock: socket.socket | None) -> None:
    """Close with RST instead of FIN, so the peer sees a reset rather than an orderly close."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Connection:
    """One client connection and its single owner thread (a selector loop).

    Only the owner thread touches the sockets, so control calls never race a
    ``close`` against a ``recv``: they set a flag, wake the owner through a
    socketpair and wait for it to finish.
    """

    def __init__(self, proxy: FaultProxy, client: socket.socket, ident: int) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.state = _State.PENDING
        self.lock = threading.Lock()  # held while forwarding a chunk, so partition() is synchronous
        self.settled = threading.Event()  # no longer PENDING
        self.done = threading.Event()  # sockets closed, thread finished
        self._abort_requested = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.thread = threading.Thread(target=self._run, name=f"faultproxy-{proxy.port}-conn-{ident}", daemon=True)

    # -- called from other threads -------------------------------------------------

    def wake(self) -> None:
        """Make the owner re-check its flags now instead of at the next poll."""
        with contextlib.suppress(OSError):  # buffer full (already awake) or closed (already done)
            self._wake_w.send(b"x")

    def abort(self) -> None:
        """Reset both sides and wait (bounded) until the owner has done it."""
        self._abort_requested = True
        self.wake()
        self.done.wait(_CONNECT_TIMEOUT + _SEND_TIMEOUT + 1.0)

    # -- owner thread -----------------------------------------------------------------

    def _should_exit(self) -> bool:
        return self._abort_requested or self.proxy._stopping.is_set()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except OSError:
            pass

    def _run(self) -> None:
        clean = False
        try:
            upstream = self._connect_upstream()
            if upstream is not None:
                clean = self._pump(upstream)
        except Exception:  # an unexpected error ends this connection, never the proxy
            clean = False
        finally:
            with self.lock:
                self.state = _State.CLOSED
            if clean:
                self.client.close()
                if self.upstream is not None:
                    self.upstream.close()
            else:
                _abort(self.client)
                _abort(self.upstream)
            self._wake_r.close()
            self._wake_w.close()
            self.proxy._forget(self)
            self.settled.set()
            self.done.set()

    def _connect_upstream(self) -> socket.socket | None:
        """Wait out a partition, then connect; None if the connection must be reset instead."""
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                if self._should_exit():
                    return None
                with self.proxy._lock:
                    if not self.proxy._partitioned:
                        target = self.proxy._upstream
                        break
                if selector.select(_POLL):
                    self._drain_wake()
        finally:
            selector.close()
        try:
            upstream = socket.create_connection(target, timeout=_CONNECT_TIMEOUT)
        except OSError:
            return None  # upstream down: the client gets a reset, as a proxy in front of it would give
        upstream.settimeout(_SEND_TIMEOUT)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.proxy._lock, self.lock:
            self.upstream = upstream
            # A partition that began while we were connecting applies to us too.
            self.state = self.proxy._silenced_state() if self.proxy._partitioned else _State.LIVE
        self.settled.set()
        return None if self._should_exit() else upstream

    def _pump(self, upstream: socket.socket) -> bool:
        """Forward both directions until both ends closed (True) or a fault/stop (False)."""
        client = self.client
        peers = {client: upstream, upstream: client}
        queues: dict[socket.socket, deque[tuple[float, bytes]]] = {client: deque(), upstream: deque()}
        finished: set[socket.socket] = set()  # destinations that were sent our FIN
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        selector.register(client, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        readable = {client, upstream}
        try:
            while not self._should_exit():
                timeout = _POLL
                if self.state is not _State.HELD:  # held chunks are due at heal, not before
                    for queue in queues.values():
                        if queue:
                            timeout = min(timeout, max(0.0, queue[0][0] - time.monotonic()))
                for key, _events in selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                        continue
                    source = client if key.fileobj is client else upstream
                    try:
                        data = source.recv(_CHUNK)
                    except OSError:  # reset by that peer
                        if self.state is _State.LIVE:
                            return False  # pass the reset on
                        data = _EOF  # doomed or held: stop listening to it (held: a FIN at heal)
                    if not data:
                        selector.unregister(source)
                        readable.discard(source)
                    queues[peers[source]].append((time.monotonic() + self.proxy._latency, data))
                if not self._flush(queues, finished):
                    return False
                if not readable and not any(queues.values()):
                    return True  # both sides closed and everything was delivered (or dropped)
            return False
        finally:
            selector.close()

    def _flush(self, queues: dict[socket.socket, deque[tuple[float, bytes]]], finished: set[socket.socket]) -> bool:
        """Send every chunk that is due; False when a send failed and the connection must go."""
        now = time.monotonic()
        for destination, queue in queues.items():
            while queue and queue[0][0] <= now:
                with self.lock:
                    if self.state is _State.HELD:
                        break  # kept for heal
                    _due, data = queue.popleft()
                    if self.state is not _State.LIVE:
                        continue  # partitioned: dropped
                    try:
                        if data:
                            destination.sendall(data)
                        elif destination not in finished:
                            finished.add(destination)
                            destination.shutdown(socket.SHUT_WR)
                    except OSError:
                        return False
                if data:
                    self.proxy._count(upstream=destination is not self.client, size=len(data))
        return True


class FaultProxy:
    """Forward loopback TCP connections to an upstream, with faults switched on from the test.

    Starts listening on a free port at construction; use as a context manager
    or call :meth:`close`.  Every control method is thread-safe and returns
    once the fault is in effect.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        listen_host: str = "127.0.0.1",
        *,
        max_connections: int = 256,
    ) -> None:
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._upstream = (upstream_host, upstream_port)
        self._partitioned = False
        self._hold = False
        self._latency = 0.0
        self._max_connections = max_connections
        self._connections: set[_Connection] = set()
        self._stopping = threading.Event()
        self._accepted = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._next_ident = 0
        self._listener = socket.create_server((listen_host, 0), backlog=128)
        self._listener.settimeout(_POLL)
        self.host = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._accept_thread.start()

    # -- addresses -------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return (self.host, self.port)

    def redis_url(self, db: int = 0) -> str:
        """A redis-py URL that goes through the proxy."""
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def url(self) -> str:
        """``redis_url(0)``."""
        return self.redis_url()

    @property
    def upstream(self) -> tuple[str, int]:
        """Where new connections are forwarded."""
        with self._lock:
            return self._upstream

    def retarget(self, host: str, port: int) -> None:
        """Send new connections to another upstream (a restarted server); open ones keep theirs."""
        with self._lock:
            self._upstream = (host, port)

    # -- faults ----------------------------------------------------------------------

    @property
    def partitioned(self) -> bool:
        """Whether a partition is in effect."""
        with self._lock:
            return self._partitioned

    def partition(self, *, hold: bool = False) -> None:
        """Stop forwarding in both directions; new connections hang until :meth:`heal`.

        When this returns no further byte crosses: a chunk already being sent
        finishes first, everything after it is dropped - or, with ``hold``,
        kept and delivered at heal (open connections then survive the partition).
        """
        with self._lock:
            self._partitioned = True
            self._hold = hold
            for connection in list(self._connections):
                with connection.lock:
                    if connection.state is _State.LIVE:
                        connection.state = self._silenced_state()

    def _silenced_state(self) -> _State:
        """What a forwarding connection becomes in the current partition (caller holds ``_lock``)."""
        return _State.HELD if self._hold else _State.DOOMED

    def heal(self) -> None:
        """End the partition: reset the silenced connections, connect the waiting ones.

        Held connections forward again, their kept bytes first, in order.
        Returns once every connection accepted during the partition is
        forwarding (or was reset because the upstream refused it).
        """
        with self._lock:
            if not self._partitioned:
                return
            self._partitioned = False
            connections = list(self._connections)
            for connection in connections:
                with connection.lock:
                    if connection.state is _State.HELD:
                        connection.state = _State.LIVE
        for connection in connections:
            if connection.state is _State.DOOMED:
                connection.abort()
            elif connection.state in (_State.PENDING, _State.LIVE):
                connection.wake()
        for connection in connections:
            connection.settled.wait(_CONNECT_TIMEOUT + 1.0)

    def reset_all(self) -> None:
        """Reset (RST) every current connection; the clients' next read or write fails."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()

    @property
    def latency(self) -> float:
        """Seconds each chunk waits before it is forwarded."""
        return self._latency

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk read from now on by ``seconds`` in either direction (0 turns it off)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, not {seconds}")
        self._latency = float(seconds)

    # -- counters ----------------------------------------------------------------------

    @property
    def connections_accepted(self) -> int:
        """Client connections accepted since start (including ones that were reset)."""
        with self._stats_lock:
            return self._accepted

    @property
    def bytes_up(self) -> int:
        """Bytes delivered client -> upstream."""
        with self._stats_lock:
            return self._bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes delivered upstream -> client."""
        with self._stats_lock:
            return self._bytes_down

    @property
    def active_connections(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._connections)

    def _count(self, *, upstream: bool, size: int) -> None:
        with self._stats_lock:
            if upstream:
                self._bytes_up += size
            else:
                self._bytes_down += size

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, reset every connection and join all threads (bounded); idempotent."""
        self._stopping.set()
        self._accept_thread.join(_POLL * 20)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.wake()
        for connection in connections:
            connection.thread.join(_CONNECT_TIMEOUT + _SEND_TIMEOUT + 1.0)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.upstream
        return f"FaultProxy({self.host}:{self.port} -> {host}:{port}, partitioned={self.partitioned})"

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _accept_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    client, _peer = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:  # e.g. out of file descriptors: back off, stay bounded
                    self._stopping.wait(_POLL)
                    continue
                client.settimeout(_SEND_TIMEOUT)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._stats_lock:
                    self._accepted += 1
                with self._lock:
                    if self._stopping.is_set() or len(self._connections) >= self._max_connections:
                        _abort(client)
                        continue
                    self._next_ident += 1
                    connection = _Connection(self, client, self._next_ident)
                    self._connections.add(connection)
                connection.thread.start()
        finally:
            self._listener.close()
