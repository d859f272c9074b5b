"""``FaultProxy.partition(hold=True)``: what the ``partition[delayed-save]`` scenario relies on.

Open connections keep their bytes through the partition and deliver them, in
order, at heal - even those of a client that gave up and closed meanwhile.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from testsupport import FaultProxy, RedisServer

TIMEOUT = 0.3


@pytest.fixture
def proxied(own_redis: Callable[..., RedisServer]) -> Iterator[tuple[RedisServer, FaultProxy]]:
    server = own_redis()
    with FaultProxy("127.0.0.1", server.port) as proxy:
        yield server, proxy


def _send(sock: socket.socket, *parts: str) -> None:
    """One RESP command."""
    sock.sendall(f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p)}\r\n{p}\r\n".encode() for p in parts))


@pytest.mark.timeout(30)
def test_open_connection_is_stalled_then_answered_at_heal(proxied: tuple[RedisServer, FaultProxy]) -> None:
    _server, proxy = proxied
    with socket.create_connection(proxy.address, timeout=2.0) as sock:
        _send(sock, "PING")
        assert sock.recv(100) == b"+PONG\r\n"
        proxy.partition(hold=True)
        _send(sock, "PING")
        sock.settimeout(TIMEOUT)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # stalled, not reset
        proxy.heal()
        sock.settimeout(2.0)
        assert sock.recv(100) == b"+PONG\r\n"  # the same connection, answered late
        _send(sock, "PING")
        assert sock.recv(100) == b"+PONG\r\n"  # and forwarding again


@pytest.mark.timeout(30)
def test_request_of_a_client_that_gave_up_is_executed_at_heal(proxied: tuple[RedisServer, FaultProxy]) -> None:
    server, proxy = proxied
    key = f"hold:{uuid.uuid4().hex}"
    direct = server.client()
    with socket.create_connection(proxy.address, timeout=2.0) as sock:
        _send(sock, "PING")
        assert sock.recv(100) == b"+PONG\r\n"
        proxy.partition(hold=True)
        _send(sock, "RPUSH", key, "late")
        sock.settimeout(TIMEOUT)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    # The client closed; its request is still in the proxy.
    assert direct.exists(key) == 0
    proxy.heal()
    assert direct.blpop([key], timeout=5) == (key.encode(), b"late")  # woken by the late delivery
    direct.close()
