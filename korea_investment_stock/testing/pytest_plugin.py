"""pytest fixtures for the fake KIS server.

Enable in a ``conftest.py`` (or with ``-p korea_investment_stock.testing.pytest_plugin``)::

    pytest_plugins = ["korea_investment_stock.testing.pytest_plugin"]

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
