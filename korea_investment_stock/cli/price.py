"""``kis-token price``: one symbol's current price as a small flat record."""

from __future__ import annotations

from typing import Any

from ..client import KoreaInvestment
from ..errors import KISAPIError, SymbolNotFoundError
from ..transport import kis_code


def price_summary(client: KoreaInvestment, symbol: str, market: str = "KR") -> dict[str, Any]:
    """The current price of ``symbol`` as a flat dict of strings, as KIS sends them.

    Raises :class:`SymbolNotFoundError` when KIS has no data for the symbol and
    :class:`KISAPIError` when it answers ``rt_cd != "0"``.
    """
    market = market.upper()
    if market in ("KR", "KRX"):
        quote = client.fetch_domestic_quote(symbol)
        info_out = _output(quote.info, symbol)
        out = _output(quote.price, symbol)
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
    try:
        answer = client.fetch_price_detail_oversea(symbol, market)
    except SymbolNotFoundError:
        raise SymbolNotFoundError(_no_data(symbol)) from None
    out = _output(answer, symbol)
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


def _output(answer: dict[str, Any], symbol: str) -> dict[str, str]:
    if answer.get("rt_cd") != "0":
        code = kis_code(answer)
        raise KISAPIError(
            f"KIS answered {code or '?'}: {answer.get('msg1', '')}".strip(), msg_cd=code, msg1=answer.get("msg1")
        )
    output = answer.get("output")
    if not isinstance(output, dict) or not any(output.values()):
        raise SymbolNotFoundError(_no_data(symbol))
    return {str(k): str(v) for k, v in output.items()}


def _no_data(symbol: str) -> str:
    return f"KIS has no data for {symbol!r} (unknown symbol, or wrong --market)"
