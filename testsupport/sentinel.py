"""A throwaway Redis Sentinel deployment on loopback, for failover tests.

One master, one replica and three sentinels (quorum 2), each a real
``redis-server`` process in its own temporary directory, with settings that
make a failover take seconds instead of the production default of half a
minute.  Each process is a :class:`testsupport.redis_server.RedisServer`
(ready when it logs so); the cluster's own state (replica in sync, sentinels
agreed, a promotion) is polled, never slept for, and every wait has a
deadline, so a broken server fails the test with its log instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .redis_server import HOST, ManagedRedis, redis_server_binary, start_redis

__all__ = ["DEFAULT_SERVICE", "ManagedRedis", "SentinelCluster", "redis_server_binary", "start_redis"]

DEFAULT_SERVICE = "kis"
_POLL = 0.03


def _client(address: tuple[str, int], timeout: float = 0.5) -> redis.Redis:
    """A client that fails fast: readiness polls must not hide behind redis-py's retries."""
    return redis.Redis(
        host=address[0],
        port=address[1],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _call(address: tuple[str, int], *args: str | int, timeout: float = 0.5) -> Any:
    """One command on a fresh connection, closed afterwards, so polls leave no clients behind."""
    client = _client(address, timeout)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    finally:
        client.close()


def _wait_until(what: str, ready: Callable[[], bool], deadline: float, watch: Sequence[ManagedRedis]) -> None:
    """Poll ``ready`` until it holds; fail early, with logs, if a process dies or the deadline passes."""
    last_error: Exception | None = None
    while True:
        for process in watch:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} (pid {process.pid}, port {process.port}) exited with "
                    f"{process.returncode} while waiting for {what}:\n{process.log_tail()}"
                )
        try:
            if ready():
                return
            last_error = None
        except (redis.RedisError, OSError) as error:
            last_error = error
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {p.name} (port {p.port}) ---\n{p.log_tail()}" for p in watch)
            raise RuntimeError(f"timed out waiting for {what} (last error: {last_error!r})\n{logs}")
        time.sleep(_POLL)


def _pairs(reply: Any) -> dict[str, str]:
    """``SENTINEL MASTER`` as a dict: a map under RESP3, a flat ``[key, value, ...]`` list under RESP2."""
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    items = [str(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


class SentinelCluster:
    """Master + replica + sentinels on free loopback ports; :meth:`stop` leaves nothing behind.

    Use as ``with SentinelCluster() as cluster:`` or call :meth:`start` and
    :meth:`stop`.  Process names are ``master``, ``replica`` (their roles at
    start) and ``sentinel-1`` .. ``sentinel-N``.
    """

    def __init__(
        self,
        service_name: str = DEFAULT_SERVICE,
        *,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        parallel_syncs: int = 1,
        start_timeout: float = 30.0,
        binary: str | None = None,
    ) -> None:
        self.service_name = service_name
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.parallel_syncs = parallel_syncs
        self.start_timeout = start_timeout
        self._binary = binary
        self._nodes: list[ManagedRedis] = []
        self._sentinels: list[ManagedRedis] = []
        self._killed: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SentinelCluster:
        """Start everything and wait until a failover could happen: replica in sync, sentinels agreed."""
        if self._nodes:
            raise RuntimeError("SentinelCluster is already started")
        binary = self._binary or redis_server_binary()
        deadline = time.monotonic() + self.start_timeout
        node_config = ["repl-diskless-sync yes", "repl-diskless-sync-delay 0"]  # first sync in ms, not 5 s
        try:
            master = start_redis("master", node_config, binary=binary)
            self._nodes.append(master)
            replica = start_redis("replica", [*node_config, f"replicaof {HOST} {master.port}"], binary=binary)
            self._nodes.append(replica)
            _wait_until("the replica to sync", lambda: self._link_up(replica), deadline, self._nodes)
            # Sentinels start after the sync so their first INFO of the master already lists the replica.
            for index in range(1, self.sentinel_count + 1):
                self._sentinels.append(
                    start_redis(f"sentinel-{index}", self._sentinel_config(master), sentinel=True, binary=binary)
                )
            _wait_until("the sentinels to agree on the master", self._sentinels_agree, deadline, self.processes)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every process we started, reap them and remove their directories."""
        for process in [*self._sentinels, *self._nodes]:
            process.stop()
        self._sentinels.clear()
        self._nodes.clear()
        self._killed = None

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests read ----------------------------------------------------------------

    @property
    def processes(self) -> list[ManagedRedis]:
        """Data nodes then sentinels."""
        return [*self._nodes, *self._sentinels]

    @property
    def pids(self) -> dict[str, int]:
        """Process id by name (``master``, ``replica``, ``sentinel-1`` ...)."""
        return {process.name: process.pid for process in self.processes}

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """For ``redis.sentinel.Sentinel(...)``."""
        return [process.address for process in self._sentinels]

    @property
    def redis_addresses(self) -> list[tuple[str, int]]:
        """The data nodes, master (as started) first."""
        return [process.address for process in self._nodes]

    def node_at(self, address: tuple[str, int]) -> ManagedRedis:
        """The data node listening on ``address``."""
        for node in self._nodes:
            if node.address == address:
                return node
        raise KeyError(f"no data node of this cluster at {address}")

    def master_address(self) -> tuple[str, int]:
        """The master as the first sentinel that answers sees it."""
        errors: list[str] = []
        for address in self.sentinel_addresses:
            try:
                reply = _call(address, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
            except (redis.RedisError, OSError) as error:
                errors.append(f"{address}: {error!r}")
                continue
            if reply:
                return (str(reply[0]), int(reply[1]))
            errors.append(f"{address}: does not know {self.service_name!r}")
        raise RuntimeError(f"no sentinel reported the master: {errors}")

    # -- faults ----------------------------------------------------------------------------

    def kill_master(self) -> float:
        """SIGKILL the current master; returns ``time.monotonic()`` of the kill."""
        address = self.master_address()
        node = self.node_at(address)
        if not node.alive():
            raise RuntimeError(f"the master at {address} is already dead; wait_for_promotion() first")
        self._killed = address
        return node.kill()

    def wait_for_promotion(self, timeout: float = 30.0) -> float:
        """Wait until the sentinels name a new master that says it is one; returns ``time.monotonic()`` then.

        Every sentinel that answers must agree (at least ``quorum`` must
        answer), so a client asking any of them next gets the new master.
        """
        if self._killed is None:
            raise RuntimeError("call kill_master() before wait_for_promotion()")
        killed = self._killed
        found: dict[str, Any] = {}

        def promoted() -> bool:
            answers: list[tuple[str, int]] = []
            for address in self.sentinel_addresses:
                try:
                    reply = _call(address, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
                except (redis.RedisError, OSError):
                    continue
                if reply:
                    answers.append((str(reply[0]), int(reply[1])))
            found["answers"] = answers
            if len(answers) < self.quorum or len(set(answers)) != 1 or answers[0] == killed:
                return False
            role = _call(answers[0], "ROLE")
            return bool(role) and role[0] == "master"

        try:
            _wait_until("a new master", promoted, time.monotonic() + timeout, self._sentinels)
        except RuntimeError as error:
            raise TimeoutError(
                f"no promotion within {timeout} s; sentinels said {found.get('answers')}: {error}"
            ) from None
        self._killed = None
        return time.monotonic()

    # -- internals -------------------------------------------------------------------------

    def _sentinel_config(self, master: ManagedRedis) -> list[str]:
        name = self.service_name
        return [
            f"sentinel monitor {name} {master.host} {master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} {self.parallel_syncs}",
        ]

    @staticmethod
    def _link_up(replica: ManagedRedis) -> bool:
        info = _call(replica.address, "INFO", "replication")
        return isinstance(info, dict) and info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        replicas = len(self._nodes) - 1
        for sentinel in self._sentinels:
            state = _pairs(_call(sentinel.address, "SENTINEL", "MASTER", self.service_name))
            if set(state.get("flags", "").split(",")) != {"master"}:  # no s_down, o_down, failover
                return False
            if int(state.get("num-other-sentinels", -1)) != self.sentinel_count - 1:
                return False
            if int(state.get("num-slaves", -1)) != replicas:
                return False
        return True
