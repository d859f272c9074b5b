"""Deterministic price history (daily, weekly, monthly, yearly bars) for the fake KIS server.

Why deterministic: a test that asks for the same range twice, or in two pieces,
must see the same bars.  Each business day's bar is derived from a SHA-256 of
``(symbol, date)`` alone, so any range can be served without storing anything,
and every bar is consistent: ``high >= max(open, close) >= min(open, close) >= low``.
Weeks, months and years aggregate their business days (Monday to Friday; the
fake knows no holidays) and are dated on their last business day inside the
requested range.  Nothing here is market data.

Two endpoints, KIS's shapes:

* ``FHKST03010100`` (``inquire-daily-itemchartprice``): ``output1`` a summary
  object, ``output2`` at most 100 bars newest first between ``FID_INPUT_DATE_1``
  and ``FID_INPUT_DATE_2`` (and not after the server's KST date).
  ``FID_PERIOD_DIV_CODE`` ``D``/``W``/``M``/``Y``; ``FID_ORG_ADJ_PRC`` ``0``
  (adjusted) and ``1`` (raw) give the same numbers (no corporate actions here).
* ``HHDFS76240000`` (overseas ``dailyprice``): ``output1`` an object,
  ``output2`` at most 100 bars newest first ending at ``BYMD`` (blank: today),
  with no start bound; ``GUBN`` ``0``/``1``/``2`` = day/week/month.

Unknown symbols (see :mod:`.market`) get empty ``output2`` lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from . import market

__all__ = ["BARS_PER_ANSWER", "ENDPOINTS", "KR_BARS_PATH", "OVERSEAS_BARS_PATH", "business_days", "daily_bar"]

KR_BARS_PATH = "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice"
OVERSEAS_BARS_PATH = "/uapi/overseas-price/v1/quotations/dailyprice"
#: Bars KIS answers per request at most.
BARS_PER_ANSWER = 100

Bar = tuple[date, float, float, float, float, int]  # day, open, high, low, close, volume


def business_days(first: date, last: date) -> list[date]:
    """Monday to Friday from ``first`` to ``last`` inclusive, oldest first."""
    days: list[date] = []
    day = first
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def daily_bar(symbol: str, day: date, base: float, *, kr: bool) -> Bar:
    """One business day's bar, from ``(symbol, day)`` alone; ``kr`` rounds to KRX ticks."""
    rng = market._rng("bar", symbol, day.isoformat())
    # A slow wave plus daily noise keeps neighbouring days plausible without any state.
    wave = ((day.toordinal() % 120) - 60) / 60.0 * 0.08
    close = base * (1 + wave + rng.uniform(-0.03, 0.03))
    opn = close * (1 + rng.uniform(-0.02, 0.02))
    high = max(opn, close) * (1 + rng.uniform(0, 0.015))
    low = min(opn, close) * (1 - rng.uniform(0, 0.015))
    volume = rng.randint(10_000, 5_000_000)
    if kr:
        opn, close = market._floor_tick(opn), market._floor_tick(close)
        high = market._ceil_tick(max(high, opn, close))
        low = max(1, market._floor_tick(min(low, opn, close)))
        return day, float(opn), float(high), float(low), float(close), volume
    opn, close = round(opn, 4), round(close, 4)
    return day, opn, round(max(high, opn, close), 4), round(min(low, opn, close), 4), close, volume


def _period_key(day: date, period: str) -> tuple[int, ...]:
    if period == "W":
        iso = day.isocalendar()
        return iso[0], iso[1]
    if period == "M":
        return day.year, day.month
    if period == "Y":
        return (day.year,)
    return (day.toordinal(),)


def _bars(symbol: str, first: date, last: date, period: str, base: float, *, kr: bool) -> list[Bar]:
    """Bars newest first: one per business day, or one per period (aggregated, dated on its last day)."""
    groups: dict[tuple[int, ...], list[Bar]] = {}
    for day in business_days(first, last):
        groups.setdefault(_period_key(day, period), []).append(daily_bar(symbol, day, base, kr=kr))
    bars: list[Bar] = []
    for days in groups.values():
        bars.append(
            (
                days[-1][0],
                days[0][1],
                max(b[2] for b in days),
                min(b[3] for b in days),
                days[-1][4],
                sum(b[5] for b in days),
            )
        )
    bars.sort(key=lambda b: b[0], reverse=True)
    return bars[:BARS_PER_ANSWER]


def _ymd(text: str, name: str) -> date:
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name}={text!r} is not YYYYMMDD")
    return datetime.strptime(text, "%Y%m%d").date()


def kr_bars(query: Mapping[str, str], today: date) -> dict[str, object]:
    """``FHKST03010100`` data."""
    code = query["FID_INPUT_ISCD"].strip().upper()
    first = _ymd(query["FID_INPUT_DATE_1"], "FID_INPUT_DATE_1")
    last = min(_ymd(query["FID_INPUT_DATE_2"], "FID_INPUT_DATE_2"), today)
    period = query["FID_PERIOD_DIV_CODE"].strip().upper()
    if period not in ("D", "W", "M", "Y"):
        raise ValueError(f"FID_PERIOD_DIV_CODE={period!r} is not D, W, M or Y")
    if query["FID_ORG_ADJ_PRC"] not in ("0", "1"):
        raise ValueError(f"FID_ORG_ADJ_PRC={query['FID_ORG_ADJ_PRC']!r} is not 0 or 1")
    if not market.is_known_kr(code):
        return {"output1": market._blank(_kr_summary("005930")), "output2": []}
    base = float(market._kr_quote(code).base)
    rows = [
        {
            "stck_bsop_date": day.strftime("%Y%m%d"),
            "stck_clpr": f"{close:.0f}",
            "stck_oprc": f"{opn:.0f}",
            "stck_hgpr": f"{high:.0f}",
            "stck_lwpr": f"{low:.0f}",
            "acml_vol": str(volume),
            "acml_tr_pbmn": str(int(volume * close)),
            "flng_cls_code": "00",
            "prtt_rate": "0.00",
            "mod_yn": "N",
            "prdy_vrss_sign": "3",
            "prdy_vrss": "0",
            "revl_issu_reas": "",
        }
        for day, opn, high, low, close, volume in _bars(code, first, last, period, base, kr=True)
    ]
    return {"output1": _kr_summary(code), "output2": rows}


def _kr_summary(code: str) -> dict[str, str]:
    price = market.domestic_price(code)
    name, _eng = market._kr_names(code)
    return {
        "prdy_vrss": price["prdy_vrss"],
        "prdy_vrss_sign": price["prdy_vrss_sign"],
        "prdy_ctrt": price["prdy_ctrt"],
        "stck_prdy_clpr": price["stck_sdpr"],
        "acml_vol": price["acml_vol"],
        "acml_tr_pbmn": price["acml_tr_pbmn"],
        "hts_kor_isnm": name,
        "stck_prpr": price["stck_prpr"],
        "stck_shrn_iscd": code,
        "stck_oprc": price["stck_oprc"],
        "stck_hgpr": price["stck_hgpr"],
        "stck_lwpr": price["stck_lwpr"],
        "stck_mxpr": price["stck_mxpr"],
        "stck_llam": price["stck_llam"],
    }


def overseas_bars(query: Mapping[str, str], today: date) -> dict[str, object]:
    """``HHDFS76240000`` data."""
    excd = query["EXCD"].strip().upper()
    symbol = query["SYMB"].strip().upper()
    gubn = query["GUBN"].strip()
    periods = {"0": "D", "1": "W", "2": "M"}
    if gubn not in periods:
        raise ValueError(f"GUBN={gubn!r} is not 0, 1 or 2")
    bymd = query["BYMD"].strip()
    last = min(_ymd(bymd, "BYMD"), today) if bymd else today
    detail = market.overseas_price_detail(excd, symbol)
    summary = {"rsym": detail["rsym"], "zdiv": detail["zdiv"] if detail["zdiv"] else "4", "nrec": "0"}
    if not detail["base"]:
        return {"output1": summary, "output2": []}
    base = float(detail["base"])
    # Enough calendar days for 100 months: the answer is capped at 100 bars anyway.
    span = {"D": 150, "W": 720, "M": 3100}[periods[gubn]]
    bars = _bars(symbol, last - timedelta(days=span), last, periods[gubn], base, kr=False)
    rows = [
        {
            "xymd": day.strftime("%Y%m%d"),
            "clos": f"{close:.4f}",
            "sign": "3",
            "diff": "0.0000",
            "rate": "0.00",
            "open": f"{opn:.4f}",
            "high": f"{high:.4f}",
            "low": f"{low:.4f}",
            "tvol": str(volume),
            "tamt": str(int(volume * close)),
            "pbid": f"{close:.4f}",
            "vbid": "0",
            "pask": f"{close:.4f}",
            "vask": "0",
        }
        for day, opn, high, low, close, volume in bars
    ]
    summary["nrec"] = str(len(rows))
    return {"output1": summary, "output2": rows}


ENDPOINTS: Mapping[str, market.Endpoint] = {
    KR_BARS_PATH: market.Endpoint(
        "FHKST03010100",
        (
            "FID_COND_MRKT_DIV_CODE",
            "FID_INPUT_ISCD",
            "FID_INPUT_DATE_1",
            "FID_INPUT_DATE_2",
            "FID_PERIOD_DIV_CODE",
            "FID_ORG_ADJ_PRC",
        ),
        answer=kr_bars,
    ),
    OVERSEAS_BARS_PATH: market.Endpoint(
        "HHDFS76240000",
        ("AUTH", "EXCD", "SYMB", "GUBN", "BYMD", "MODP"),
        answer=overseas_bars,
    ),
}
