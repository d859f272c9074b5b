"""The README's code examples run as written (against the fake KIS server)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from korea_investment_stock import KoreaInvestment
from korea_investment_stock.testing import FakeKIS

README = Path(__file__).resolve().parent.parent / "README.md"


def example_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python example under {heading!r}"
    return match.group(1)


def test_custom_storage_example_gets_single_flight_for_free() -> None:
    code = example_after("## Custom storage")
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
    code = example_after("## Testing your code with the fake KIS server")
    exec(code, {})  # its own asserts check the quotation and the single tokenP call


def test_no_readme_text_advises_changing_a_system_directory() -> None:
    text = README.read_text(encoding="utf-8")
    system = re.compile(r"chmod\s+\S+\s+(/tmp|/var/tmp|/dev/shm|/var|/usr|/etc|/home|/)(?![\w./-])")
    assert not system.findall(text)


def test_migration_example_runs_as_written() -> None:
    """Both constructor shapes, the cache and the pacing wrapper, against the fake KIS server."""
    exec(example_after("## Migrating from 0.6.1"), {})


def test_trading_example_runs_as_written() -> None:
    code = example_after("## Trading")
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # its own asserts: positions, order kinds, the reconciled unknown order
    assert namespace["order"].quantity == 3


def test_realtime_example_runs_as_written() -> None:
    import pytest

    pytest.importorskip("websockets")
    from korea_investment_stock.realtime.node import close_nodes

    try:
        exec(example_after("## Real-time"), {})
    finally:
        close_nodes()
