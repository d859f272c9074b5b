"""Daily, weekly, monthly and yearly price bars over any range, in as many requests as it needs.

KIS answers at most 100 bars per request, newest first, and has no paging
header for them: the next request asks for the range ending the day before
the oldest bar received.  The loop is bounded by the number of requests the
range can need, so a host that keeps answering the same bars cannot hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from ..errors import ConfigurationError, PagingError, TradingUnsupportedError
from .context import TradingContext
from .models import Bar
from .rejections import rejection
from .trids import Exchange, id_for, tr_id
from .values import decimal, kst_midnight, quantity, text, ymd

#: Bars KIS returns per request at most.
BARS_PER_REQUEST = 100
_KR_PERIODS = {"D": "D", "W": "W", "M": "M", "Y": "Y"}
_OVERSEAS_PERIODS = {"D": "0", "W": "1", "M": "2"}


def check_period(period: object) -> str:
    """``D``, ``W``, ``M`` or ``Y`` (any case)."""
    if isinstance(period, str) and period.strip().upper() in _KR_PERIODS:
        return period.strip().upper()
    raise ConfigurationError(f"period must be 'D', 'W', 'M' or 'Y', got {period!r}")


def _max_requests(start: date, end: date) -> int:
    """Enough requests for every calendar day of the range at 100 a request, plus slack."""
    return (end - start).days // BARS_PER_REQUEST + 3


def fetch_daily_prices(
    context: TradingContext,
    symbol: str,
    start: date,
    end: date,
    *,
    period: str,
    adjusted: bool,
    exchange: Exchange | None,
) -> list[Bar]:
    """Bars from ``start`` to ``end``, oldest first; see :meth:`KoreaInvestment.fetch_daily_prices`."""
    if start > end:
        raise ConfigurationError(f"start ({start}) is after end ({end})")
    period = check_period(period)
    if exchange is not None and period not in _OVERSEAS_PERIODS:
        raise TradingUnsupportedError(f"KIS has no {period!r} bars overseas; use 'D', 'W' or 'M'")
    bars: dict[date, Bar] = {}
    cursor = end
    for _ in range(_max_requests(start, end)):
        batch = _request(context, symbol, start, cursor, period, adjusted, exchange)
        fresh = [bar for bar in batch if start <= bar.day <= cursor and bar.day not in bars]
        for bar in fresh:
            bars[bar.day] = bar
        if not fresh or len(batch) < BARS_PER_REQUEST:
            break
        oldest = min(bar.day for bar in fresh)
        if oldest <= start:
            break
        cursor = oldest - timedelta(days=1)
    else:
        raise PagingError(f"price history of {symbol} did not end within {_max_requests(start, end)} requests")
    return [bars[day] for day in sorted(bars)]


def _request(
    context: TradingContext,
    symbol: str,
    start: date,
    end: date,
    period: str,
    adjusted: bool,
    exchange: Exchange | None,
) -> list[Bar]:
    region = "KR" if exchange is None else exchange.region
    entry = tr_id(region, "daily_prices", mock=context.mock)
    if exchange is None:
        params = {
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_INPUT_ISCD": symbol,
            "FID_INPUT_DATE_1": ymd(start),
            "FID_INPUT_DATE_2": ymd(end),
            "FID_PERIOD_DIV_CODE": _KR_PERIODS[period],
            "FID_ORG_ADJ_PRC": "0" if adjusted else "1",
        }
    else:
        params = {
            "AUTH": "",
            "EXCD": exchange.quote_code,
            "SYMB": symbol,
            "GUBN": _OVERSEAS_PERIODS[period],
            "BYMD": ymd(end),
            "MODP": "1" if adjusted else "0",
        }
    response = context.call("GET", entry.path, id_for(entry, mock=context.mock), params=params)
    answer = response.body
    if answer.get("rt_cd") != "0":
        raise rejection(answer, response.status, "price history query")
    rows = answer.get("output2")
    if not isinstance(rows, list):
        return []
    return [bar for bar in (_bar(symbol, row, exchange) for row in rows if isinstance(row, dict)) if bar]


def _bar(symbol: str, row: Mapping[str, Any], exchange: Exchange | None) -> Bar | None:
    day_text = text(row, "stck_bsop_date") if exchange is None else text(row, "xymd")
    if not day_text:
        return None  # KIS pads short answers with blank rows
    day = datetime.strptime(day_text[:8], "%Y%m%d").date()
    if exchange is None:
        prices = ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_clpr", "acml_vol", "acml_tr_pbmn")
    else:
        prices = ("open", "high", "low", "clos", "tvol", "tamt")
    return Bar(
        symbol=symbol,
        day=day,
        time=kst_midnight(day),
        open=decimal(row, prices[0]),
        high=decimal(row, prices[1]),
        low=decimal(row, prices[2]),
        close=decimal(row, prices[3]),
        volume=quantity(row, prices[4]),
        amount=decimal(row, prices[5]),
        raw=row,
    )
