"""The environment every test starts from: none of the developer's KIS variables, a private token file.

Shared by the test and stress suites (neither imports the other's conftest).
The REST rate limiter is off unless a test turns it on: most tests are about
tokens and would only wait on the budget; the rate-limit tests opt in with
:func:`rate_limited`, so the default path is exercised where it is the subject.
"""

from __future__ import annotations

from pathlib import Path

import pytest

OUR_VARIABLES = (
    "KOREA_INVESTMENT_TOKEN_STORAGE",
    "KOREA_INVESTMENT_TOKEN_FILE",
    "KOREA_INVESTMENT_BASE_URL",
    "KOREA_INVESTMENT_REDIS_URL",
    "KOREA_INVESTMENT_REDIS_PASSWORD",
    "KOREA_INVESTMENT_REDIS_KEY_PREFIX",
    "KOREA_INVESTMENT_API_KEY",
    "KOREA_INVESTMENT_API_SECRET",
    "KOREA_INVESTMENT_ACCOUNT_NO",
    "KOREA_INVESTMENT_RATE_LIMIT",
)
ENV_RATE_LIMIT = "KOREA_INVESTMENT_RATE_LIMIT"


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clear our variables, point the default token file into ``tmp_path``, turn the limiter off."""
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "default-token.key"))
    monkeypatch.setenv(ENV_RATE_LIMIT, "off")


def rate_limited(monkeypatch: pytest.MonkeyPatch, setting: str | None = None) -> None:
    """Turn the default limiter back on (``setting``: calls per second; None for the default rate)."""
    if setting is None:
        monkeypatch.delenv(ENV_RATE_LIMIT, raising=False)
    else:
        monkeypatch.setenv(ENV_RATE_LIMIT, setting)
