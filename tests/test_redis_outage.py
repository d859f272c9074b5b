"""Storage faults on a real redis-server: ridden out, never a lost token, and the minimal ACL.

Faults are real: the server is SIGKILLed and a new, empty one started; callers
reach it through a loopback TCP proxy (``testsupport.FaultProxy``) that resets
their connections and is pointed at the new server.  Each "server" of the
fleet is a store with a Redis client of its own, so they share Redis but not
the in-process flight.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from korea_investment_stock import LockingRedisTokenStorage
from korea_investment_stock.errors import StorageUnavailableError
from korea_investment_stock.token.storage import wait_for_pending_saves
from testsupport import FaultProxy, start_redis

from .redis_fixtures import require_redis_server
from .redis_workers import issuer
from .test_redis_acl import readme_acl_commands

pytestmark = pytest.mark.real_redis
HANG = 60.0

#: The commands the stores send (inside Lua scripts too): the minimal ACL the README documents, read
#: from it.  Redis 7 denies channels by default, hence the ``&`` pattern below.
ACL_COMMANDS = readme_acl_commands()


def fleet_client(url: str, **kwargs: Any) -> Any:
    """A redis-py client as the README recommends for ``client=``: short timeouts, retried connects."""
    return redis.Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[redis.exceptions.ConnectionError],
        decode_responses=False,
        **kwargs,
    )


def bare_client(url: str) -> Any:
    """A redis-py client that retries nothing itself."""
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))


class Fleet:
    """``servers`` stores × ``threads`` callers asking for a token at once; outcomes per caller."""

    def __init__(self, stores: list[LockingRedisTokenStorage], kis: Any, threads: int) -> None:
        self.tokens: list[str] = []
        self.errors: list[BaseException] = []
        lock = threading.Lock()
        issue = issuer(kis.url, kis.app_key, kis.app_secret)
        start = threading.Barrier(len(stores) * threads)

        def body(store: LockingRedisTokenStorage) -> None:
            try:
                start.wait(HANG)
                record = store.get_token(kis.app_key, kis.app_secret, issue)
                with lock:
                    self.tokens.append(record.access_token)
            except BaseException as exc:
                with lock:
                    self.errors.append(exc)

        self.threads = [threading.Thread(target=body, args=(s,), daemon=True) for s in stores for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def join(self) -> Fleet:
        for thread in self.threads:
            thread.join(HANG)
            assert not thread.is_alive(), "a caller hung"
        return self


@pytest.fixture
def redis_binary() -> str:
    return require_redis_server()


def test_a_redis_restart_mid_issuance_costs_no_caller_anything(redis_binary, fake_kis_factory):
    kis = fake_kis_factory()
    kis.set_token_fault("delay", times=1, delay=1.0)  # the lease holder is inside tokenP for a second
    server = start_redis("restart")
    proxy = FaultProxy("127.0.0.1", server.port)
    replacement = None
    try:
        prefix = f"kis-test:{uuid.uuid4().hex[:12]}"
        # Clients that never retry on their own: riding the outage out is the store's job.
        stores = [LockingRedisTokenStorage(client=bare_client(proxy.url), key_prefix=prefix) for _ in range(3)]
        fleet = Fleet(stores, kis, threads=4)
        kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, HANG)
        server.kill()  # SIGKILL: the lease, the counter and the fence are gone with it
        proxy.reset_all()
        threading.Event().wait(1.0)  # the outage itself: a second with nothing listening
        replacement = start_redis("restart-empty")
        proxy.retarget("127.0.0.1", replacement.port)
        fleet.join()
        assert fleet.errors == []
        assert len(set(fleet.tokens)) == 1
        assert kis.stats.tokenp_requests <= 2
        # The token the outage kept from Redis is stored in the background, as soon as Redis answers:
        # the callers may well finish first, so wait for that save (bounded) before looking.
        assert wait_for_pending_saves(HANG), "the background save did not finish"
        stored = stores[0].load_token(kis.app_key, kis.app_secret)
        assert stored is not None and stored["access_token"] == fleet.tokens[0], "the issued token reached Redis"
    finally:
        proxy.close()
        server.stop()
        if replacement is not None:
            replacement.stop()


def test_a_token_whose_save_failed_is_stored_once_redis_answers(redis_binary, fake_kis_factory):
    """The leader's process uses the token at once; a background save stores it for the fleet."""
    kis = fake_kis_factory()
    entered, release = threading.Event(), threading.Event()
    real = issuer(kis.url, kis.app_key, kis.app_secret)

    def slow_issue():
        record = real()
        entered.set()
        assert release.wait(HANG)  # the partition starts while tokenP has answered but before the save
        return record

    server = start_redis("background-save")
    proxy = FaultProxy("127.0.0.1", server.port)
    try:
        prefix = f"kis-test:{uuid.uuid4().hex[:12]}"
        leader = LockingRedisTokenStorage(client=fleet_client(proxy.url), key_prefix=prefix)
        result: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: result.setdefault("record", leader.get_token(kis.app_key, kis.app_secret, slow_issue))
        )
        worker.start()
        assert entered.wait(HANG)
        proxy.partition()
        release.set()
        worker.join(HANG)
        assert not worker.is_alive()
        token = result["record"].access_token  # served although Redis is unreachable
        observer = redis.Redis(port=server.port, socket_timeout=3)
        key = leader.redis_keys(kis.app_key).token
        assert observer.hget(key, "access_token") is None
        proxy.heal()
        stored = None
        for _ in range(200):  # bounded: the background save retries at most every 0.5 s
            stored = observer.hget(key, "access_token")
            if stored is not None:
                break
            threading.Event().wait(0.05)
        assert stored == token.encode()
        assert kis.stats.tokenp_requests == 1
    finally:
        proxy.close()
        server.stop()


def test_a_store_that_never_answered_fails_fast(redis_binary):
    server = start_redis("never")
    port = server.port
    server.stop()  # nothing listens there now
    store = LockingRedisTokenStorage(f"redis://127.0.0.1:{port}/0", outage_allowance=30.0)
    with pytest.raises(StorageUnavailableError):
        store.get_token("PS" + "k" * 34, "s" * 60, lambda: pytest.fail("no tokenP without a store"))
    with pytest.raises(StorageUnavailableError):  # or at once, when asked to ping at construction
        LockingRedisTokenStorage(f"redis://127.0.0.1:{port}/0", outage_allowance=30.0, ping=True)


def test_the_documented_minimal_acl_is_enough(redis_binary, fake_kis_factory):
    password = uuid.uuid4().hex
    prefix = "kis-acl:token"
    rule = f"user kis on >{password} ~{prefix}:* &{prefix}:* -@all {ACL_COMMANDS}"
    server = start_redis("acl", config=[rule])
    try:
        kis = fake_kis_factory()
        url = f"redis://kis@127.0.0.1:{server.port}/0"
        stores = [LockingRedisTokenStorage(url, password=password, key_prefix=prefix) for _ in range(2)]
        stores.append(LockingRedisTokenStorage(client=fleet_client(url, password=password), key_prefix=prefix))
        fleet = Fleet(stores, kis, threads=3).join()
        assert fleet.errors == []
        assert len(set(fleet.tokens)) == 1 and kis.stats.tokenp_requests == 1
        store = stores[0]
        assert store.health_check().reachable
        assert store.invalidate_token(kis.app_key, kis.app_secret, fleet.tokens[0])
        kis.set_token_fault("http500", times=1)  # a failed issuance writes the failure marker
        with pytest.raises(Exception, match="tokenP"):
            store.get_token(kis.app_key, kis.app_secret, issuer(kis.url, kis.app_key, kis.app_secret))
        admin = redis.Redis(port=server.port, socket_timeout=3)
        assert admin.acl_log() == [], "a command or key was denied"
    finally:
        server.stop()


def test_a_replica_that_lost_its_master_is_an_outage_not_a_failure(redis_binary):
    """Mid-failover a replica answers MASTERDOWN: ride it out. A plain replica's READONLY stays a failure."""
    server = start_redis("masterdown", config=["replica-serve-stale-data no"])
    try:
        redis.Redis(port=server.port, socket_timeout=3).execute_command("REPLICAOF", "127.0.0.1", "1")
        store = LockingRedisTokenStorage(f"redis://127.0.0.1:{server.port}/0", key_prefix="kis-test:replica")
        with pytest.raises(StorageUnavailableError, match="MasterDownError"):
            store.load_token("PS" + "k" * 34, "s" * 60)
    finally:
        server.stop()
