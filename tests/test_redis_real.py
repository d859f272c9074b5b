"""The Redis stores against a real redis-server: expiry, reads, outages, passwords, sockets, fork."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import time
import uuid

import pytest
import redis

from korea_investment_stock import LockingRedisTokenStorage, RedisTokenStorage, StorageUnavailableError
from testsupport import free_port

from .redis_fixtures import (  # noqa: F401
    password_redis,
    private_redis,
    redis_prefix,
    redis_server_url,
    redis_url,
)
from .redis_workers import API_KEY, API_SECRET, HANG, forked_child, issuer, make_record

pytestmark = pytest.mark.real_redis

UNREACHABLE_BUDGET = 3.5


def raw(url: str, **kwargs) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, **kwargs)


# ------------------------------------------------------------------------ the stored hash
def test_issued_token_has_a_ttl_within_its_life_and_no_secret(redis_url, redis_prefix, fake_kis):  # noqa: F811
    storage = LockingRedisTokenStorage(redis_url, key_prefix=redis_prefix)
    record = storage.get_token(
        fake_kis.app_key, fake_kis.app_secret, issuer(fake_kis.url, fake_kis.app_key, fake_kis.app_secret)
    )
    client = raw(redis_url)
    key = storage.redis_keys(fake_kis.app_key).token
    life_ms = record.seconds_left() * 1000  # read first: the TTL can only be lower by the time we ask
    pttl = client.pttl(key)
    assert 0 < pttl <= life_ms + 1  # +1: Redis rounds to whole milliseconds
    stored = client.hgetall(key)
    assert stored["access_token"] == record.access_token
    assert stored["fingerprint"] and "api_secret" not in stored
    assert all(fake_kis.app_secret not in v for v in stored.values())
    assert client.exists(storage.redis_keys(fake_kis.app_key).lock) == 0, "the lease was released by the save"
    assert fake_kis.stats.tokenp_requests == 1


def test_save_token_ttl_is_set_with_the_write(redis_url, redis_prefix):  # noqa: F811
    storage = RedisTokenStorage(redis_url, key_prefix=redis_prefix)
    record = make_record(lifetime=7200)
    assert storage.save_token(record.to_legacy_dict(API_SECRET))
    life_ms = record.seconds_left() * 1000
    ttl = raw(redis_url).pttl(storage.redis_keys(API_KEY).token)
    assert 0 < ttl <= life_ms + 1
    assert storage.check_token_valid(API_KEY, API_SECRET)


def command_counts(client: redis.Redis) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


def test_load_token_and_check_are_one_round_trip_each(private_redis):  # noqa: F811
    storage = RedisTokenStorage(private_redis.url)
    storage.save_token(make_record().to_legacy_dict(API_SECRET))
    storage.load_token(API_KEY, API_SECRET)  # connection made, handshake done
    admin = raw(private_redis.url)
    before = command_counts(admin)
    for _ in range(50):
        assert storage.load_token(API_KEY, API_SECRET) is not None
        assert storage.check_token_valid(API_KEY, API_SECRET)
    after = command_counts(admin)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    delta.pop("cmdstat_info", None)
    assert delta == {"cmdstat_hgetall": 100}


# ------------------------------------------------------------------------------ outages
@pytest.mark.parametrize("ping", [True, False], ids=["construction-ping", "first-use"])
def test_closed_port_fails_fast_with_a_redacted_location(caplog, ping):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/3"
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageUnavailableError) as caught:
        storage = LockingRedisTokenStorage(url, password="hunter2-secret", ping=ping)
        storage.get_token(API_KEY, API_SECRET, make_record)
    assert time.monotonic() - started <= UNREACHABLE_BUDGET
    message = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/3" in message
    assert "hunter2-secret" not in message and "hunter2-secret" not in caplog.text
    storage = LockingRedisTokenStorage(url, password="hunter2-secret", ping=False)
    assert "hunter2-secret" not in repr(storage)
    health = storage.health_check()
    assert health.reachable is False and health.round_trip_ms is None


def test_a_server_that_never_answers_fails_within_the_budget():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts (via the backlog) but never replies
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as caught:
            RedisTokenStorage(f"redis://127.0.0.1:{port}/0")  # the construction ping times out
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert 2.5 <= elapsed <= UNREACHABLE_BUDGET
    assert f"127.0.0.1:{port}/0" in str(caught.value)


def test_health_check_reports_round_trip(redis_url):  # noqa: F811
    health = RedisTokenStorage(redis_url).health_check()
    assert health.reachable is True and health.error is None
    assert 0 < health.round_trip_ms < 1000


# ----------------------------------------------------------------------------- passwords
def test_password_from_argument_url_or_environment(password_redis, monkeypatch, fake_kis):  # noqa: F811
    pw = password_redis.password
    url = password_redis.url
    with_pw = url.replace("redis://", f"redis://:{pw}@")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_PASSWORD", pw)
    from_env = RedisTokenStorage(url, key_prefix=f"pw:{uuid.uuid4().hex}")
    monkeypatch.delenv("KOREA_INVESTMENT_REDIS_PASSWORD")
    stores = [from_env, RedisTokenStorage(url, password=pw), RedisTokenStorage(with_pw)]
    for storage in stores:
        assert storage.health_check().reachable
        assert pw not in repr(storage)
    issue = issuer(fake_kis.url, fake_kis.app_key, fake_kis.app_secret)
    assert from_env.get_token(fake_kis.app_key, fake_kis.app_secret, issue).access_token


def test_wrong_password_never_shows_in_errors_or_logs(password_redis, caplog):  # noqa: F811
    wrong = "not-the-password-" + uuid.uuid4().hex
    configurations = [
        {"redis_url": password_redis.url, "password": wrong},
        {"redis_url": password_redis.url.replace("redis://", f"redis://:{wrong}@")},
        {"redis_url": password_redis.url},  # none at all
    ]
    with caplog.at_level(logging.DEBUG):
        for config in configurations:
            with pytest.raises(StorageUnavailableError) as at_construction:
                RedisTokenStorage(**config)  # 0.6.1's class pings in its constructor
            storage = LockingRedisTokenStorage(**config)  # ours connects on first use
            with pytest.raises(StorageUnavailableError) as caught:
                storage.get_token(API_KEY, API_SECRET, make_record)
            text = str(at_construction.value) + str(caught.value) + repr(storage) + str(storage.health_check())
            assert wrong not in text and password_redis.password not in text
            assert f"127.0.0.1:{password_redis.port}/0" in str(caught.value)
            assert f"127.0.0.1:{password_redis.port}/0" in str(at_construction.value)
    assert wrong not in caplog.text and password_redis.password not in caplog.text


def test_acl_username_in_the_url(password_redis):  # noqa: F811
    admin = raw(password_redis.url, password=password_redis.password)
    user, user_pw = f"kis-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{user_pw}"], keys=["*"], channels=["*"], commands=["+@all"])
    try:
        storage = LockingRedisTokenStorage(password_redis.url.replace("redis://", f"redis://{user}:{user_pw}@"))
        assert storage.location == f"redis://{user}:***@127.0.0.1:{password_redis.port}/0"
        assert storage.save_token(make_record().to_legacy_dict(API_SECRET))
        assert storage.check_token_valid(API_KEY, API_SECRET)
        assert admin.acl_whoami() == "default"
        assert storage._client.acl_whoami() == user
    finally:
        admin.acl_deluser(user)


def test_unix_socket_url(private_redis, fake_kis):  # noqa: F811
    storage = LockingRedisTokenStorage(f"unix://{private_redis.unix_socket}?db=1")
    record = storage.get_token(
        fake_kis.app_key, fake_kis.app_secret, issuer(fake_kis.url, fake_kis.app_key, fake_kis.app_secret)
    )
    assert raw(private_redis.url.replace("/0", "/1")).hget(
        storage.redis_keys(fake_kis.app_key).token, "access_token"
    ) == (record.access_token)


# --------------------------------------------------------------------------------- fork
def test_a_forked_child_reuses_no_connection_flight_or_lease(redis_url, redis_prefix, fake_kis_factory):  # noqa: F811
    """Fork while the parent holds the lease (renewal thread running, flight open, pool warm)."""
    kis = fake_kis_factory(token_delay=1.5)
    storage = LockingRedisTokenStorage(redis_url, key_prefix=redis_prefix, lease_seconds=0.6)
    storage.health_check()  # the pool holds a connection before the fork
    issue = issuer(kis.url, kis.app_key, kis.app_secret)
    outcome: dict[str, object] = {}
    parent = threading.Thread(
        target=lambda: outcome.setdefault("token", storage.get_token(kis.app_key, kis.app_secret, issue).access_token)
    )
    parent.start()
    kis.wait_for_stats(lambda s: s.tokenp_requests == 1, 10)  # lease held, renewal running
    admin = raw(redis_url)
    assert admin.get(storage.redis_keys(kis.app_key).lock) is not None
    before_fork = {int(entry["id"]) for entry in admin.client_list()}
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=forked_child, args=(storage, kis.app_key, kis.app_secret, kis.url, results))
    child.start()
    report = results.get(timeout=HANG)
    child.join(HANG)
    parent.join(HANG)
    assert report["error"] is None, report["error"]
    assert report["client_id"] not in before_fork, "the child opened its own connection"
    assert report["token"] == outcome["token"], "the child waited for the parent's token instead of issuing"
    assert kis.stats.tokenp_requests == 1
    assert storage.load_token(kis.app_key, kis.app_secret)["access_token"] == outcome["token"]
