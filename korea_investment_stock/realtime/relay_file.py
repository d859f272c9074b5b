"""The file store's relay: a Unix domain socket beside the token file, newline-delimited messages.

Why a Unix socket: the file store shares one host, and a stream socket reports a dead owner by
itself (the kernel closes it when the owner's process dies), so followers learn of the loss at
once, with no heartbeat to wait out. The socket is 0600 in the store's private directory; a
planted symlink (or any file that is not a socket) at its path is refused, never followed.

Each follower has its own :class:`~.relay.Outbox` and writer thread on the owner's side, so a slow
follower loses frames (and gets a gap message) but never stalls the owner's reader. Messages in
the other direction are only nudges ("the wants changed").

Paths longer than ``sun_path`` allows (108 bytes) are reached through ``/proc/self/fd/<dir fd>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import StorageError
from .relay import DEFAULT_OUTBOX, Outbox, control

__all__ = ["UnixRelayClient", "UnixRelayServer"]

_log = logging.getLogger(__name__)

NUDGE = control("nudge")
_SUN_PATH_MAX = 100
CONNECT_TIMEOUT = 1.0


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A path ``bind``/``connect`` accept: ``path`` itself, or via an open directory fd when too long."""
    text = str(path)
    if len(text.encode()) <= _SUN_PATH_MAX:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _lines(sock: socket.socket) -> Iterator[str]:
    """Complete lines from ``sock`` until EOF or an error."""
    pending = b""
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except OSError:
            return
        if not chunk:
            return
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line:
                yield line.decode("utf-8", "replace")


class _Follower:
    def __init__(self, conn: socket.socket, outbox_size: int) -> None:
        self.conn = conn
        self.outbox = Outbox(outbox_size)

    def write_loop(self) -> None:
        while not self.outbox.closed:
            batch = self.outbox.take(1.0)
            if not batch:
                continue
            try:
                self.conn.sendall(("\n".join(batch) + "\n").encode())
            except OSError:
                self.close()
                return

    def close(self) -> None:
        self.outbox.close()
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()


class UnixRelayServer:
    """The owner's end: accepts followers, fans each message out to their outboxes."""

    def __init__(self, path: Path, *, outbox_size: int = DEFAULT_OUTBOX) -> None:
        self.path = path
        self._outbox_size = outbox_size
        self._listener: socket.socket | None = None
        self._followers: list[_Follower] = []
        self._lock = threading.Lock()
        self._inode: int | None = None
        self._on_nudge: Callable[[], None] = lambda: None
        self._greeting: Callable[[], str] = lambda: control("state")

    def start(self, on_nudge: Callable[[], None], greeting: Callable[[], str]) -> None:
        self._on_nudge, self._greeting = on_nudge, greeting
        self._clear_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _reachable(self.path) as where:
            listener.bind(where)
        os.chmod(self.path, 0o600, follow_symlinks=False)
        self._inode = os.lstat(self.path).st_ino
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="kis-relay-accept", daemon=True).start()

    def _clear_stale(self) -> None:
        """Remove a socket left by a dead owner (we hold the owner lock); refuse anything else there."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            raise StorageError(f"{self.path} is a symbolic link; refusing to follow it. Remove it")
        if not stat.S_ISSOCK(info.st_mode):
            raise StorageError(f"{self.path} is not a socket; remove it")
        if info.st_uid != os.geteuid():
            raise StorageError(f"{self.path} belongs to another user (uid {info.st_uid}); remove it")
        os.unlink(self.path)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            follower = _Follower(conn, self._outbox_size)
            follower.outbox.put(self._greeting())
            with self._lock:
                if self._listener is None:
                    follower.close()
                    return
                self._followers.append(follower)
            threading.Thread(target=follower.write_loop, name="kis-relay-write", daemon=True).start()
            threading.Thread(target=self._read_loop, args=(follower,), name="kis-relay-read", daemon=True).start()

    def _read_loop(self, follower: _Follower) -> None:
        for _line in _lines(follower.conn):
            self._on_nudge()  # the only message a follower sends
        follower.close()
        with self._lock:
            if follower in self._followers:
                self._followers.remove(follower)

    def publish(self, message: str) -> None:
        for follower in self._followers:  # a list read is atomic; a late joiner gets the next message
            follower.outbox.put(message)

    @property
    def followers(self) -> int:
        return len(self._followers)

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            followers, self._followers = self._followers, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
            with contextlib.suppress(OSError):
                if os.lstat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        for follower in followers:
            follower.close()


class UnixRelayClient:
    """A follower's end: one reader thread; ``on_lost`` once when the owner's socket closes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._closing = False
        self._alive = False
        self._send_lock = threading.Lock()

    def connect(self, on_message: Callable[[str], None], on_lost: Callable[[str], None]) -> bool:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISSOCK(info.st_mode):
            _log.warning("%s is not a socket; not following it", self.path)
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            with _reachable(self.path) as where:
                sock.connect(where)
        except OSError:
            sock.close()
            return False
        sock.settimeout(None)
        self._sock, self._alive = sock, True
        threading.Thread(
            target=self._read_loop, args=(sock, on_message, on_lost), name="kis-relay-follow", daemon=True
        ).start()
        return True

    def _read_loop(
        self, sock: socket.socket, on_message: Callable[[str], None], on_lost: Callable[[str], None]
    ) -> None:
        for line in _lines(sock):
            try:
                on_message(line)
            except Exception:  # one bad message must not end the relay
                _log.exception("a relayed message could not be handled")
        self._alive = False
        if not self._closing:
            on_lost("the session owner's relay closed")

    def nudge(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with self._send_lock, contextlib.suppress(OSError):
            sock.sendall((NUDGE + "\n").encode())

    @property
    def alive(self) -> bool:
        return self._alive

    def close(self) -> None:
        self._closing = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
