"""``kis-token price``: one symbol's current price as a small flat record."""

from __future__ import annotations

from typing import Any

from ..client import KoreaInvestment
from ..errors import SymbolNotFoundError


def price_summary(client: KoreaInvestment, symbol: str, market: str = "KR") -> dict[str, Any]:
    """The current price of ``symbol`` as a flat dict of strings, as KIS sends them.

    Raises :class:`SymbolNotFoundError` when KIS has no data for the symbol and
    :class:`~..errors.KISAPIError` when it answers ``rt_cd != "0"`` (the library's rule, in
    :mod:`~..answers`), with a hint about ``--market``.
    """
    market = market.upper()
    try:
        if market in ("KR", "KRX"):
            quote = client.fetch_domestic_quote(symbol)
            info_out, out = _strings(quote.info), _strings(quote.price)
        else:
            out = _strings(client.fetch_price_detail_oversea(symbol, market))
    except SymbolNotFoundError as exc:
        raise SymbolNotFoundError(
            f"KIS has no data for {symbol!r} (unknown symbol, or wrong --market)", msg_cd=exc.msg_cd, msg1=exc.msg1
        ) from None
    if market in ("KR", "KRX"):
        return {
            "symbol": symbol,
            "market": "KR",
            "name": info_out.get("prdt_abrv_name") or info_out.get("prdt_name") or "",
            "kind": "ETF" if quote.is_etf else "stock",
            "price": out.get("stck_prpr", ""),
            "change": out.get("prdy_vrss", ""),
            "change_pct": out.get("prdy_ctrt", ""),
            "volume": out.get("acml_vol", ""),
            "currency": "KRW",
        }
    rsym = out.get("rsym", "")
    last, base = out.get("last", ""), out.get("base", "")
    try:
        change = f"{float(last) - float(base):.4f}"
    except ValueError:
        change = ""
    return {
        "symbol": symbol,
        "market": rsym[1:4] if len(rsym) > 4 else market,
        "name": "",
        "kind": out.get("etyp_nm") or "stock",
        "price": last,
        "change": change,
        "change_pct": out.get("t_xrat", ""),
        "volume": out.get("tvol", ""),
        "currency": out.get("curr", "USD"),
    }


def _strings(answer: dict[str, Any]) -> dict[str, str]:
    output = answer.get("output")
    return {str(k): str(v) for k, v in output.items()} if isinstance(output, dict) else {}
