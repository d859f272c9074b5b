"""pytest fixtures for the fake KIS server, isolated from the user's token store by default.

Installing the package registers this module as a pytest plugin (the ``pytest11`` entry point,
named after this module), so the fixtures are there in any test run.  Naming it explicitly is
harmless, and needed when plugin autoloading is off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``):
in a ``conftest.py`` at the rootdir::

    pytest_plugins = ["korea_investment_stock.testing.pytest_plugin"]

or on the command line, ``-p korea_investment_stock.testing.pytest_plugin``.  Either way pytest
registers it once.  ``-p no:korea_investment_stock.testing.pytest_plugin`` turns it off, and
then a conftest's ``pytest_plugins`` entry for it is skipped too.

Why the fixtures isolate: a client built with no explicit store takes it from the environment,
so a user's first test would otherwise write fake tokens and rate-limiter state into
``~/.cache/kis``, or, in a shell with ``KOREA_INVESTMENT_TOKEN_STORAGE=redis``, into that
Redis, which may be production's.  :func:`kis_isolated_env` (which ``fake_kis`` and
``fake_kis_factory`` use) clears the store and host variables for the test and points the
default token file and the master-file cache into a private temporary directory; ``fake_kis``
then points the KIS host and the master-file host at itself.  A test marked
``@pytest.mark.kis_keep_env`` keeps the environment as it is (see :data:`KEEP_ENV_MARKER`).

Both server fixtures default to ``rest_rate_limit=None`` so ordinary tests are never
throttled; pass ``rest_rate_limit=20`` to the factory to test throttling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .server import FakeKIS

__all__ = [
    "CLEARED_VARIABLES",
    "KEEP_ENV_MARKER",
    "fake_kis",
    "fake_kis_factory",
    "kis_isolated_env",
]

#: The marker that opts a test (or a module, with ``pytestmark``) out of the isolation.
KEEP_ENV_MARKER = "kis_keep_env"

# Spelled out rather than imported: this package depends on nothing else of ours (the test
# suite checks that the names match the library's).
ENV_TOKEN_FILE = "KOREA_INVESTMENT_TOKEN_FILE"
ENV_BASE_URL = "KOREA_INVESTMENT_BASE_URL"
ENV_MASTER_URL = "KOREA_INVESTMENT_MASTER_URL"
ENV_MASTER_CACHE_DIR = "KOREA_INVESTMENT_MASTER_CACHE_DIR"
#: Removed for the test's duration: where tokens and limiter state go, and which hosts are called.
#: The token file and the master cache are then set to the private directory.
CLEARED_VARIABLES = (
    "KOREA_INVESTMENT_TOKEN_STORAGE",
    ENV_TOKEN_FILE,
    "KOREA_INVESTMENT_REDIS_URL",
    "KOREA_INVESTMENT_REDIS_PASSWORD",
    "KOREA_INVESTMENT_REDIS_KEY_PREFIX",
    ENV_BASE_URL,
    ENV_MASTER_URL,
    ENV_MASTER_CACHE_DIR,
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the opt-out marker, so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        f"{KEEP_ENV_MARKER}: the fake_kis fixtures leave the KOREA_INVESTMENT_* variables as they are "
        "(the test's clients use the shell's token store)",
    )


@pytest.fixture
def kis_isolated_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path | None:
    """A private directory for this test's token file, limiter state and master files; None if opted out.

    For the test's duration (``monkeypatch`` restores everything afterwards) the variables in
    :data:`CLEARED_VARIABLES` are removed, so the file store is the default and no Redis is
    configured, and then ``KOREA_INVESTMENT_TOKEN_FILE`` is ``<dir>/token.key`` (the file
    limiter's ``ratelimit.*`` files sit beside it) and ``KOREA_INVESTMENT_MASTER_CACHE_DIR`` is
    ``<dir>/masters``.  ``KOREA_INVESTMENT_RATE_LIMIT`` is left alone: it sets a rate, not a place.
    The directory is not the test's ``tmp_path``, so a test can still expect that empty.

    Under ``@pytest.mark.kis_keep_env`` nothing is changed and the answer is None.
    """
    if request.node.get_closest_marker(KEEP_ENV_MARKER) is not None:
        return None
    directory = tmp_path_factory.mktemp("kis-store")  # 0700, fresh for every test
    for name in CLEARED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_TOKEN_FILE, str(directory / "token.key"))
    monkeypatch.setenv(ENV_MASTER_CACHE_DIR, str(directory / "masters"))
    return directory


@pytest.fixture
def fake_kis(kis_isolated_env: Path | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKIS]:
    """A started :class:`FakeKIS` (issue window 60 s, no REST limit), stopped afterwards.

    Unless the test is marked ``kis_keep_env``, the environment is isolated
    (:func:`kis_isolated_env`) and ``KOREA_INVESTMENT_BASE_URL`` and
    ``KOREA_INVESTMENT_MASTER_URL`` name this server, so a client built with no
    ``base_url`` talks to it, symbol master files included.
    """
    with FakeKIS(rest_rate_limit=None) as fake:
        if kis_isolated_env is not None:
            monkeypatch.setenv(ENV_BASE_URL, fake.url)
            monkeypatch.setenv(ENV_MASTER_URL, fake.url)
        yield fake


@pytest.fixture
def fake_kis_factory(kis_isolated_env: Path | None) -> Iterator[Callable[..., FakeKIS]]:
    """Call with :class:`FakeKIS` keywords to get started servers; all stop at teardown.

    ``rest_rate_limit`` defaults to ``None`` here too, unless given.  The environment is
    isolated as for ``fake_kis``, but no server is named in it (which one would it be?):
    give clients ``base_url=server.url`` and ``master_url=server.url``.
    """
    started: list[FakeKIS] = []

    def make(**kwargs: object) -> FakeKIS:
        kwargs.setdefault("rest_rate_limit", None)
        fake = FakeKIS(**kwargs)  # type: ignore[arg-type]
        started.append(fake.start())
        return fake

    try:
        yield make
    finally:
        for fake in reversed(started):
            fake.stop()
