"""Shared fixtures: isolation from the user's environment, and the fake KIS server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from korea_investment_stock.testing.pytest_plugin import fake_kis, fake_kis_factory  # noqa: F401

_OUR_VARIABLES = (
    "KOREA_INVESTMENT_TOKEN_STORAGE",
    "KOREA_INVESTMENT_TOKEN_FILE",
    "KOREA_INVESTMENT_BASE_URL",
    "KOREA_INVESTMENT_REDIS_URL",
    "KOREA_INVESTMENT_REDIS_PASSWORD",
    "KOREA_INVESTMENT_API_KEY",
    "KOREA_INVESTMENT_API_SECRET",
    "KOREA_INVESTMENT_ACCOUNT_NO",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's variables or writes ~/.cache/kis."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "default-token.key"))
    yield


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file path in a fresh directory that does not exist yet."""
    return tmp_path / "kis" / "token.key"
