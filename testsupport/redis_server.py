"""The one private ``redis-server`` launcher for the tests, the stress suite and the bench.

A test that counts commands, stops, pauses or restarts Redis needs a server
nobody else uses: this starts one on a free loopback port with no
persistence, in a directory of its own.  Readiness is the server's own
"Ready to accept connections" log line (``Sentinel ID is`` for a sentinel),
read from its stdout as it arrives: no polling, no sleeps, and a server that
dies at startup fails at once with its log instead of after a timeout.  A
chosen port that someone else took before the server bound it is retried on
another port.  Every wait has a deadline.

Stdlib only; :meth:`RedisServer.client` imports redis-py when called.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import redis

__all__ = ["HOST", "ManagedRedis", "RedisServer", "free_port", "redis_server_binary", "start_redis"]

HOST = "127.0.0.1"
#: How long :meth:`RedisServer.start` waits for the ready line, by default.
START_TIMEOUT = 15.0
#: Ports tried when the chosen one was taken before the server bound it.
PORT_ATTEMPTS = 5
#: How much of a server's log is kept for error messages.
LOG_LINES = 200
_READY = b"Ready to accept connections"
_SENTINEL_READY = b"Sentinel ID is"
_PORT_IN_USE = "Address already in use"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH; a clear error instead of a FileNotFoundError deep in Popen."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)")
    return path


class _PortTaken(RuntimeError):
    """The server exited because its port was taken between choosing and binding it."""


class RedisServer:
    """A private ``redis-server`` (or sentinel) process a test may stop, pause, kill or restart.

    ``workdir`` defaults to a new temporary directory, removed by :meth:`stop`;
    a given one is left for its owner (pytest's ``tmp_path``).  ``port``
    defaults to a free one, retried if taken; :meth:`restart` comes back on
    the same port.  ``config`` lines go into a real config file (a sentinel
    rewrites its own, and ``CONFIG REWRITE`` needs one); ``extra`` are more
    command-line arguments.  ``url`` never contains the password.
    """

    def __init__(
        self,
        binary: str | None = None,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        extra: Sequence[str] = (),
        config: Sequence[str] = (),
        password: str | None = None,
        unix_socket: bool = False,
        sentinel: bool = False,
        name: str = "redis",
    ) -> None:
        self.binary = binary or redis_server_binary()
        self.name = name
        self.host = HOST
        self.extra = tuple(extra)
        self.config = tuple(config)
        self.password = password
        self.sentinel = sentinel
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"kis-{name}-")) if workdir is None else workdir
        self.unix_socket: Path | None = self.workdir / "redis.sock" if unix_socket else None
        self._port_fixed = port is not None
        self.port = free_port() if port is None else port
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        #: ``time.monotonic()`` of our SIGKILL of the current process (None while it runs).
        self.killed_at: float | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._log_lock = threading.Lock()

    # -- what callers read ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (no password in it)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port)."""
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        """The process id of the current (or last) process."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process (None while it runs or before a start)."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        """Whether the process is running (a paused one is)."""
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (5 s timeouts and the password unless ``kwargs`` say otherwise)."""
        import redis

        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self.password,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
            **kwargs,
        }
        return redis.Redis(**options)

    def log_tail(self, lines: int = 25) -> str:
        """The end of the current process's log, for error messages."""
        with self._log_lock:
            tail = list(self._log)[-lines:]
        return "\n".join(tail) if tail else "(no log)"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start it and return once it logged that it accepts connections; on failure nothing is left running."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        attempts = 1 if self._port_fixed else PORT_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            try:
                self._launch(timeout)
            except _PortTaken:
                continue
            except BaseException:
                self.stop()
                raise
            self._port_fixed = True  # restart() comes back on this port
            return self
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name}: port {self.port} was taken ({attempts} attempt(s)):\n{tail}")

    def _launch(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / ("sentinel.conf" if self.sentinel else "redis.conf")
        config_file.write_text("".join(f"{line}\n" for line in self.config))
        args = [self.binary, str(config_file)]
        if self.sentinel:
            args.append("--sentinel")
        args += ["--port", str(self.port), "--bind", self.host, "--protected-mode", "no", "--dir", str(self.workdir)]
        args += ["--daemonize", "no", "--logfile", "", "--loglevel", "notice"]
        if not self.sentinel:
            args += ["--save", "", "--appendonly", "no"]
        if self.unix_socket is not None:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += self.extra
        with self._log_lock:
            self._log.clear()
        ready, settled = threading.Event(), threading.Event()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
        self.proc, self.killed_at, self.paused = proc, None, False
        ready_line = _SENTINEL_READY if self.sentinel else _READY
        output = cast(IO[bytes], proc.stdout)  # stdout=PIPE always gives one
        reader = threading.Thread(
            target=self._read_log, args=(output, ready_line, ready, settled), name=f"{self.name}-log", daemon=True
        )
        reader.start()
        in_time = settled.wait(timeout)  # set by the ready line or by the end of the output
        if ready.is_set():
            return
        if not in_time:
            self.kill()
            raise RuntimeError(
                f"{self.name} (port {self.port}) did not log {ready_line.decode()!r} in {timeout:.0f} s:\n"
                f"{self.log_tail()}"
            )
        try:  # the output ended: the process is exiting
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} closed its output at startup but did not exit") from None
        self.killed_at = time.monotonic()  # nothing left to kill
        tail = self.log_tail()
        if _PORT_IN_USE in tail:
            raise _PortTaken(tail)
        raise RuntimeError(f"{self.name} (port {self.port}) exited with {proc.returncode} at startup:\n{tail}")

    def _read_log(self, output: IO[bytes], ready_line: bytes, ready: threading.Event, settled: threading.Event) -> None:
        """Keep the last lines of the output and drain the pipe, so the server never blocks on a full one."""
        with contextlib.suppress(OSError, ValueError), output:
            for raw in output:  # ends when the process (and any fork of it) is gone
                with self._log_lock:
                    self._log.append(raw.decode(errors="replace").rstrip())
                if not ready.is_set() and ready_line in raw:
                    ready.set()
                    settled.set()
        settled.set()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered, like a hung server."""
        if not self.alive():
            raise RuntimeError(f"{self.name} is not running")
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`; the queued commands are answered."""
        if self.paused and self.alive():
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> float:
        """SIGKILL (a crash, not a shutdown: the in-memory data is gone) and reap it.

        Returns ``time.monotonic()`` of the signal; safe to call twice (the
        second call returns the first one's time).  A paused server dies too.
        """
        proc = self.proc
        if proc is None:
            return time.monotonic()
        if self.killed_at is not None:
            return self.killed_at
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        self.paused = False
        return self.killed_at

    def restart(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Kill it and start it again on the same port, empty."""
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        """Kill it and remove its directory if we made it; safe to call twice."""
        self.kill()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self if self.alive() else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<RedisServer {self.name} {self.url} {state}>"


#: The name :mod:`testsupport.sentinel` and its callers knew it by.
ManagedRedis = RedisServer


def start_redis(
    name: str,
    config: Sequence[str] = (),
    *,
    sentinel: bool = False,
    binary: str | None = None,
    timeout: float = START_TIMEOUT,
    **options: Any,
) -> RedisServer:
    """Start ``name`` in a temporary directory of its own (``options`` as for :class:`RedisServer`)."""
    return RedisServer(binary, name=name, config=config, sentinel=sentinel, **options).start(timeout)
