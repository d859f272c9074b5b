"""Redis for the tests: a real ``redis-server`` and ``fakeredis`` with Lua.

The real server is ``$KIS_TEST_REDIS_URL`` when set (CI starts one), else one
this module starts (``testsupport.redis_server.RedisServer``: a free loopback
port, no persistence), once per test session (per xdist worker).  Without
``redis-server`` the real-Redis tests skip with the reason, unless ``CI`` is
set: then they fail, so CI cannot go green without them.

Tests never FLUSHDB: each takes its own ``redis_prefix``, so any number of
them can share one server under ``pytest -n auto``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testsupport.redis_server import RedisServer, redis_server_binary


def require_redis_server() -> str:
    """The ``redis-server`` path, or skip (fail under ``CI``) with the reason."""
    try:
        return redis_server_binary()
    except RuntimeError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI is set, so the real-Redis tests must run")
        pytest.skip(f"{missing}; set KIS_TEST_REDIS_URL to use a running server")


def start_redis(*extra: str, password: str | None = None, unix_socket: bool = False) -> RedisServer:
    """Start a private ``redis-server`` (in a temporary directory :meth:`~RedisServer.stop` removes)."""
    return RedisServer(
        require_redis_server(), name="test-redis", extra=extra, password=password, unix_socket=unix_socket
    ).start()


#: Servers shared by every test of this process, whichever module's fixture started them:
#: test modules import these fixtures, so each module has its own fixture definition.
_SHARED: dict[str, RedisServer] = {}


def _shared_server(config: pytest.Config, name: str, **kwargs: Any) -> RedisServer:
    server = _SHARED.get(name)
    if server is None:
        server = _SHARED[name] = start_redis(**kwargs)
        config.add_cleanup(lambda: _SHARED.pop(name).stop())
    return server


@pytest.fixture(scope="session")
def redis_server_url(request: pytest.FixtureRequest) -> str:
    """The shared real server for this session (``$KIS_TEST_REDIS_URL`` or one we start)."""
    configured = os.environ.get("KIS_TEST_REDIS_URL")
    if configured:
        return configured
    return _shared_server(request.config, "plain").url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """URL of the shared real Redis; pair it with ``redis_prefix``."""
    return redis_server_url


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    import redis

    prefix = f"kis-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_server_url, socket_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (for exact command counts, or a unix socket)."""
    server = start_redis(unix_socket=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def password_redis(request: pytest.FixtureRequest) -> RedisServer:
    """A redis-server started with ``--requirepass`` (a random password)."""
    return _shared_server(request.config, "password", password=f"pw-{uuid.uuid4().hex}")


@pytest.fixture
def fake_redis() -> object:
    """A ``fakeredis.FakeRedis`` (Lua enabled) on a server of its own, decoding replies."""
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)


@dataclass
class RedisBackend:
    """One Redis to run a test against; every :meth:`client` acts as a separate process would.

    ``prefix`` is this test's own key prefix, so tests can share a real server.
    """

    name: str
    prefix: str
    factory: Callable[[type | None], Any]

    def client(self, cls: type | None = None) -> Any:
        """A new client (of ``cls``, a FakeRedis or Redis subclass, if given), decoding replies."""
        return self.factory(cls)


@pytest.fixture(params=["fakeredis", pytest.param("real", marks=pytest.mark.real_redis)])
def redis_backend(request: pytest.FixtureRequest) -> RedisBackend:
    """The same test on fakeredis (with Lua) and on the real redis-server."""
    if request.param == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()
        return RedisBackend(
            "fakeredis",
            f"kis-test:{uuid.uuid4().hex[:12]}",
            lambda cls: (cls or fakeredis.FakeRedis)(server=server, decode_responses=True),
        )
    import redis

    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return RedisBackend("real", prefix, lambda cls: (cls or redis.Redis).from_url(url, decode_responses=True))
