"""The README's and the docs' code examples run as written (against the fake KIS server)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from korea_investment_stock import KoreaInvestment
from korea_investment_stock.testing import FakeKIS

from .docs_text import every_page, example_after


def test_custom_storage_example_gets_single_flight_for_free() -> None:
    code = example_after("token-stores.md", "## Custom storage")
    namespace: dict[str, Any] = {}
    exec(code.split("\nkis = ")[0], namespace)  # the class; the last line needs real credentials
    storage = namespace["DictTokenStorage"]()
    with FakeKIS() as kis:
        barrier = threading.Barrier(50)
        tokens: list[str] = []

        def caller() -> None:
            barrier.wait(30)
            client = KoreaInvestment(
                kis.app_key, kis.app_secret, "12345678-01", token_storage=storage, base_url=kis.url
            )
            tokens.append(client.access_token)

        threads = [threading.Thread(target=caller) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(tokens) == 50
        assert len(set(tokens)) == 1
        assert kis.stats.tokenp_requests == 1
        assert storage.check_token_valid(kis.app_key, kis.app_secret)


def test_fake_server_example_runs_as_written() -> None:
    code = example_after("testing.md", "# Testing with the fake KIS server")
    exec(code, {})  # its own asserts check the quotation and the single tokenP call


def test_no_readme_text_advises_changing_a_system_directory() -> None:
    system = re.compile(r"chmod\s+\S+\s+(/tmp|/var/tmp|/dev/shm|/var|/usr|/etc|/home|/)(?![\w./-])")
    for name, text in every_page().items():
        assert not system.findall(text), name


def test_migration_example_runs_as_written() -> None:
    """Both constructor shapes, the cache and the pacing wrapper, against the fake KIS server."""
    exec(example_after("migrating.md", "# Migrating from 0.6.1"), {})


def test_the_readme_example_runs_against_the_fake_server(monkeypatch, tmp_path) -> None:
    """The one example a newcomer sees first: the 0.6.1 calls and request(), with the fake as KIS."""
    with FakeKIS(rest_rate_limit=None) as kis:
        monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", kis.url)
        namespace: dict[str, Any] = {"api_key": kis.app_key, "api_secret": kis.app_secret}
        exec(example_after("README.md", "## Example"), namespace)
    assert namespace["price"]["rt_cd"] == "0" and namespace["apple"]["rt_cd"] == "0"
    assert namespace["any_endpoint"]["output"]["stck_prpr"] == namespace["price"]["output"]["stck_prpr"]


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    quickstart = re.search(r"```bash\n(.*?)```", every_page()["README.md"], re.S)
    assert quickstart and "./run test" in quickstart.group(1)
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^PYTHON=\$py311 \./run test$", ci, re.M)


def test_the_getting_started_example_runs_as_written() -> None:
    exec(example_after("getting-started.md", "## 2. Your first quote"), {})


def test_the_request_example_runs_as_written(monkeypatch) -> None:
    with FakeKIS(rest_rate_limit=None) as kis:
        monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", kis.url)
        with KoreaInvestment(kis.app_key, kis.app_secret, "12345678-01") as client:
            namespace: dict[str, Any] = {"kis": client}
            exec(example_after("usage.md", "## Reaching any endpoint"), namespace)
    assert namespace["price"] > 0


def test_the_trading_page_example_runs_as_written() -> None:
    namespace: dict[str, Any] = {}
    exec(example_after("trading.md", "# Trading"), namespace)  # its asserts: positions, kinds, the reconciled order
    assert namespace["order"].quantity == 3


def test_the_readme_trading_example_runs_against_the_fake_account(tmp_path: Path) -> None:
    from korea_investment_stock import FileTokenStorage

    with FakeKIS(rest_rate_limit=None) as server:
        server.open_account("12345678-01")
        with KoreaInvestment(
            server.app_key,
            server.app_secret,
            "12345678-01",
            base_url=server.url,
            token_storage=FileTokenStorage(tmp_path / "token.key"),
        ) as kis:
            namespace: dict[str, Any] = {"kis": kis}
            exec(example_after("README.md", "## Trading"), namespace)
        assert [p.symbol for p in namespace["positions"]] == ["005930"]
        assert sorted(row["kind"] for row in server.orders()) == ["cancel", "new", "new", "revise"]


def test_realtime_example_runs_as_written() -> None:
    import pytest

    pytest.importorskip("websockets")
    from korea_investment_stock.realtime.node import close_nodes

    try:
        exec(example_after("realtime.md", "# Real-time"), {})
    finally:
        close_nodes()
