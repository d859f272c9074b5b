"""LockingRedisTokenStorage: lease, renewal, fenced save, followers, failure marker.

Every test runs twice: on fakeredis (with Lua) and on the real redis-server.
Each "server" is a store with a client of its own, so they share Redis but not
the in-process flight, as separate processes would.  Tokens come from the fake
KIS server over loopback HTTP.
"""

from __future__ import annotations

import threading
import time

import pytest

from korea_investment_stock import LockingRedisTokenStorage
from korea_investment_stock.errors import TokenIssueError, TokenWaitTimeout
from korea_investment_stock.token.credentials import Credentials
from korea_investment_stock.token.lease import Acquired, SaveOutcome
from korea_investment_stock.token.record import credential_fingerprint

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .redis_workers import HANG, issuer, make_record


@pytest.fixture
def server(redis_backend):  # noqa: F811
    return redis_backend


def node(server, **kwargs) -> LockingRedisTokenStorage:
    """One more "server" sharing the Redis under test."""
    return LockingRedisTokenStorage(client=server.client(), key_prefix=server.prefix, **kwargs)


class Callers:
    """``n`` threads calling ``get_token`` on one store; results and errors per thread."""

    def __init__(self, storage, kis, n: int = 1, start: threading.Barrier | None = None) -> None:
        self.tokens: list[str] = []
        self.errors: list[BaseException] = []
        self.finished: list[float] = []
        self._lock = threading.Lock()
        issue = issuer(kis.url, kis.app_key, kis.app_secret)

        def body() -> None:
            try:
                if start is not None:
                    start.wait(HANG)
                record = storage.get_token(kis.app_key, kis.app_secret, issue)
                with self._lock:
                    self.tokens.append(record.access_token)
                    self.finished.append(time.monotonic())
            except BaseException as exc:
                with self._lock:
                    self.errors.append(exc)

        self.threads = [threading.Thread(target=body, daemon=True) for _ in range(n)]
        for thread in self.threads:
            thread.start()

    def join(self) -> Callers:
        for thread in self.threads:
            thread.join(HANG)
            assert not thread.is_alive(), "a caller hung"
        return self


def lock_owner(server, storage, kis) -> str | None:
    return server.client().get(storage.redis_keys(kis.app_key).lock)


def wait_for_lease(server, storage, kis, timeout: float = 10.0) -> str:
    """Block until somebody holds the issuance lease (it appears as tokenP is called)."""
    kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout)
    owner = lock_owner(server, storage, kis)
    assert owner is not None
    return owner


# ---------------------------------------------------------------------------- single flight
def test_three_servers_of_four_threads_issue_once(server, fake_kis_factory):
    kis = fake_kis_factory(token_delay=0.3)
    start = threading.Barrier(12)
    groups = [Callers(node(server), kis, 4, start) for _ in range(3)]
    for group in groups:
        group.join()
    assert [e for g in groups for e in g.errors] == []
    tokens = {t for g in groups for t in g.tokens}
    assert len(tokens) == 1 and sum(len(g.tokens) for g in groups) == 12
    assert kis.stats.tokenp_requests == 1


def test_followers_are_woken_by_the_ready_message_not_the_poll(server, fake_kis_factory):
    kis = fake_kis_factory(token_delay=0.5)
    leader = node(server)
    first = Callers(leader, kis)
    wait_for_lease(server, leader, kis)
    follower = node(server)
    follower.poll_interval = 30.0  # only a message can wake it within this test's time
    second = Callers(follower, kis)
    first.join()
    second.join()
    assert second.tokens == first.tokens
    assert second.finished[0] - first.finished[0] < 2.0
    assert kis.stats.tokenp_requests == 1


def test_a_dead_holders_lease_delays_others_by_its_remaining_time_only(server, fake_kis_factory):
    kis = fake_kis_factory()
    storage = node(server)
    client = server.client()
    client.set(storage.redis_keys(kis.app_key).lock, "crashed-host:1:abc", px=800)
    started = time.monotonic()
    caller = Callers(storage, kis).join()
    elapsed = time.monotonic() - started
    assert caller.errors == []
    assert 0.7 <= elapsed < 0.8 + 0.5 + 1.0
    assert kis.stats.tokenp_requests == 1


def test_renewal_keeps_the_lease_through_an_issuance_longer_than_it(server, fake_kis_factory):
    kis = fake_kis_factory(token_delay=1.2)
    leader = node(server, lease_seconds=0.3)
    first = Callers(leader, kis)
    owner = wait_for_lease(server, leader, kis)
    second = Callers(node(server, lease_seconds=0.3), kis)
    time.sleep(0.6)  # twice the lease: only renewal can keep it
    assert lock_owner(server, leader, kis) == owner
    first.join()
    second.join()
    assert first.errors == second.errors == []
    assert second.tokens == first.tokens
    assert kis.stats.tokenp_requests == 1


def test_waiting_is_bounded_by_wait_timeout(server, fake_kis_factory):
    kis = fake_kis_factory()
    storage = node(server, wait_timeout=0.6)
    client = server.client()
    client.set(storage.redis_keys(kis.app_key).lock, "busy-host:1:abc", px=60_000)
    started = time.monotonic()
    caller = Callers(storage, kis).join()
    assert time.monotonic() - started < 3.0
    assert len(caller.errors) == 1 and isinstance(caller.errors[0], TokenWaitTimeout)
    assert kis.stats.tokenp_requests == 0


# ------------------------------------------------------------------------------ failures
def test_failed_issuance_reaches_its_followers_and_the_marker_holds_the_others_back(server, fake_kis_factory):
    kis = fake_kis_factory()
    kis.set_token_fault("http500", delay=0.5)
    leader = node(server, failure_backoff=1.0)
    first = Callers(leader, kis, 4)
    wait_for_lease(server, leader, kis)
    others = [Callers(node(server, failure_backoff=1.0), kis, 2) for _ in range(2)]
    first.join()
    failed_at = time.monotonic()  # just after the leader's failure set the 1 s marker
    for group in others:
        group.join()
    assert len(first.errors) == 4 and all(isinstance(e, TokenIssueError) for e in first.errors)
    assert len({id(e.__cause__ or e) for e in first.errors}) == 1, "in-process followers get the leader's error"
    # The other servers' callers did not fail with a 500 that was not theirs: they waited the
    # marker out (nobody called KIS meanwhile), then one of them issued for all (point 15).
    assert [e for g in others for e in g.errors] == []
    assert len({t for g in others for t in g.tokens}) == 1
    assert min(f for g in others for f in g.finished) - failed_at >= 0.5
    assert kis.stats.tokenp_requests == 2


def test_permanent_credential_errors_keep_their_class_across_servers(server, fake_kis_factory):
    from korea_investment_stock.errors import InvalidCredentialsError

    kis = fake_kis_factory()
    kis.set_token_fault("EGW00105", delay=0.4)
    leader = node(server)
    first = Callers(leader, kis)
    wait_for_lease(server, leader, kis)
    other = Callers(node(server), kis)
    first.join()
    other.join()
    assert isinstance(first.errors[0], InvalidCredentialsError)
    assert isinstance(other.errors[0], InvalidCredentialsError)
    assert other.errors[0].code == "EGW00105"


# ----------------------------------------------------------------------------- fenced save
def take_lease(storage, api_key, api_secret=None):
    from .redis_workers import API_SECRET

    lease = storage._new_lease(Credentials(api_key, api_secret or API_SECRET))
    assert lease.acquire(time.monotonic() + 5) is Acquired.HELD
    return lease


def pause(lease):
    """A "paused" holder: its renewal stops, as it would in a stopped process."""
    lease._stop.set()


def stored_token(storage, api_key, api_secret) -> str | None:
    data = storage.load_token(api_key, api_secret)
    return None if data is None else data["access_token"]


def test_fenced_save_refuses_a_stale_lease_holder(server):
    from .redis_workers import API_KEY, API_SECRET

    a, b = node(server), node(server)
    client = server.client()
    stale = take_lease(a, API_KEY)
    pause(stale)
    client.delete(a.redis_keys(API_KEY).lock)  # its lease expired meanwhile
    fresh = take_lease(b, API_KEY)
    assert fresh.generation > stale.generation
    assert fresh.save(make_record("eyJ.fresh.sig", lifetime=86400)) is SaveOutcome.STORED
    assert stale.save(make_record("eyJ.stale.sig", lifetime=86400)) is SaveOutcome.REFUSED
    assert stored_token(a, API_KEY, API_SECRET) == "eyJ.fresh.sig"


def test_fenced_save_without_the_lease_stores_when_its_generation_is_newer(server):
    from .redis_workers import API_KEY, API_SECRET

    storage = node(server)
    client = server.client()
    storage.save_token(make_record("eyJ.old.sig", lifetime=3600).to_legacy_dict(API_SECRET))
    lease = take_lease(storage, API_KEY)
    pause(lease)
    client.delete(storage.redis_keys(API_KEY).lock)  # lost, but nobody newer came
    assert lease.save(make_record("eyJ.new.sig")) is SaveOutcome.STORED
    assert stored_token(storage, API_KEY, API_SECRET) == "eyJ.new.sig"


def test_fenced_save_never_overwrites_a_token_that_expires_later_but_releases(server):
    from .redis_workers import API_KEY, API_SECRET

    storage = node(server)
    client = server.client()
    storage.save_token(make_record("eyJ.longer.sig", lifetime=86400).to_legacy_dict(API_SECRET))
    lease = take_lease(storage, API_KEY)
    assert lease.save(make_record("eyJ.shorter.sig", lifetime=3600)) is SaveOutcome.REFUSED
    assert stored_token(storage, API_KEY, API_SECRET) == "eyJ.longer.sig"
    assert client.get(storage.redis_keys(API_KEY).lock) is None, "the lease is released all the same"


def test_a_refused_save_still_hands_the_caller_its_token(server, fake_kis_factory):
    kis = fake_kis_factory()
    storage = node(server)
    newer = make_record("eyJ.newer-elsewhere.sig", api_key=kis.app_key, api_secret=kis.app_secret, lifetime=200_000)
    original = storage._store_issued

    def save_after_a_peer(record, lease):
        storage._store(newer)  # a peer stored a longer-lived token meanwhile
        return original(record, lease)

    storage._store_issued = save_after_a_peer
    record = storage.get_token(kis.app_key, kis.app_secret, issuer(kis.url, kis.app_key, kis.app_secret))
    assert record.access_token == kis.issued_tokens()[0]
    assert stored_token(storage, kis.app_key, kis.app_secret) == "eyJ.newer-elsewhere.sig"


def test_acquire_is_idempotent_for_its_owner(server):
    from .redis_workers import API_KEY

    storage = node(server)
    keys = storage.redis_keys(API_KEY)
    marker = keys.failed(credential_fingerprint(API_KEY, "s"))
    args = dict(keys=[keys.lock, keys.generation, marker, keys.fence], args=["me", 5000, 60_000])
    first = storage._acquire_script(**args)
    again = storage._acquire_script(**args)
    assert first == again and first[0] == "lead" and first[1] > 0
    other = storage._acquire_script(keys=args["keys"], args=["someone-else", 5000, 60_000])
    assert other[0] == "wait" and 0 < other[1] <= 5000
