"""The tr_id table: every trading and account id, real and mock, written out in full.

Why a table and not a rule: KIS's mock ids usually swap the first letter for
``V``, but not always (a US sell is ``TTTT1006U`` real and ``VTTT1001U`` mock),
and KIS renamed the domestic order ids, warning that the old ones may be
blocked without notice.  So no id is ever derived from another: each one is
looked up here, and a missing one is an error, not a guess.

Source: KIS's Open API portal documents and its official sample code
(``koreainvestment/open-trading-api``), as summarised in the project's facts
sheet; the ids below are the current ones as of 2026.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TradingUnsupportedError

__all__ = ["OVERSEAS_EXCHANGES", "TR_IDS", "Exchange", "TrId", "exchange_for", "tr_id"]


@dataclass(frozen=True)
class TrId:
    """One operation's path and its ids on the real and the mock host (``None``: KIS has none)."""

    method: str
    path: str
    real: str | None
    mock: str | None


_KR = "/uapi/domestic-stock/v1"
_OS = "/uapi/overseas-stock/v1/trading"

#: (region, operation) -> ids.  Regions: ``KR`` and the overseas ``US``, ``JP``, ``HK``, ``SH``,
#: ``SZ``, ``VN``.  Operations: ``buy``, ``sell``, ``revise`` (revise and cancel share one id),
#: ``balance``, ``orders``, ``orders_archive`` (KR orders older than three months), ``buyable``,
#: ``daily_prices``.
TR_IDS: dict[tuple[str, str], TrId] = {
    ("KR", "buy"): TrId("POST", f"{_KR}/trading/order-cash", "TTTC0012U", "VTTC0012U"),
    ("KR", "sell"): TrId("POST", f"{_KR}/trading/order-cash", "TTTC0011U", "VTTC0011U"),
    ("KR", "revise"): TrId("POST", f"{_KR}/trading/order-rvsecncl", "TTTC0013U", "VTTC0013U"),
    ("KR", "balance"): TrId("GET", f"{_KR}/trading/inquire-balance", "TTTC8434R", "VTTC8434R"),
    ("KR", "orders"): TrId("GET", f"{_KR}/trading/inquire-daily-ccld", "TTTC0081R", "VTTC0081R"),
    ("KR", "orders_archive"): TrId("GET", f"{_KR}/trading/inquire-daily-ccld", "CTSC9215R", "VTSC9215R"),
    ("KR", "buyable"): TrId("GET", f"{_KR}/trading/inquire-psbl-order", "TTTC8908R", "VTTC8908R"),
    ("KR", "sellable"): TrId("GET", f"{_KR}/trading/inquire-psbl-sell", "TTTC8408R", None),
    ("KR", "daily_prices"): TrId(
        "GET", f"{_KR}/quotations/inquire-daily-itemchartprice", "FHKST03010100", "FHKST03010100"
    ),
    ("US", "buy"): TrId("POST", f"{_OS}/order", "TTTT1002U", "VTTT1002U"),
    ("US", "sell"): TrId("POST", f"{_OS}/order", "TTTT1006U", "VTTT1001U"),
    ("US", "revise"): TrId("POST", f"{_OS}/order-rvsecncl", "TTTT1004U", "VTTT1004U"),
    ("JP", "buy"): TrId("POST", f"{_OS}/order", "TTTS0308U", "VTTS0308U"),
    ("JP", "sell"): TrId("POST", f"{_OS}/order", "TTTS0307U", "VTTS0307U"),
    ("JP", "revise"): TrId("POST", f"{_OS}/order-rvsecncl", "TTTS0309U", "VTTS0309U"),
    ("HK", "buy"): TrId("POST", f"{_OS}/order", "TTTS1002U", "VTTS1002U"),
    ("HK", "sell"): TrId("POST", f"{_OS}/order", "TTTS1001U", "VTTS1001U"),
    ("HK", "revise"): TrId("POST", f"{_OS}/order-rvsecncl", "TTTS1003U", "VTTS1003U"),
    ("SH", "buy"): TrId("POST", f"{_OS}/order", "TTTS0202U", "VTTS0202U"),
    ("SH", "sell"): TrId("POST", f"{_OS}/order", "TTTS1005U", "VTTS1005U"),
    ("SZ", "buy"): TrId("POST", f"{_OS}/order", "TTTS0305U", "VTTS0305U"),
    ("SZ", "sell"): TrId("POST", f"{_OS}/order", "TTTS0304U", "VTTS0304U"),
    ("VN", "buy"): TrId("POST", f"{_OS}/order", "TTTS0311U", "VTTS0311U"),
    ("VN", "sell"): TrId("POST", f"{_OS}/order", "TTTS0310U", "VTTS0310U"),
}
# The overseas account queries take the exchange as a field, so one id serves every region.
for _region in ("US", "JP", "HK", "SH", "SZ", "VN"):
    TR_IDS[(_region, "balance")] = TrId("GET", f"{_OS}/inquire-balance", "TTTS3012R", "VTTS3012R")
    TR_IDS[(_region, "orders")] = TrId("GET", f"{_OS}/inquire-ccnl", "TTTS3035R", "VTTS3035R")
    TR_IDS[(_region, "buyable")] = TrId("GET", f"{_OS}/inquire-psamount", "TTTS3007R", "VTTS3007R")
    TR_IDS[(_region, "daily_prices")] = TrId(
        "GET", "/uapi/overseas-price/v1/quotations/dailyprice", "HHDFS76240000", "HHDFS76240000"
    )


def tr_id(region: str, operation: str, *, mock: bool) -> TrId:
    """The ids of ``operation`` in ``region``; raises when KIS offers it on neither or not on this host."""
    entry = TR_IDS.get((region, operation))
    if entry is None:
        raise TradingUnsupportedError(f"KIS offers no {operation!r} operation for market {region!r}")
    if (entry.mock if mock else entry.real) is None:
        host = "mock" if mock else "real"
        raise TradingUnsupportedError(f"KIS has no {host}-host id for {operation!r} in market {region!r}")
    return entry


def id_for(entry: TrId, *, mock: bool) -> str:
    """The id to send on this host (:func:`tr_id` already checked it exists)."""
    chosen = entry.mock if mock else entry.real
    if chosen is None:  # pragma: no cover - tr_id() refuses these first
        raise TradingUnsupportedError(f"no {'mock' if mock else 'real'} id for {entry.path}")
    return chosen


@dataclass(frozen=True)
class Exchange:
    """An overseas exchange: its order code, its quotation code, currency and tr_id region."""

    order_code: str
    quote_code: str
    currency: str
    region: str


#: Overseas exchanges by their order code (``OVRS_EXCG_CD``).
OVERSEAS_EXCHANGES: dict[str, Exchange] = {
    "NASD": Exchange("NASD", "NAS", "USD", "US"),
    "NYSE": Exchange("NYSE", "NYS", "USD", "US"),
    "AMEX": Exchange("AMEX", "AMS", "USD", "US"),
    "SEHK": Exchange("SEHK", "HKS", "HKD", "HK"),
    "SHAA": Exchange("SHAA", "SHS", "CNY", "SH"),
    "SZAA": Exchange("SZAA", "SZS", "CNY", "SZ"),
    "TKSE": Exchange("TKSE", "TSE", "JPY", "JP"),
    "HASE": Exchange("HASE", "HNX", "VND", "VN"),
    "VNSE": Exchange("VNSE", "HSX", "VND", "VN"),
}
#: Other spellings users write for the same exchanges (the quotation codes, long names).
_ALIASES = {
    "NAS": "NASD",
    "NASDAQ": "NASD",
    "NYS": "NYSE",
    "AMS": "AMEX",
    "HKS": "SEHK",
    "SHS": "SHAA",
    "SZS": "SZAA",
    "TSE": "TKSE",
    "HNX": "HASE",
    "HSX": "VNSE",
}
#: ``US`` means any of these; the symbol's exchange is looked up.
US_EXCHANGES = ("NASD", "NYSE", "AMEX")


def exchange_for(market: str) -> Exchange | None:
    """The overseas exchange ``market`` names, or ``None`` for ``KR`` / ``US`` (which need no or a lookup)."""
    code = market.strip().upper()
    if code in ("KR", "KRX", "US"):
        return None
    code = _ALIASES.get(code, code)
    found = OVERSEAS_EXCHANGES.get(code)
    if found is None:
        known = ", ".join(["KR", "US", *OVERSEAS_EXCHANGES])
        raise TradingUnsupportedError(f"unknown market {market!r}; choose one of: {known}")
    return found
