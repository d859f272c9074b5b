"""Shared fixtures: isolation from the user's environment, and the fake KIS server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock.testing.pytest_plugin import fake_kis, fake_kis_factory, kis_isolated_env  # noqa: F401
from korea_investment_stock.token import flight as flight_module
from testsupport.environment import isolate


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's variables or writes ~/.cache/kis; the limiter is off (see testsupport)."""
    isolate(monkeypatch, tmp_path)
    yield


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file path in a fresh directory that does not exist yet."""
    return tmp_path / "kis" / "token.key"


class _CountingEvent(threading.Event):
    """An Event that counts the threads blocked in ``wait``."""

    waiting = 0
    cond = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with _CountingEvent.cond:
            _CountingEvent.waiting += 1
            _CountingEvent.cond.notify_all()
        return super().wait(timeout)


@pytest.fixture
def counting_followers(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make every in-process flight count its parked followers; returns ``wait_for(n)``.

    Tests use it to hold a leader until ``n`` followers are really waiting on it,
    with no sleep.
    """
    _CountingEvent.waiting = 0

    class _Flight(flight_module.Flight):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.done = _CountingEvent()

        def __class_getitem__(cls, item: Any) -> Any:  # Flight[T]() must build the counting kind
            return cls

    monkeypatch.setattr(flight_module, "Flight", _Flight)

    def wait_for(n: int) -> None:
        with _CountingEvent.cond:
            assert _CountingEvent.cond.wait_for(lambda: _CountingEvent.waiting >= n, 60.0), "followers never parked"

    return wait_for


@pytest.fixture
def broker(fake_kis: Any, token_file: Path) -> Iterator[Any]:  # noqa: F811
    """A client on the fake server with a store passed fourth, as 0.6.1 code builds it; stats reset."""
    from korea_investment_stock import FileTokenStorage, KoreaInvestment

    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01", FileTokenStorage(token_file))
    fake_kis.reset_stats()
    yield kis
    kis.shutdown()
