"""The shipped pytest fixtures, used as a user uses them: in a pytest run of their own.

Each test writes a tiny user test file and runs it with ``pytester`` in a subprocess, so
the plugin arrives through its ``pytest11`` entry point and the environment is the one
the test sets up: ``HOME`` is an empty directory, and the shell points the token store at
a Redis that must never be contacted (a listening socket nobody accepts on: any client
that connects leaves a connection in its queue, which the test then looks for).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .docs_text import python_examples

pytest_plugins = ["pytester"]


#: What a user's first test looks like: the docs' example, no store given.
FIRST_TESTS = """
from korea_investment_stock import KoreaInvestment

def test_first(fake_kis):
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01", base_url=fake_kis.url)
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert fake_kis.stats.tokenp_requests == 1
    kis.shutdown()

def test_with_the_factory(fake_kis_factory):
    fake = fake_kis_factory()
    kis = KoreaInvestment(fake.app_key, fake.app_secret, "12345678-01", base_url=fake.url)
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    kis.shutdown()
"""


@pytest.fixture
def redis_listener() -> Iterator[socket.socket]:
    """A loopback socket that listens but never accepts: a connection attempt stays queued."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


def assert_never_contacted(listener: socket.socket) -> None:
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        connection, _ = listener.accept()
        connection.close()


@pytest.fixture(params=["redis", "file"])
def user_shell(
    request: pytest.FixtureRequest,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_listener: socket.socket,
) -> Path:
    """A user's shell: an empty HOME, nothing of this suite's isolation, and either store selected.

    ``redis``: ``KOREA_INVESTMENT_TOKEN_STORAGE=redis`` and a Redis URL (the listener) that may
    be production.  ``file``: no store variable, so the default token file is under HOME.
    Returns the HOME directory.  (pytester points HOME at its own directory, which holds the
    test file; this one is separate so that "nothing created under HOME" can be checked.)
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "KOREA_INVESTMENT_TOKEN_FILE",
        "KOREA_INVESTMENT_RATE_LIMIT",  # the default limiter, whose state files sit beside the token file
        "KOREA_INVESTMENT_BASE_URL",
        "KOREA_INVESTMENT_MASTER_URL",
        "KOREA_INVESTMENT_MASTER_CACHE_DIR",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    port = redis_listener.getsockname()[1]
    if request.param == "file":
        monkeypatch.delenv("KOREA_INVESTMENT_TOKEN_STORAGE", raising=False)
    else:
        monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", "redis")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_PASSWORD", "production-password")
    monkeypatch.setenv("KOREA_INVESTMENT_REDIS_KEY_PREFIX", "production")
    return home


def run_user_tests(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)


def test_a_first_test_touches_neither_home_nor_the_shells_redis(
    pytester: pytest.Pytester, user_shell: Path, redis_listener: socket.socket
) -> None:
    result = run_user_tests(pytester, FIRST_TESTS)
    result.assert_outcomes(passed=2)
    assert sorted(user_shell.rglob("*")) == []
    assert_never_contacted(redis_listener)


#: The isolation as a user can inspect it, and the fixture on its own.
INSPECTING_TESTS = """
import os
from korea_investment_stock import KoreaInvestment

def test_where_the_state_goes(fake_kis, kis_isolated_env):
    assert os.environ["KOREA_INVESTMENT_TOKEN_FILE"] == str(kis_isolated_env / "token.key")
    assert os.environ["KOREA_INVESTMENT_MASTER_CACHE_DIR"] == str(kis_isolated_env / "masters")
    for name in ("KOREA_INVESTMENT_TOKEN_STORAGE", "KOREA_INVESTMENT_REDIS_URL",
                 "KOREA_INVESTMENT_REDIS_PASSWORD", "KOREA_INVESTMENT_REDIS_KEY_PREFIX"):
        assert name not in os.environ, name
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01", base_url=fake_kis.url)
    kis.fetch_domestic_price("J", "005930")
    kis.shutdown()
    names = sorted(p.name for p in kis_isolated_env.iterdir())
    assert "token.key" in names, names
    assert any(name.startswith("ratelimit.") for name in names), names

def test_the_fixture_alone(kis_isolated_env, tmp_path):
    assert kis_isolated_env.is_dir() and kis_isolated_env != tmp_path
    assert list(kis_isolated_env.iterdir()) == []
    assert "KOREA_INVESTMENT_BASE_URL" not in os.environ  # only fake_kis names a server
"""

#: With the server named in the environment, a client needs no base_url and no master_url.
NAMED_SERVER_TESTS = """
from korea_investment_stock import KoreaInvestment

def test_no_urls_given(fake_kis, kis_isolated_env):
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01")
    assert kis.base_url == fake_kis.url
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert "삼성전자" in set(kis.fetch_kospi_symbols()["한글명"])
    assert fake_kis.stats.master_downloads == {"kospi_code.mst.zip": 1}
    assert any((kis_isolated_env / "masters").iterdir())
    kis.shutdown()
"""

#: The opt-out: the shell's file store is used as it is.
KEEPING_TESTS = """
import pytest
from korea_investment_stock import KoreaInvestment

@pytest.mark.kis_keep_env
def test_my_own_store(fake_kis, kis_isolated_env):
    assert kis_isolated_env is None
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01", base_url=fake_kis.url)
    kis.shutdown()
"""


@pytest.mark.parametrize("user_shell", ["redis"], indirect=True)
def test_the_isolation_as_a_user_sees_it(
    pytester: pytest.Pytester, user_shell: Path, redis_listener: socket.socket
) -> None:
    result = run_user_tests(pytester, INSPECTING_TESTS)
    result.assert_outcomes(passed=2)
    assert sorted(user_shell.rglob("*")) == []
    assert_never_contacted(redis_listener)


@pytest.mark.parametrize("user_shell", ["redis"], indirect=True)
def test_fake_kis_names_itself_as_the_kis_and_master_host(pytester: pytest.Pytester, user_shell: Path) -> None:
    result = run_user_tests(pytester, NAMED_SERVER_TESTS)
    result.assert_outcomes(passed=1)
    assert sorted(user_shell.rglob("*")) == []


@pytest.mark.parametrize("user_shell", ["file"], indirect=True)
def test_the_marker_keeps_the_users_store(pytester: pytest.Pytester, user_shell: Path) -> None:
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")  # the plugin registers its marker
    result = run_user_tests(pytester, KEEPING_TESTS)
    result.assert_outcomes(passed=1)
    assert (user_shell / ".cache" / "kis" / "token.key").is_file()


def test_the_plugin_clears_the_variables_the_library_reads() -> None:
    """The plugin spells the names out (the testing package imports nothing of ours); they must match."""
    from korea_investment_stock.client import ENV_BASE_URL
    from korea_investment_stock.market.masters import ENV_MASTER_BASE_URL, ENV_MASTER_CACHE_DIR
    from korea_investment_stock.testing import pytest_plugin
    from korea_investment_stock.token.factory import ENV_STORAGE
    from korea_investment_stock.token.file import ENV_TOKEN_FILE
    from korea_investment_stock.token.redis_connect import ENV_REDIS_KEY_PREFIX, ENV_REDIS_PASSWORD, ENV_REDIS_URL

    library = {
        ENV_STORAGE,
        ENV_TOKEN_FILE,
        ENV_REDIS_URL,
        ENV_REDIS_PASSWORD,
        ENV_REDIS_KEY_PREFIX,
        ENV_BASE_URL,
        ENV_MASTER_BASE_URL,
        ENV_MASTER_CACHE_DIR,
    }
    assert set(pytest_plugin.CLEARED_VARIABLES) == library


@pytest.mark.parametrize("user_shell", ["redis"], indirect=True)
def test_the_documented_pytest_example_runs_as_a_user_test(pytester: pytest.Pytester, user_shell: Path) -> None:
    examples = python_examples("testing.md", "# Testing with the fake KIS server")
    (example,) = [code for code in examples if "def test_" in code]
    result = run_user_tests(pytester, example)
    result.assert_outcomes(passed=1)
    assert sorted(user_shell.rglob("*")) == []
