"""Settings that used to pass silently or mislead: each now fails clearly or warns once, naming the fix.

Issue 20 tried 41 misconfigurations as a new user would; these are the eight
that were silent or misleading.  Every error names the variable or argument
and what to do, never a secret; every warning is logged once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment, notices
from korea_investment_stock.errors import ConfigurationError, StorageError, StorageUnavailableError
from korea_investment_stock.limits import NoRateLimit, ProcessRateLimiter, limiter_for
from korea_investment_stock.limits.budget import rate_from_env
from korea_investment_stock.token.factory import storage_from_env
from korea_investment_stock.token.redis_connect import resolve_target
from tests.redis_fixtures import redis_server_url  # noqa: F401

ACCOUNT = "12345678-01"


@pytest.fixture(autouse=True)
def _fresh_notices() -> Iterator[None]:
    """Each test sees its one-time warnings afresh."""
    notices.forget()
    yield
    notices.forget()


def _warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and needle in r.getMessage()]


# 1. KOREA_INVESTMENT_REDIS_URL without KOREA_INVESTMENT_TOKEN_STORAGE=redis
def test_a_redis_url_without_the_redis_storage_warns_once(monkeypatch, caplog):
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_URL", "redis://127.0.0.1:6379/0")
    with caplog.at_level(logging.WARNING):
        first, second = storage_from_env(), storage_from_env()
    assert isinstance(first, FileTokenStorage) and isinstance(second, FileTokenStorage)
    said = _warnings(caplog, "KOREA_INVESTMENT_REDIS_URL")
    assert len(said) == 1, said
    assert "KOREA_INVESTMENT_TOKEN_STORAGE=redis" in said[0]
    assert str(first.file_path) in said[0]  # which file store is used instead


def test_no_warning_without_a_redis_url(caplog):
    with caplog.at_level(logging.WARNING):
        storage_from_env()
    assert _warnings(caplog, "REDIS") == []


# 2. KOREA_INVESTMENT_RATE_LIMIT=0: 0 and 0.0 both mean off, as documented
@pytest.mark.parametrize("value", ["0", "0.0", "00", "0e0", " 0.000 "])
def test_every_spelling_of_zero_turns_the_limiter_off(monkeypatch, tmp_path, value):
    assert rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": value}) is False
    monkeypatch.setenv("KOREA_INVESTMENT_RATE_LIMIT", value)
    assert isinstance(limiter_for(FileTokenStorage(tmp_path / "kis" / "token.key")), NoRateLimit)


@pytest.mark.parametrize("value", ["-1", "-0.5", "fast"])
def test_a_negative_or_wordy_rate_is_an_error_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_RATE_LIMIT") as caught:
        rate_from_env({"KOREA_INVESTMENT_RATE_LIMIT": value})
    assert "'off' or 0" in str(caught.value)


# 3. a rate above KIS's budget
def test_a_rate_above_kis_budget_warns_once_per_environment(caplog):
    limiter = ProcessRateLimiter(50.0)
    with caplog.at_level(logging.WARNING):
        limiter.acquire("key-a", "real")
        limiter.acquire("key-b", "real")
    said = _warnings(caplog, "50/s")
    assert len(said) == 1, said
    assert "20/s" in said[0] and "KOREA_INVESTMENT_RATE_LIMIT" in said[0]


def test_a_rate_within_real_but_above_mock_warns_for_mock_only(caplog):
    limiter = ProcessRateLimiter(5.0)
    with caplog.at_level(logging.WARNING):
        limiter.acquire("key", "real")
        assert _warnings(caplog, "5/s") == []
        limiter.acquire("key", "mock")
    said = _warnings(caplog, "5/s")
    assert len(said) == 1 and "2/s" in said[0] and "mock" in said[0]


def test_the_default_rate_never_warns(caplog):
    limiter = ProcessRateLimiter()
    with caplog.at_level(logging.WARNING):
        limiter.acquire("key", "real")
        limiter.acquire("key", "mock")
    assert _warnings(caplog, "/s") == []


# 4. a Redis database that is not a number, or out of range
@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/abc", "redis://127.0.0.1:6379/1x", "redis://h:1/0?db=two"])
def test_a_database_that_is_not_a_number_is_refused(url):
    with pytest.raises(ConfigurationError, match="not a number") as caught:
        resolve_target(url, None, {})
    assert "KOREA_INVESTMENT_REDIS_URL" in str(caught.value)


def test_a_database_that_is_not_a_number_is_refused_from_the_environment(monkeypatch):
    pytest.importorskip("redis")
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", "redis")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_URL", "redis://:pw-not-shown@127.0.0.1:6379/abc")
    with pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_REDIS_URL") as caught:
        storage_from_env()
    assert "pw-not-shown" not in str(caught.value)


@pytest.mark.real_redis
def test_a_database_out_of_range_says_redis_has_16_by_default(redis_server_url):  # noqa: F811
    from korea_investment_stock import RedisTokenStorage
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    url = redis_server_url.rsplit("/", 1)[0] + "/99"
    with pytest.raises(ConfigurationError) as caught:
        RedisTokenStorage(url)  # 0.6.1's class pings at construction
    assert "16" in str(caught.value) and "databases" in str(caught.value)
    store = LockingRedisTokenStorage(url)  # connects on first use
    with pytest.raises((ConfigurationError, StorageError)) as caught_later:
        store.load_token("app-key", "app-secret")
    assert "16" in str(caught_later.value) and "databases" in str(caught_later.value)


# 5. an app key or secret with stray whitespace
@pytest.mark.parametrize(
    ("which", "mangle"),
    [
        ("api_key", lambda key, secret: (key + "\n", secret)),
        ("api_key", lambda key, secret: (" " + key, secret)),
        ("api_secret", lambda key, secret: (key, secret + "\r\n")),
        ("api_secret", lambda key, secret: (key, "\t" + secret + " ")),
    ],
)
def test_a_pasted_newline_or_space_in_the_credentials_is_refused_before_any_call(fake_kis, which, mangle):
    key, secret = mangle(fake_kis.app_key, fake_kis.app_secret)
    with pytest.raises(ConfigurationError) as caught:
        KoreaInvestment(key, secret, ACCOUNT)
    message = str(caught.value)
    assert which in message and "whitespace" in message
    assert fake_kis.app_secret not in message and fake_kis.app_secret.strip() not in message
    assert fake_kis.stats.tokenp_requests == 0


# 6. rediss:// against a server without TLS
@pytest.mark.real_redis
def test_rediss_against_a_plain_server_mentions_tls(redis_server_url):  # noqa: F811
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    if not redis_server_url.startswith("redis://"):
        pytest.skip("needs a plain redis:// server")
    url = "rediss://" + redis_server_url.removeprefix("redis://")
    with pytest.raises(StorageUnavailableError) as caught:
        LockingRedisTokenStorage(url, ping=True, socket_timeout=0.5, socket_connect_timeout=0.5)
    message = str(caught.value)
    assert "TLS" in message and "redis://" in message


# 7. a token path that names a directory
def test_a_token_file_argument_naming_a_directory_is_refused(tmp_path):
    directory = tmp_path / "kis"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigurationError, match="file_path") as caught:
        FileTokenStorage(directory)
    assert "directory" in str(caught.value) and str(directory / "token.key") in str(caught.value)


def test_a_token_file_variable_naming_a_directory_is_refused(tmp_path, monkeypatch):
    directory = tmp_path / "kis"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(directory))
    with pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_TOKEN_FILE"):
        storage_from_env()


def test_a_token_file_ending_in_a_slash_is_refused_even_before_it_exists(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="directory"):
        FileTokenStorage(f"{tmp_path}/not-yet/")
