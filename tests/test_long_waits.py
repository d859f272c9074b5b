"""Long waits say so: when KIS answers "one issuance per minute", the caller hears it once, at WARNING.

Before, the constructor and ``kis-token price`` blocked for up to the issue
deadline (70 s) with nothing shown: the retries were logged at INFO only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment
from korea_investment_stock.testing import FakeKIS

ROOT = Path(__file__).resolve().parents[1]


def test_the_one_per_minute_wait_is_announced_once_with_its_bound(
    fake_kis: FakeKIS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_kis.set_token_fault("EGW00133", times=2)  # two refusals, then KIS answers
    with caplog.at_level(logging.WARNING, logger="korea_investment_stock"):
        client = KoreaInvestment(
            fake_kis.app_key,
            fake_kis.app_secret,
            "12345678-01",
            token_storage=FileTokenStorage(tmp_path / "kis" / "token.key"),
            base_url=fake_kis.url,
        )
    client.shutdown()
    announced = [r for r in caplog.records if r.levelno >= logging.WARNING and "EGW00133" in r.getMessage()]
    assert len(announced) == 1, [r.getMessage() for r in caplog.records]
    message = announced[0].getMessage()
    assert "one token per minute" in message and "up to 70s" in message
    assert fake_kis.stats.tokenp_requests == 3


def test_kis_token_price_shows_the_wait(fake_kis: FakeKIS, tmp_path: Path) -> None:
    fake_kis.set_token_fault("EGW00133", times=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOREA_INVESTMENT_")}
    env.update(
        PYTHONPATH=str(ROOT),
        KOREA_INVESTMENT_API_KEY=fake_kis.app_key,
        KOREA_INVESTMENT_API_SECRET=fake_kis.app_secret,
        KOREA_INVESTMENT_ACCOUNT_NO="12345678-01",
        KOREA_INVESTMENT_BASE_URL=fake_kis.url,
        KOREA_INVESTMENT_TOKEN_FILE=str(tmp_path / "kis" / "token.key"),
        KOREA_INVESTMENT_RATE_LIMIT="off",
    )
    done = subprocess.run(
        [sys.executable, "-m", "korea_investment_stock", "price", "005930"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "one token per minute" in done.stderr, done.stderr
    assert fake_kis.app_secret not in done.stdout + done.stderr


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_a_caller_waiting_on_another_process_says_so_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A process waiting for another's issuance (which may wait on KIS's minute) is not silent either."""
    import threading
    import time

    from korea_investment_stock.token import lease as lease_module
    from korea_investment_stock.token.credentials import Credentials
    from korea_investment_stock.token.lease import Acquired

    from .workers import API_KEY, API_SECRET

    monkeypatch.setattr(lease_module, "LONG_WAIT_SECONDS", 0.2)
    if backend == "file":
        store: object = FileTokenStorage(tmp_path / "kis" / "token.key")
    else:
        import fakeredis

        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        store = LockingRedisTokenStorage(
            client=fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True), host_copy=False
        )
    credentials = Credentials(API_KEY, API_SECRET)
    holder = store._new_lease(credentials)  # type: ignore[attr-defined]
    assert holder.acquire(time.monotonic() + 5) is Acquired.HELD
    waiter = store._new_lease(credentials)  # type: ignore[attr-defined]
    outcome: list[object] = []
    with caplog.at_level(logging.WARNING, logger="korea_investment_stock"):
        thread = threading.Thread(target=lambda: outcome.append(waiter.acquire(time.monotonic() + 30)))
        thread.start()
        deadline = time.monotonic() + 10
        while not any("still waiting" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)  # the warning is what is awaited; nothing else signals it
        holder.release()
        thread.join(10)
        waiter.release()
    said = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert len(said) == 1, said
    assert outcome and outcome[0] in (Acquired.HELD, Acquired.LOOK_AGAIN)
