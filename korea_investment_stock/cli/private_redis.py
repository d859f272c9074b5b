"""A private ``redis-server`` for ``kis-token demo --storage redis``, so the demo needs no Redis of yours.

It listens on a free loopback port with no persistence, in a temporary
directory, and is stopped (and the directory removed) when the demo ends.
Readiness is the server's own "Ready to accept connections" line, read as it
arrives; a server that exits at startup fails at once with its last lines.
The test suite has a richer launcher (``testsupport.redis_server``: pause,
restart, sentinels); this one is the little the demo needs, inside the package.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, cast

from ..errors import ConfigurationError

HOST = "127.0.0.1"
#: How long the server may take to say it is ready.
START_TIMEOUT = 15.0
_READY = b"Ready to accept connections"
#: What to install when ``redis-server`` is missing, by the usual package managers.
INSTALL_HINT = "Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Run a private ``redis-server`` for the ``with`` block; yields its ``redis://`` URL.

    Raises :class:`~..errors.ConfigurationError` saying what is missing when
    ``redis-server`` is not on ``PATH`` or does not start.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigurationError(
            f"--storage redis needs a Redis server: redis-server is not on PATH ({INSTALL_HINT}), "
            "or name a running one with --redis-url or KOREA_INVESTMENT_REDIS_URL"
        )
    workdir = tempfile.mkdtemp(prefix="kis-demo-redis-")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
    log: collections.deque[str] = collections.deque(maxlen=20)
    ready, settled = threading.Event(), threading.Event()

    def read(output: IO[bytes]) -> None:  # drains the pipe for the server's whole life
        with contextlib.suppress(OSError, ValueError), output:
            for raw in output:
                log.append(raw.decode(errors="replace").rstrip())
                if _READY in raw:
                    ready.set()
                    settled.set()
        settled.set()

    threading.Thread(target=read, args=(cast(IO[bytes], proc.stdout),), daemon=True).start()
    try:
        settled.wait(timeout)
        if not ready.is_set():
            tail = "\n".join(log) or "(no output)"
            raise ConfigurationError(f"the private redis-server (port {port}) did not start:\n{tail}")
        yield f"redis://{HOST}:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["private_redis"]
