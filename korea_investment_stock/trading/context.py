"""What the trading room needs from the client: its REST path, its account and its host.

The room never imports the client (dependencies point one way): the client
hands it this context, and every call the room makes goes through the client's
REST path, so it shares the token single flight, the fleet's rate limit, the
dead-token replacement and the timeouts with every other call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..transport import KISResponse
from .ledger import OrderLedger, process_ledger


class RestCall(Protocol):
    """:meth:`KoreaInvestment.call`: one KIS REST call through the client's shared path."""

    def __call__(
        self,
        method: str,
        path: str,
        tr_id: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        tr_cont: str = "",
        fresh_connection: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> KISResponse: ...


@dataclass(frozen=True)
class TradingContext:
    """One client's account and call path, as the trading room sees them.

    ``hashkey`` computes the order's ``hashkey`` header when the client was made
    with ``use_hashkey=True`` (KIS no longer requires it), else ``None``.
    """

    call: RestCall
    account_prefix: str = field(repr=False)
    account_suffix: str = field(repr=False)
    mock: bool
    hashkey: Callable[[dict[str, Any]], str] | None = None
    #: Claims and in-flight tickets, shared as far as the token store reaches.
    ledger: OrderLedger = field(default_factory=process_ledger)
    #: The longest one order request may take end to end (slot, token, connect, answer).
    order_seconds: float = 60.0

    @property
    def account(self) -> str:
        """``12345678-01``."""
        return f"{self.account_prefix}-{self.account_suffix}"

    def account_fields(self) -> dict[str, str]:
        """``CANO`` and ``ACNT_PRDT_CD``, which every account request carries."""
        return {"CANO": self.account_prefix, "ACNT_PRDT_CD": self.account_suffix}
