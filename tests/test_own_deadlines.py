"""A caller's wait ends by its own deadline, or by a failure that would be its own too (a bad secret).

A caller that gives up early (a short ``issue_deadline`` or ``wait_timeout``)
must not end the wait of one allowed more: not in another process or server
(the Redis failure marker), not in another thread of its process (the flight).
Counts are KIS's own (the fake server), over real loopback.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests

from korea_investment_stock.errors import InvalidCredentialsError, TokenRateLimitedError
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.file import FileTokenStorage
from korea_investment_stock.token.issuer import TokenIssuer
from korea_investment_stock.token.redis import LockingRedisTokenStorage

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401

HANG = 60.0


def issue_for(kis: FakeKIS, secret: str | None = None) -> Any:
    return TokenIssuer(requests.Session(), kis.url, kis.app_key, secret or kis.app_secret).issue


def node(backend: Any, **kwargs: Any) -> LockingRedisTokenStorage:
    """One "server": a client of its own, so a flight of its own."""
    return LockingRedisTokenStorage(client=backend.client(), key_prefix=backend.prefix, **kwargs)


class Caller(threading.Thread):
    """One ``get_token`` in a thread: its record or its error."""

    def __init__(self, storage: Any, kis: FakeKIS, secret: str | None = None) -> None:
        super().__init__(daemon=True)
        self.storage, self.kis, self.secret = storage, kis, secret or kis.app_secret
        self.record: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.record = self.storage.get_token(self.kis.app_key, self.secret, issue_for(self.kis, self.secret))
        except Exception as exc:
            self.error = exc

    def outcome(self) -> Caller:
        self.join(HANG)
        assert not self.is_alive()
        return self


def test_another_servers_deadline_does_not_end_our_wait(redis_backend, fake_kis):  # noqa: F811
    """The issue's case: a caller allowed 1 s gave up; a server allowed 70 s must not fail at once."""
    fake_kis.set_token_fault("EGW00133", times=None)  # KIS keeps saying "one per minute"
    impatient = Caller(node(redis_backend, issue_deadline=1.0), fake_kis)
    fake_kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=10.0)  # it holds the lease
    patient = Caller(node(redis_backend, wait_timeout=30.0), fake_kis)
    assert isinstance(impatient.outcome().error, TokenRateLimitedError)
    failed_at = time.monotonic()
    fake_kis.clear_faults()  # KIS's window reopens
    patient.outcome()
    assert patient.error is None, f"the patient server failed with another's deadline: {patient.error}"
    assert patient.record.access_token in fake_kis.issued_tokens()
    # It honoured the impatient caller's failure backoff (3 s) before calling tokenP itself.
    assert fake_kis.stats.tokenp_success == 1
    assert fake_kis.stats.last_issued_at is not None
    assert time.monotonic() - failed_at >= 2.0


def test_a_bad_secret_still_fails_the_other_servers_at_once(redis_backend, fake_kis):  # noqa: F811
    """A failure that would be theirs too ends their wait: no tokenP call of their own."""
    fake_kis.set_token_fault("EGW00105", delay=0.5)
    leader = Caller(node(redis_backend, failure_backoff=30.0), fake_kis)
    fake_kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=10.0)
    other = Caller(node(redis_backend, failure_backoff=30.0, wait_timeout=30.0), fake_kis)
    assert isinstance(leader.outcome().error, InvalidCredentialsError)
    started = time.monotonic()
    assert isinstance(other.outcome().error, InvalidCredentialsError)
    assert time.monotonic() - started < 10.0  # at once, not at its 30 s deadline
    assert fake_kis.stats.tokenp_requests == 1


def test_another_threads_deadline_does_not_end_our_wait(fake_kis, tmp_path: Path, counting_followers):
    """Two stores on one file share a flight: the impatient one's failure does not end the patient's wait."""
    token_file = tmp_path / "kis" / "token.key"
    fake_kis.set_token_fault("EGW00133", times=None)
    impatient = Caller(FileTokenStorage(token_file, issue_deadline=1.0), fake_kis)
    fake_kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=10.0)  # it leads the flight
    patient = Caller(FileTokenStorage(token_file), fake_kis)
    counting_followers(1)  # the patient caller is parked on the impatient one's flight
    assert isinstance(impatient.outcome().error, TokenRateLimitedError)
    fake_kis.clear_faults()
    patient.outcome()
    assert patient.error is None, f"the patient caller failed with another's deadline: {patient.error}"
    assert patient.record.access_token in fake_kis.issued_tokens()


def test_followers_with_the_same_deadline_fail_with_their_leader(fake_kis, tmp_path: Path, counting_followers):
    """Equal deadlines: the leader's give-up is the followers' too; nobody goes round for more."""
    token_file = tmp_path / "kis" / "token.key"
    fake_kis.set_token_fault("EGW00133", times=None)
    storage = FileTokenStorage(token_file, issue_deadline=1.0)
    callers = [Caller(storage, fake_kis) for _ in range(3)]
    counting_followers(2)
    outcomes = [c.outcome() for c in callers]
    assert all(isinstance(c.error, TokenRateLimitedError) for c in outcomes)
    # One flight's error, raised by each follower as its own copy chained to the leader's.
    assert len({id(c.error.__cause__ or c.error) for c in outcomes}) == 1, "a follower led a flight of its own"
