"""The documented minimal Redis ACL is all the library needs, and a denied command says what to fix.

The ACL is read from docs/token-stores.md itself (one copy: what users paste is what is
tested), and a real ``redis-server`` enforces it: fakeredis accepts ``ACL
SETUSER`` but enforces nothing.  The server's ``ACL LOG`` proves no command or
key was denied along the way.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from korea_investment_stock import KoreaInvestment
from korea_investment_stock.errors import StorageError
from korea_investment_stock.token.redis_connect import translated_errors
from testsupport import RedisServer, start_redis
from testsupport.environment import rate_limited

from .docs_text import section as docs_section

#: The prefix and password placeholders of the README's ACL block.
DOCUMENTED_PREFIX = "korea_investment:token"
DOCUMENTED_PASSWORD = ">PASSWORD"


def readme_acl_block() -> str:
    """The ``ACL SETUSER`` command under "The minimal Redis ACL", on one line."""
    section = docs_section("token-stores.md", "### The minimal Redis ACL")
    match = re.search(r"```\n(ACL SETUSER .*?)```", section, re.S)
    assert match, "no ACL SETUSER block under 'The minimal Redis ACL'"
    return " ".join(match.group(1).split())


def readme_acl_commands() -> str:
    """The ``+command`` rules of the README's ACL (what the token stores' tests grant too)."""
    return " ".join(rule for rule in readme_acl_block().split() if rule.startswith("+"))


def readme_acl_rule(password: str, prefix: str) -> str:
    """The README's ACL as a ``redis.conf`` line for user ``kis``, with a real password and prefix."""
    command = readme_acl_block()
    assert command.startswith("ACL SETUSER kis ") and DOCUMENTED_PASSWORD in command
    rule = command.removeprefix("ACL SETUSER ").replace(DOCUMENTED_PASSWORD, f">{password}")
    return "user " + rule.replace(DOCUMENTED_PREFIX, prefix)


@pytest.fixture
def acl_server(request: pytest.FixtureRequest) -> Iterator[tuple[RedisServer, str, str]]:
    """A redis-server whose user ``kis`` has exactly the README's ACL: (server, password, prefix)."""
    from .redis_fixtures import require_redis_server

    require_redis_server()
    password, prefix = uuid.uuid4().hex, "kis-acl:token"
    server = start_redis("acl-limit", config=[readme_acl_rule(password, prefix)])
    try:
        yield server, password, prefix
    finally:
        server.stop()


def _cli_environment(monkeypatch: pytest.MonkeyPatch, kis: Any, url: str, password: str, prefix: str) -> None:
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", "redis")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_URL", url)
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_PASSWORD", password)
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("KOREA_INVESTMENT_API_KEY", kis.app_key)
    monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", kis.url)


@pytest.mark.real_redis
def test_the_documented_acl_shares_the_rate_limit(
    acl_server: tuple[RedisServer, str, str],
    fake_kis_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """REST calls, a pause, kis-token limit and health, all as the README's ACL user: nothing denied.

    The ACL lacked the limiter's list commands (and SCAN): every process fell
    back to 25 % in silence, health said UNREACHABLE, limit said "no budget".
    """
    import redis

    from korea_investment_stock.cli import main
    from korea_investment_stock.limits.redis import RedisRateLimiter
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    server, password, prefix = acl_server
    rate_limited(monkeypatch)
    kis = fake_kis_factory(rest_rate_limit=20)
    url = f"redis://kis@127.0.0.1:{server.port}/0"
    storage = LockingRedisTokenStorage(url, password=password, key_prefix=prefix)
    with KoreaInvestment(kis.app_key, kis.app_secret, "12345678-01", token_storage=storage, base_url=kis.url) as client:
        for _ in range(3):
            assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        limiter = client.rate_limiter
        assert isinstance(limiter, RedisRateLimiter)
        assert not limiter.falling_back, "the limiter fell back: a command of its scripts was denied"
        limiter.penalize(kis.app_key, "real", 0.01)
        assert limiter.usage(kis.app_key, "real").used_last_second >= 1
        assert not limiter.falling_back

    _cli_environment(monkeypatch, kis, url, password, prefix)
    assert main(["limit", "--json"]) == 0
    (budget,) = json.loads(capsys.readouterr().out)["budgets"]
    assert budget["environment"] == "real" and budget["app_key"] is not None
    assert main(["health", "--json"]) == 0
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["rate limit"]["ok"] and "shared" in checks["rate limit"]["detail"]

    admin = redis.Redis(port=server.port, socket_timeout=3)
    assert admin.acl_log() == [], "a command or key was denied"


@pytest.mark.real_redis
def test_a_denied_command_is_a_permission_error_that_names_the_acl(
    fake_kis_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user without the limiter's commands: a warning, kis-token limit and health say "permission
    denied" and name the ACL; before, health said UNREACHABLE and limit "no budget used yet" (exit 0)."""
    import logging

    from korea_investment_stock.cli import main
    from korea_investment_stock.limits.redis import RedisRateLimiter
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    from .redis_fixtures import require_redis_server

    require_redis_server()
    password, prefix = uuid.uuid4().hex, "kis-acl:token"
    # The README's rule without HSET (the limiter's writes) and SCAN (kis-token limit's listing).
    rule = readme_acl_rule(password, prefix).replace(" +hset", "").replace(" +scan", "")
    server = start_redis("acl-denied", config=[rule])
    try:
        kis = fake_kis_factory()
        url = f"redis://kis@127.0.0.1:{server.port}/0"
        storage = LockingRedisTokenStorage(url, password=password, key_prefix=prefix)
        limiter = RedisRateLimiter(storage.redis_client, prefix, rate=20.0)
        with pytest.raises(StorageError, match="ACL") as denied:
            limiter.buckets()
        assert type(denied.value).__name__ == "StoragePermissionError"
        with caplog.at_level(logging.WARNING, "korea_investment_stock.limits.redis"):
            limiter.acquire(kis.app_key, "real", timeout=5)
        assert limiter.falling_back
        assert any("permission" in r.getMessage() and "ACL" in r.getMessage() for r in caplog.records)

        rate_limited(monkeypatch)
        _cli_environment(monkeypatch, kis, url, password, prefix)
        assert main(["limit"]) == 1
        error = capsys.readouterr().err
        assert "permission" in error.lower() and "ACL" in error
        assert main(["health", "--json"]) == 1
        (check,) = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "rate limit"]
        assert not check["ok"]
        assert "permission denied" in check["detail"].lower() and "UNREACHABLE" not in check["detail"]
        assert "ACL" in check["detail"]
    finally:
        server.stop()


def test_translated_errors_turns_a_denial_into_a_permission_error() -> None:
    """Both shapes of a denial: NOPERM outside a script, and the error a script's denied call raises."""
    import redis

    denials = [
        redis.exceptions.NoPermissionError("this user has no permissions to run the 'scan' command"),
        redis.exceptions.ResponseError(
            "The user executing the script can't run this command or subcommand script: 2248ea7f, on @user_script:1."
        ),
    ]
    for denial in denials:
        with pytest.raises(StorageError, match="ACL") as caught:
            with translated_errors("redis://kis:***@127.0.0.1:6379/0", "listing rate limits", ["s3cret"]):
                raise denial
        assert type(caught.value).__name__ == "StoragePermissionError" and "s3cret" not in str(caught.value)


@pytest.mark.real_redis
@pytest.mark.slow
def test_the_documented_acl_streams_and_fails_over(acl_server: tuple[RedisServer, str, str]) -> None:
    """Two processes share one KIS session as the README's ACL user; the owner is killed, the other
    takes over: the owner's lease (the token store's), its fenced state and approval key, the wants'
    scripts and the pub/sub relay, and nothing denied.

    Phase 2's own election ran INCR, which this ACL does not grant: its owner could never be elected.
    """
    pytest.importorskip("websockets")
    import redis

    from korea_investment_stock.testing import FakeKIS

    from .realtime_workers import Fleet, backend_of, owner_pid

    server, password, prefix = acl_server
    with FakeKIS(rest_rate_limit=None, websocket=True) as fake:
        fake.stream.configure(data_interval=0.05)
        spec = {
            "store": "redis",
            "redis_url": f"redis://kis:{password}@127.0.0.1:{server.port}/0",
            "prefix": prefix,
            "app_key": fake.app_key,
            "app_secret": fake.app_secret,
            "kis_url": fake.url,
            "ws_url": fake.ws_url,
        }
        fleet = Fleet(spec)
        try:
            pids = fleet.start(2)
            for pid in pids:
                fleet.send(pid, action="subscribe", trades=["005930"])
            for pid in pids:
                fleet.expect(pid, "subscribed")
                fleet.expect(pid, "trade")
            victim = owner_pid(backend_of(spec, fake.app_key))
            survivor = next(p for p in pids if p != victim)
            fleet.kill(victim)
            fleet.expect(survivor, "gap")
            fleet.expect(survivor, "trade", after_gap=True)
            stats = fake.stream.stats
            assert stats.max_concurrent[fake.app_key] == 1 and stats.opsp8996 == 0
        finally:
            fleet.close()
    admin = redis.Redis(port=server.port, socket_timeout=3)
    assert admin.acl_log() == [], "a command, key or channel was denied"
