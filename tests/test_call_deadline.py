"""Every HTTP call has a total deadline: a host that trickles its answer cannot hold a caller, or a lease.

The fake KIS server trickles the tokenP answer for real (one byte per pace, over
loopback), so each read returns well inside the read timeout and only a bound on
the whole call ends it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from korea_investment_stock import TokenIssueError
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.issuer import TokenIssuer
from korea_investment_stock.transport import call_seconds, new_session, request_json

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .workers import API_KEY, API_SECRET, CountingIssuer

TIMEOUT = (1.0, 2.0)
PACE = 0.25  # a byte every 0.25 s: a few hundred bytes take well over a minute


def test_the_total_deadline_is_every_connect_attempt_plus_one_read() -> None:
    assert call_seconds((3.05, 10.0)) == pytest.approx(16.1)
    assert call_seconds(TIMEOUT) == pytest.approx(4.0)


def test_a_trickled_token_answer_ends_at_the_total_deadline(fake_kis: FakeKIS) -> None:
    fake_kis.set_token_fault("trickle", delay=PACE)
    session = new_session()
    issuer = TokenIssuer(session, fake_kis.url, fake_kis.app_key, fake_kis.app_secret, timeout=TIMEOUT)
    started = time.monotonic()
    with pytest.raises(TokenIssueError, match=r"did not finish within 4s"):
        issuer.issue()
    elapsed = time.monotonic() - started
    session.close()
    assert elapsed < 30.0, f"the trickled call lasted {elapsed:.1f}s"  # a hang bound; the deadline is 4 s
    assert fake_kis.stats.tokenp_requests == 1


def test_a_call_that_ends_in_time_leaves_its_connection_usable(fake_kis: FakeKIS) -> None:
    """The watchdog never cuts a finished call: the kept-alive connection serves the next one."""
    session = new_session()
    for _ in range(3):
        status, answer = request_json(
            session,
            "GET",
            fake_kis.url,
            "/__fake__/stats",
            name="stats",
            timeout=(1.0, 0.05),  # a 2.05 s deadline, far longer than the call
            unreachable=TokenIssueError,
            failed=TokenIssueError,
        )
        assert status == 200 and "tokenp_requests" in answer
    session.close()


def test_a_trickling_tokenp_does_not_cost_the_redis_lease(
    fake_kis: FakeKIS,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    """While the holder's call trickles, nobody else calls tokenP: the call ends before the lease can lapse.

    A short issue deadline makes the lease's renewal bound short too, so a call
    bounded only per read would outlive the lease and a second store would issue.
    """
    import redis

    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    fake_kis.set_token_fault("trickle", delay=PACE)

    def store(wait: float) -> LockingRedisTokenStorage:  # a client of its own: another flight, as another server
        client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=3)
        return LockingRedisTokenStorage(client=client, key_prefix=redis_prefix, issue_deadline=1.0, wait_timeout=wait)

    session = new_session()
    leader_issuer = TokenIssuer(session, fake_kis.url, fake_kis.app_key, fake_kis.app_secret, timeout=TIMEOUT)
    seen_when_leader_failed: list[int] = []
    leader_error: list[BaseException] = []

    def lead() -> None:
        try:
            store(8.0).get_token(fake_kis.app_key, fake_kis.app_secret, leader_issuer.issue)
        except TokenIssueError as exc:
            seen_when_leader_failed.append(fake_kis.stats.tokenp_requests)
            leader_error.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    fake_kis.wait_for_stats(lambda s: s.tokenp_requests >= 1, timeout=10.0)
    other = store(40.0)  # keeps waiting past the lease's renewal bound (issue deadline + 30 s)
    other_issuer = TokenIssuer(new_session(), fake_kis.url, fake_kis.app_key, fake_kis.app_secret, timeout=TIMEOUT)
    with pytest.raises(Exception):  # noqa: B017  the other caller's outcome is not the point here
        other.get_token(fake_kis.app_key, fake_kis.app_secret, other_issuer.issue)
    leader.join(30.0)
    assert not leader.is_alive()
    assert leader_error and "did not finish within" in str(leader_error[0])
    assert seen_when_leader_failed == [1], "a second tokenP call went out while the first was still trickling"
    session.close()


def test_the_lease_is_held_through_the_longest_call_the_issuer_may_make(redis_backend, monkeypatch):  # noqa: F811
    """The renewal bound follows the issuer's own call bound, not a fixed slack.

    A client with long timeouts (say ``timeout=(10, 60)``: 80 s a call) must keep
    its lease through a whole call, or a second server issues beside it.
    """
    from korea_investment_stock.token import storage as storage_module
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    monkeypatch.setattr(storage_module, "HOLD_SLACK", 0.2)
    entered, release = threading.Event(), threading.Event()
    slow = CountingIssuer(gate=lambda: (entered.set(), release.wait(10.0)))
    slow.call_seconds = 5.0  # type: ignore[attr-defined]  # what one of its calls may take

    def node(**kwargs: Any) -> LockingRedisTokenStorage:
        return LockingRedisTokenStorage(
            client=redis_backend.client(), key_prefix=redis_backend.prefix, lease_seconds=0.3, **kwargs
        )

    holder = node(issue_deadline=0.1)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(holder.get_token(API_KEY, API_SECRET, slow)))
    worker.start()
    assert entered.wait(10.0)
    other_issuer = CountingIssuer(prefix="other")
    other = threading.Thread(
        target=lambda: results.append(node(wait_timeout=10.0).get_token(API_KEY, API_SECRET, other_issuer))
    )
    other.start()
    time.sleep(1.5)  # five leases long, past issue deadline + slack: what is being tested is time itself
    release.set()
    worker.join(10.0)
    other.join(10.0)
    assert other_issuer.calls == 0, "the lease lapsed during a call its issuer said could take 5 s"
    assert [r.access_token for r in results] == [results[0].access_token] * 2


def test_trickled_headers_end_at_the_deadline_with_a_clear_error() -> None:
    """Cut mid-headers, http.client may take what came for a short answer: it must not pass as one."""
    from testsupport.trickle import TrickleServer, slow_headers

    with TrickleServer(slow_headers(), pace=0.1) as host, new_session() as session:  # 20 s for the headers
        with pytest.raises(TokenIssueError, match="did not finish within 3s"):
            request_json(
                session,
                "GET",
                host.url(),
                "",
                name="probe",
                timeout=(1.0, 1.0),
                unreachable=TokenIssueError,
                failed=TokenIssueError,
            )
