"""The dev-only fault tools (``testsupport``) against real redis-server processes.

Other tests trust these tools to produce exactly the fault they name, so each
fault is checked here from a real client's point of view.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from testsupport import FaultProxy, ManagedRedis, RedisServer, SentinelCluster, redis_server, start_redis

pytestmark = [pytest.mark.real_redis, pytest.mark.timeout(30)]

TIMEOUT = 0.5


def require_redis_server() -> None:
    """Skip without redis-server, but fail under CI so a green CI run means these ran."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so these tests must run")
        pytest.skip(reason)


def no_retry_client(url: str) -> redis.Redis:
    """redis-py retries timeouts by default; the tests want to see the first failure."""
    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0)
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ManagedRedis]:
    require_redis_server()
    server = start_redis("proxy-upstream")
    yield server
    server.stop()


@pytest.fixture
def proxy(upstream: ManagedRedis) -> Iterator[FaultProxy]:
    """A proxy in front of ``upstream``; afterwards none of its threads may be left running."""
    with FaultProxy(upstream.host, upstream.port) as fault_proxy:
        yield fault_proxy
    prefix = f"faultproxy-{fault_proxy.port}"
    leftover = [t.name for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]
    assert leftover == []


def test_forwards_commands_and_counts_bytes(proxy: FaultProxy) -> None:
    client = no_retry_client(proxy.redis_url())
    assert client.ping() is True
    key = f"testsupport:{uuid.uuid4().hex}"
    client.set(key, "v", ex=60)
    assert client.get(key) == b"v"
    client.close()
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    assert proxy.connections_accepted >= 1
    assert proxy.bytes_up > 0
    assert proxy.bytes_down > 0


def test_pubsub_through_the_proxy(proxy: FaultProxy, upstream: ManagedRedis) -> None:
    channel = f"testsupport:{uuid.uuid4().hex}"
    subscriber = no_retry_client(proxy.redis_url()).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    assert subscriber.get_message(timeout=2.0) is None  # consumes the subscribe confirmation
    publisher = upstream.client()
    assert publisher.publish(channel, "hello") == 1
    message = subscriber.get_message(timeout=2.0)
    assert message is not None
    assert message["data"] == b"hello"
    subscriber.close()
    publisher.close()


def test_partition_times_out_then_heal_recovers(proxy: FaultProxy) -> None:
    client = no_retry_client(proxy.redis_url())
    assert client.ping() is True

    proxy.partition()
    assert proxy.partitioned
    started = time.monotonic()
    with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
        client.ping()  # the pooled connection from before the partition
    assert time.monotonic() - started >= TIMEOUT * 0.9  # a timeout, not a quick refusal

    fresh = no_retry_client(proxy.redis_url())
    started = time.monotonic()
    with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
        fresh.ping()  # a connection made during the partition is accepted but never answered
    assert time.monotonic() - started >= TIMEOUT * 0.9

    proxy.heal()
    assert not proxy.partitioned
    assert client.ping() is True
    assert fresh.ping() is True
    client.close()
    fresh.close()


def test_connection_made_during_partition_is_connected_at_heal(proxy: FaultProxy) -> None:
    proxy.partition()
    with socket.create_connection(proxy.address, timeout=TIMEOUT) as sock:  # accepted, not refused
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        proxy.heal()
        sock.settimeout(2.0)
        assert sock.recv(100) == b"+PONG\r\n"  # the bytes sent during the partition were delivered


def test_connection_open_at_partition_is_silent_then_reset_at_heal(proxy: FaultProxy) -> None:
    with socket.create_connection(proxy.address, timeout=2.0) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        proxy.partition()
        up_before = proxy.bytes_up
        sock.sendall(b"PING\r\n")
        sock.settimeout(TIMEOUT)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert proxy.bytes_up == up_before  # dropped, not forwarded
        proxy.heal()
        sock.settimeout(2.0)
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_reset_all_breaks_open_connections_only(proxy: FaultProxy) -> None:
    connection = redis.Connection(
        host=proxy.host,
        port=proxy.port,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    connection.connect()
    connection.send_command("PING")
    assert connection.read_response() in (b"PONG", "PONG")

    proxy.reset_all()
    assert proxy.active_connections == 0
    with pytest.raises(redis.exceptions.ConnectionError):
        connection.send_command("PING")
        connection.read_response()

    connection.disconnect()
    connection.connect()  # a fresh connection through the same proxy works
    connection.send_command("PING")
    assert connection.read_response() in (b"PONG", "PONG")
    connection.disconnect()


def test_latency_delays_each_chunk(proxy: FaultProxy) -> None:
    client = no_retry_client(proxy.redis_url())
    assert client.ping() is True
    proxy.set_latency(0.2)
    started = time.monotonic()
    assert client.ping() is True
    slow = time.monotonic() - started
    assert slow >= 0.2  # request and reply are each delayed, so about 0.4 s
    proxy.set_latency(0)
    started = time.monotonic()
    assert client.ping() is True
    assert time.monotonic() - started < 0.2
    with pytest.raises(ValueError):
        proxy.set_latency(-1)
    client.close()


def test_retarget_sends_new_connections_elsewhere(proxy: FaultProxy, upstream: ManagedRedis) -> None:
    other = start_redis("proxy-other")
    try:
        before = no_retry_client(proxy.redis_url())
        assert before.info("server")["tcp_port"] == upstream.port
        proxy.retarget(other.host, other.port)
        assert proxy.upstream == other.address
        after = no_retry_client(proxy.redis_url())
        assert after.info("server")["tcp_port"] == other.port
        assert before.info("server")["tcp_port"] == upstream.port  # open connections keep their upstream
        before.close()
        after.close()
    finally:
        other.stop()


def test_upstream_down_resets_the_client(upstream: ManagedRedis) -> None:
    dead = start_redis("proxy-dead")
    dead.stop()
    with FaultProxy(dead.host, dead.port) as fault_proxy:
        client = no_retry_client(fault_proxy.redis_url())
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        client.close()


def test_close_stops_listening_and_every_thread(upstream: ManagedRedis) -> None:
    fault_proxy = FaultProxy(upstream.host, upstream.port)
    client = no_retry_client(fault_proxy.redis_url())
    assert client.ping() is True
    fault_proxy.partition()  # a silent connection and a waiting one must not keep it alive
    waiting = socket.create_connection(fault_proxy.address, timeout=TIMEOUT)
    started = time.monotonic()
    fault_proxy.close()
    fault_proxy.close()  # idempotent
    assert time.monotonic() - started < 2.0
    prefix = f"faultproxy-{fault_proxy.port}"
    assert [t.name for t in threading.enumerate() if t.name.startswith(prefix)] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(fault_proxy.address, timeout=TIMEOUT).close()
    waiting.close()
    client.close()


# ------------------------------------------------------------------ the redis-server launcher
def test_launcher_restart_comes_back_empty_on_the_same_port() -> None:
    require_redis_server()
    with RedisServer(name="launcher") as server:
        workdir, pid, port = server.workdir, server.pid, server.port
        client = server.client(socket_timeout=TIMEOUT)
        assert client.set("k", "v") is True
        server.restart()
        assert server.port == port and server.pid != pid
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert client.get("k") is None  # SIGKILL: nothing was persisted
        client.close()
        pid = server.pid
    with pytest.raises(ProcessLookupError):  # stop() killed and reaped it
        os.kill(pid, 0)
    assert not workdir.exists()  # a directory it made itself is removed


def test_launcher_pause_holds_replies_until_resume() -> None:
    require_redis_server()
    with start_redis("launcher-pause") as server:
        client = no_retry_client(server.url)
        assert client.ping() is True
        server.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        server.resume()
        assert no_retry_client(server.url).ping() is True
        client.close()


def test_launcher_retries_a_port_taken_before_it_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    require_redis_server()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = redis_server.free_port
        monkeypatch.setattr(redis_server, "free_port", lambda: next(ports, None) or real_free_port())
        with RedisServer(name="launcher-retry") as server:
            assert server.port != taken
            assert no_retry_client(server.url).ping() is True
        with pytest.raises(RuntimeError, match="was taken"):  # a port the caller chose is not swapped
            RedisServer(name="launcher-fixed", port=taken).start()


def test_launcher_startup_failure_is_immediate_and_shows_the_log() -> None:
    require_redis_server()
    server = RedisServer(name="launcher-bad", extra=["--no-such-option", "1"])
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with .* at startup") as caught:
        server.start(timeout=30)
    assert time.monotonic() - started < 5  # the end of its output, not the timeout
    assert "no-such-option" in str(caught.value)
    assert not server.alive() and not server.workdir.exists()


@pytest.mark.real_redis
@pytest.mark.timeout(90)
def test_sentinel_failover_promotes_the_replica_with_acknowledged_writes() -> None:
    require_redis_server()
    options = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    with SentinelCluster() as cluster:
        assert len(cluster.sentinel_addresses) == 3
        assert set(cluster.pids) == {"master", "replica", "sentinel-1", "sentinel-2", "sentinel-3"}
        sentinel = Sentinel(cluster.sentinel_addresses, sentinel_kwargs=options, **options)
        master = sentinel.master_for("kis", **options)
        key = f"testsupport:{uuid.uuid4().hex}"
        assert master.set(key, "before-failover") is True
        assert master.get(key) == b"before-failover"
        assert master.wait(1, 1000) == 1  # the replica has it before the master dies
        old_master = cluster.master_address()
        assert old_master == cluster.redis_addresses[0]
        master.close()

        killed_at = cluster.kill_master()
        promoted_at = cluster.wait_for_promotion(30)
        assert killed_at < promoted_at < killed_at + 30

        new_master = cluster.master_address()
        assert new_master != old_master
        assert new_master == cluster.redis_addresses[1]
        fresh = Sentinel(cluster.sentinel_addresses, sentinel_kwargs=options, **options).master_for("kis", **options)
        assert fresh.get(key) == b"before-failover"
        assert fresh.set(key, "after-failover") is True
        fresh.close()
        pids = list(cluster.pids.values())
    for pid in pids:  # stop() killed and reaped every process
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
