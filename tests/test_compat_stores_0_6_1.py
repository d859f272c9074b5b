"""The store semantics the published 0.6.1 release had and its users' code relies on.

- ``save_token`` takes the ``timestamp`` it is given as the expiry (validity and
  the Redis TTL), and ``load_token`` returns what was saved;
- a separate Redis password goes into the URL handed to ``redis.from_url``
  (``redis://:password@host...``), and into nothing of ours;
- building a Redis store from a URL pings the server (3 s), and an unreachable one
  raises a ``ConnectionError`` saying "Redis 서버 연결 실패" (and in English);
- without redis-py the store's ``ImportError`` says "redis 패키지가 필요합니다" (and in English).

Written as 0.6.1 user code: dicts in its shape, with local-time text as its
tests wrote it.  Redis claims run on a real ``redis-server`` too.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import fakeredis
import pytest
import redis

from korea_investment_stock.token_storage import FileTokenStorage, RedisTokenStorage

from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401
from .workers import API_KEY, API_SECRET


def token_dict(lifetime: float) -> dict:
    """A token dict the way 0.6.1's tests build one: local-time text, the timestamp from it."""
    expiry = datetime.now() + timedelta(seconds=lifetime)
    return {
        "access_token": "Bearer test_token_12345",
        "access_token_token_expired": expiry.strftime("%Y-%m-%d %H:%M:%S"),
        "timestamp": int(expiry.timestamp()),
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }


@pytest.fixture
def fake_server():
    return fakeredis.FakeServer()


@pytest.fixture
def from_url_calls(monkeypatch, fake_server):
    """``redis.from_url`` replaced by a fakeredis factory, as 0.6.1's tests do; the URLs it was given."""
    urls: list[str] = []

    def fake_from_url(url, *args, **kwargs):
        urls.append(url)
        return fakeredis.FakeRedis(server=fake_server, decode_responses=True)

    monkeypatch.setattr(redis, "from_url", fake_from_url)
    return urls


@pytest.fixture(params=["file", "fakeredis", "redis-server"])
def store(request, tmp_path):
    if request.param == "file":
        return FileTokenStorage(tmp_path / "kis" / "token.key")
    if request.param == "fakeredis":
        request.getfixturevalue("from_url_calls")
        return RedisTokenStorage("redis://localhost:6379/0")
    url = request.getfixturevalue("redis_url")
    return RedisTokenStorage(url, key_prefix=request.getfixturevalue("redis_prefix"))


# ----------------------------------------------------------------------- timestamp is the expiry
def test_load_token_returns_what_was_saved(store):
    saved = token_dict(86400)
    assert store.save_token(saved) is True
    assert store.load_token(API_KEY, API_SECRET) == saved


def test_the_timestamp_decides_validity_whatever_the_text_says(store):
    """Ten minutes by the timestamp; the local-time text read as KST would be 9 h off on a UTC host."""
    saved = token_dict(600)
    saved["access_token_token_expired"] = "2000-01-01 00:00:00"  # the text is not the expiry
    assert store.save_token(saved) is True
    assert store.check_token_valid(API_KEY, API_SECRET)
    assert store.load_token(API_KEY, API_SECRET)["timestamp"] == saved["timestamp"]
    store.delete_token(API_KEY, API_SECRET)  # (a store of ours never lets an older token replace a newer one)
    expired = token_dict(-60)
    expired["access_token_token_expired"] = "2999-01-01 00:00:00"
    store.save_token(expired)
    assert not store.check_token_valid(API_KEY, API_SECRET)
    assert store.load_token(API_KEY, API_SECRET) is None


def test_without_a_timestamp_the_text_is_read_as_kst(store):
    from korea_investment_stock.token.record import format_kst

    saved = token_dict(0)
    del saved["timestamp"]
    saved["access_token_token_expired"] = format_kst(time.time() + 3600)
    assert store.save_token(saved) is True
    loaded = store.load_token(API_KEY, API_SECRET)
    assert abs(loaded["timestamp"] - (time.time() + 3600)) < 5


def test_the_redis_ttl_comes_from_the_timestamp(from_url_calls, fake_server):
    storage = RedisTokenStorage("redis://localhost:6379/0")
    saved = token_dict(0)
    saved["timestamp"] = int(time.time()) + 10
    assert storage.save_token(saved) is True
    ttl = fakeredis.FakeRedis(server=fake_server).ttl(storage._get_redis_key(API_KEY))
    assert 5 < ttl <= 10


def test_the_redis_ttl_comes_from_the_timestamp_on_a_real_server(redis_url, redis_prefix):  # noqa: F811
    storage = RedisTokenStorage(redis_url, key_prefix=redis_prefix)
    saved = token_dict(0)
    saved["timestamp"] = int(time.time()) + 10
    assert storage.save_token(saved) is True
    ttl = redis.Redis.from_url(redis_url).ttl(storage._get_redis_key(API_KEY))
    assert 5 < ttl <= 10


# ------------------------------------------------------------- the password in from_url's URL
def test_a_separate_password_goes_into_the_url_given_to_from_url(from_url_calls, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        storage = RedisTokenStorage(redis_url="redis://localhost:6379/0", password="mypassword")
        storage.save_token(token_dict(3600))
        storage.load_token(API_KEY, API_SECRET)
    assert len(from_url_calls) == 1
    assert ":mypassword@" in from_url_calls[0]
    assert from_url_calls[0].startswith("redis://:mypassword@localhost:6379/0")
    # ... and into nothing of ours: attributes, repr, logs.
    assert "mypassword" not in repr(storage) and "mypassword" not in caplog.text
    assert not [name for name, value in vars(storage).items() if "mypassword" in repr(value)]


def test_a_password_with_url_characters_is_quoted_and_still_works(redis_prefix):  # noqa: F811
    from .redis_fixtures import start_redis

    password = "p@ss:w/rd%?#"
    server = start_redis(password=password)
    try:
        storage = RedisTokenStorage(server.url, password=password, key_prefix=redis_prefix)
        assert storage.save_token(token_dict(3600)) is True
        assert storage.load_token(API_KEY, API_SECRET)["access_token"] == "Bearer test_token_12345"
        assert password not in repr(storage)
    finally:
        server.stop()


# ------------------------------------------------------------ construction checks the server
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_redis_fails_construction_with_a_connection_error():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="Redis 서버 연결 실패") as caught:
        RedisTokenStorage(f"redis://127.0.0.1:{port}/0", password="hunter2-secret")
    assert time.monotonic() - started < 30  # refused at once; a silent host would take the 3 s timeout
    message = str(caught.value)
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in message  # and in English
    assert "hunter2" not in message


def test_users_fall_back_to_files_with_except_connection_error(tmp_path):
    """The 0.6.1 idiom: try Redis, fall back to a file store."""
    try:
        storage = RedisTokenStorage(f"redis://127.0.0.1:{free_port()}/0")
    except ConnectionError:
        storage = FileTokenStorage(tmp_path / "kis" / "token.key")
    assert isinstance(storage, FileTokenStorage)


def test_a_replaced_from_url_whose_client_cannot_ping_fails_construction(monkeypatch, fake_server):
    class Unreachable(fakeredis.FakeRedis):
        def ping(self, **kwargs):
            raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(redis, "from_url", lambda url, **kwargs: Unreachable(server=fake_server))
    with pytest.raises(ConnectionError, match="Redis 서버 연결 실패"):
        RedisTokenStorage("redis://invalid:6379/0")


def test_construction_pings_a_reachable_server(redis_url, redis_prefix):  # noqa: F811
    admin = redis.Redis.from_url(redis_url)
    before = admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    RedisTokenStorage(redis_url, key_prefix=redis_prefix)
    after = admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    assert after - before >= 1


def test_ping_false_client_stores_and_the_fleet_store_connect_on_first_use(fake_server):
    port = free_port()
    lazy = RedisTokenStorage(f"redis://127.0.0.1:{port}/0", ping=False)  # no I/O
    with pytest.raises(ConnectionError):
        lazy.load_token(API_KEY, API_SECRET)
    given = RedisTokenStorage(client=redis.Redis(port=port, socket_connect_timeout=1))  # a client you built
    with pytest.raises(ConnectionError):
        given.load_token(API_KEY, API_SECRET)
    from korea_investment_stock import LockingRedisTokenStorage

    fleet = LockingRedisTokenStorage(f"redis://127.0.0.1:{port}/0")  # ours: may start while Redis is down
    with pytest.raises(ConnectionError):
        fleet.load_token(API_KEY, API_SECRET)
    with pytest.raises(ConnectionError, match="Redis 서버 연결 실패"):
        LockingRedisTokenStorage(f"redis://127.0.0.1:{port}/0", ping=True)


# ------------------------------------------------------------------ without redis-py installed
def test_without_redis_py_the_import_error_says_so_in_both_languages():
    from unittest.mock import patch

    with patch.dict("sys.modules", {"redis": None}), pytest.raises(ImportError) as caught:
        RedisTokenStorage()
    assert "redis 패키지가 필요합니다" in str(caught.value)
    assert "need the optional 'redis' package" in str(caught.value)
