"""While the store is unreachable, a token that KIS still accepts keeps serving REST calls.

In a token's last minutes (its refresh margin) the client asks the store for a
fresh one before each call.  If Redis is unreachable then, failing the call
would be wrong: the token in hand has not really expired and KIS accepts it.
Redis is cut off for real (a loopback proxy that drops every byte).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import pytest

from korea_investment_stock import KoreaInvestment
from korea_investment_stock.token.redis import LockingRedisTokenStorage
from testsupport.faultproxy import FaultProxy

from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401

pytestmark = pytest.mark.real_redis
MARGIN = 300.0


@pytest.mark.parametrize("host_copy", [True, False], ids=["host-copy", "in-hand-only"])
def test_rest_calls_keep_the_token_in_hand_during_an_outage_in_its_refresh_margin(
    host_copy: bool,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
    fake_kis_factory: Any,
) -> None:
    kis = fake_kis_factory(token_lifetime=MARGIN + 1.5)  # valid for 1.5 s, then in the margin for 300 s
    upstream = urlparse(redis_url)
    with FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 6379) as proxy:
        store = LockingRedisTokenStorage(
            proxy.redis_url(int(upstream.path.lstrip("/") or 0)),
            key_prefix=redis_prefix,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            refresh_margin=MARGIN,
            outage_allowance=1.0,
            host_copy=host_copy,
        )
        kis_client = KoreaInvestment(kis.app_key, kis.app_secret, "12345678-01", token_storage=store, base_url=kis.url)
        in_hand = kis_client._token
        assert kis_client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        while in_hand.is_valid(MARGIN):
            time.sleep(0.05)  # the token's own clock is the subject: wait until it is in its margin
        proxy.partition()
        for _ in range(3):
            answer = kis_client.fetch_domestic_price("J", "005930")
            assert answer["rt_cd"] == "0"
        assert kis_client._token.access_token == in_hand.access_token
        assert kis.stats.tokenp_requests == 1
        kis_client.shutdown()


def test_giving_up_for_a_kept_token_leaves_no_failure_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that falls back on the token in hand when Redis stops answering releases its lease as
    after a success: no failure marker makes the other servers wait (or fail)."""
    import fakeredis

    from korea_investment_stock.errors import StorageUnavailableError
    from korea_investment_stock.token.credentials import Credentials
    from korea_investment_stock.token.record import credential_fingerprint
    from korea_investment_stock.token.redis import RedisLease

    from .workers import API_KEY, API_SECRET, CountingIssuer, make_record

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    store = LockingRedisTokenStorage(client=client, key_prefix="kis-test:kept", host_copy=False, refresh_margin=MARGIN)

    def unreachable(self: RedisLease) -> bool:
        raise StorageUnavailableError("cannot reach Redis (simulated between taking the lease and tokenP)")

    monkeypatch.setattr(RedisLease, "held", unreachable)
    in_hand = make_record("eyJ.in-hand.sig", lifetime=MARGIN - 60)  # in its margin, far from its end
    issuer = CountingIssuer()
    record = store.token_for(Credentials(API_KEY, API_SECRET), issuer, fallback=in_hand)
    assert record is in_hand and issuer.calls == 0
    keys = store.redis_keys(API_KEY)
    assert client.get(keys.lock) is None, "the lease was not released"
    assert client.get(keys.failed(credential_fingerprint(API_KEY, API_SECRET))) is None, "a failure marker was left"
