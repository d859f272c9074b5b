"""The house rules of issue 11, each a defect found by trying the package as a new user would.

- every wait and timeout setting goes through one validator (no NaN, no infinity);
- ``TokenWaitTimeout`` is also a builtin ``TimeoutError``;
- one client shared by many threads keeps a connection per thread instead of
  discarding them ("Connection pool is full");
- ``kis-token --version`` answers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import korea_investment_stock
from korea_investment_stock import ConfigurationError, KoreaInvestment, TokenWaitTimeout
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.file import FileTokenStorage

ROOT = Path(korea_investment_stock.__file__).resolve().parents[1]
ACCOUNT = "12345678-01"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KOREA_INVESTMENT_")}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "korea_investment_stock", *args],
        check=False,
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def client_for(kis: FakeKIS, token_file: Path, **kwargs: object) -> KoreaInvestment:
    return KoreaInvestment(
        kis.app_key, kis.app_secret, ACCOUNT, token_storage=FileTokenStorage(token_file), base_url=kis.url, **kwargs
    )  # type: ignore[arg-type]


def test_token_wait_timeout_is_a_builtin_timeout_error() -> None:
    assert issubclass(TokenWaitTimeout, TimeoutError)
    with pytest.raises(TimeoutError):
        raise TokenWaitTimeout("gave up waiting")


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), (3.0, float("inf")), (float("nan"), 1.0), 0, -1])
def test_client_timeout_must_be_finite_and_positive(fake_kis: FakeKIS, token_file: Path, timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        client_for(fake_kis, token_file, timeout=timeout)
    assert fake_kis.stats.tokenp_requests == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("token", "refresh", "--deadline", "nan"), "--deadline"),
        (("token", "refresh", "--deadline", "inf"), "--deadline"),
        (("token", "status", "--timeout", "nan"), "--timeout"),
        (("health", "--timeout", "inf"), "--timeout"),
    ],
)
def test_cli_refuses_nan_and_infinite_seconds(
    fake_kis: FakeKIS, token_file: Path, args: tuple[str, ...], needle: str
) -> None:
    done = run_cli(
        *args,
        KOREA_INVESTMENT_API_KEY=fake_kis.app_key,
        KOREA_INVESTMENT_API_SECRET=fake_kis.app_secret,
        KOREA_INVESTMENT_BASE_URL=fake_kis.url,
        KOREA_INVESTMENT_TOKEN_FILE=str(token_file),
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert needle in done.stderr
    assert fake_kis.stats.tokenp_requests == 0


def test_cli_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kis-token", korea_investment_stock.__version__]


def test_one_client_shared_by_many_threads_keeps_its_connections(
    fake_kis: FakeKIS, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """25 threads x 20 calls through one client: no connection is discarded for want of pool room."""
    threads_n, calls = 25, 20
    errors: list[BaseException] = []
    with client_for(fake_kis, token_file) as client:
        barrier = threading.Barrier(threads_n)

        def work() -> None:
            try:
                barrier.wait(30)
                for _ in range(calls):
                    assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
            except BaseException as exc:
                errors.append(exc)

        with caplog.at_level(logging.WARNING, logger="urllib3"):
            workers = [threading.Thread(target=work) for _ in range(threads_n)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
    assert not errors, errors[:3]
    discarded = [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert discarded == [], f"{len(discarded)} connections discarded"
    assert fake_kis.stats.tokenp_requests == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_every_wait_setting_goes_through_the_validator(bad: float) -> None:
    import requests

    from korea_investment_stock.market.masters import MasterFiles
    from korea_investment_stock.token.storage import wait_for_pending_saves

    with requests.Session() as session:
        with pytest.raises(ConfigurationError, match="lock_timeout"):
            MasterFiles(session, cache_dir="/nonexistent-never-created", lock_timeout=bad)
        with pytest.raises(ConfigurationError, match="timeout"):
            MasterFiles(session, cache_dir="/nonexistent-never-created", timeout=bad)
    with pytest.raises(ConfigurationError, match="timeout"):
        wait_for_pending_saves(bad)
