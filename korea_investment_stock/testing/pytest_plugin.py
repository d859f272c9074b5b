"""pytest fixtures for the fake KIS server.

Installing the package registers this module as a pytest plugin (the ``pytest11`` entry point,
named after this module), so the fixtures are there in any test run.  Naming it explicitly is
harmless, and needed when plugin autoloading is off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``):
in a ``conftest.py`` at the rootdir::

    pytest_plugins = ["korea_investment_stock.testing.pytest_plugin"]

or on the command line, ``-p korea_investment_stock.testing.pytest_plugin``.  Either way pytest
registers it once.  ``-p no:korea_investment_stock.testing.pytest_plugin`` turns it off, and
then a conftest's ``pytest_plugins`` entry for it is skipped too.

Both fixtures default to ``rest_rate_limit=None`` so ordinary tests are never
throttled; pass ``rest_rate_limit=20`` to the factory to test throttling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .server import FakeKIS

__all__ = ["fake_kis", "fake_kis_factory"]


@pytest.fixture
def fake_kis() -> Iterator[FakeKIS]:
    """A started :class:`FakeKIS` (issue window 60 s, no REST limit), stopped afterwards."""
    with FakeKIS(rest_rate_limit=None) as fake:
        yield fake


@pytest.fixture
def fake_kis_factory() -> Iterator[Callable[..., FakeKIS]]:
    """Call with :class:`FakeKIS` keywords to get started servers; all stop at teardown.

    ``rest_rate_limit`` defaults to ``None`` here too, unless given.
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
