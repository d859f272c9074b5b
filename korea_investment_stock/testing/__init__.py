"""A faithful fake of the Korea Investment & Securities (KIS) Open API, for tests.

Why: KIS has no test server, its mock environment is slow and rate-limited,
and the behaviour clients get wrong (one token per minute, the same token
within 6 hours, HTTP 500 for dead tokens, the per-second limit) is hard to
provoke on purpose. :class:`FakeKIS` serves those rules over real HTTP on
loopback, with virtual time and injectable faults::

    from korea_investment_stock.testing import FakeKIS

    with FakeKIS(rest_rate_limit=None) as kis:
        client = MyClient(base_url=kis.url, app_key=kis.app_key, app_secret=kis.app_secret)
        ...
        kis.advance(24 * 3600)          # every token is now expired
        assert kis.stats.tokens_issued == 1

For pytest, the fixtures ``fake_kis``, ``fake_kis_factory`` and ``kis_isolated_env`` load from
the installed entry point, or with::

    pytest_plugins = ["korea_investment_stock.testing.pytest_plugin"]

They keep each test off the user's token store (``~/.cache/kis``, or the shell's Redis): see
:mod:`.pytest_plugin`.

To run it as a separate process: ``python -m korea_investment_stock.testing``
(prints one JSON line with ``url``, ``app_key``, ``app_secret``), then drive it
through ``GET /__fake__/stats`` and ``POST /__fake__/control``.

It also keeps a trading account per account number: orders (market, limit, revise,
cancel) with KIS-like order numbers and fills, balance and orders lists in pages
(``tr_cont`` and continuation keys, with a switch for KIS's "data changed, start over"),
buyable amounts, price history, KIS's business rejections, and faults that break order
answers after (or before) the order was processed::

    kis.open_account("12345678-01", cash_krw=10_000_000, positions={"005930": (10, 70_000)})
    kis.set_price("005930", 71_000)                       # quotes and fills agree
    kis.set_order_fault(OrderFault.DROP_AFTER)            # the next order is live, unanswered
    ...
    assert [o["odno"] for o in kis.orders()] == [...]     # what the fake really accepted

``percentile`` is the one nearest-rank quantile the bench and stress figures use.

This package uses the standard library only (pytest only in the plugin).
"""

from .account import OrderFault
from .server import FakeKIS
from .state import KST, FakeKISStats, TokenFault
from .stats import percentile

__all__ = ["KST", "FakeKIS", "FakeKISStats", "OrderFault", "TokenFault", "percentile"]
