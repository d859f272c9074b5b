"""A one-request HTTP server on loopback that sends its answer one byte at a time.

Each byte arrives well within any read timeout, so only a deadline on the whole
call ends a client's wait: the fault behind issue 16, point 13, for code paths
the fake KIS server does not cover (master downloads, headers themselves).
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class TrickleServer:
    """Serves ``answer`` (raw HTTP bytes) to one request, a byte every ``pace`` seconds, until stopped."""

    def __init__(self, answer: bytes, pace: float) -> None:
        self._answer = answer
        self._pace = pace
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(10)
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"trickle-{self.port}", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            for byte in self._answer:
                if self._stop.wait(self._pace):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up
                    return

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(10)

    def __enter__(self) -> TrickleServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def slow_headers(padding: int = 200) -> bytes:
    """An answer whose headers alone take ``padding`` bytes (so ``padding`` paces) to arrive."""
    return b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * padding + b"\r\nContent-Length: 2\r\n\r\n{}"
