"""Reading the account: balance, orders and fills, buyable amount; every page followed.

Korea and the overseas exchanges answer in different shapes (and the overseas
queries use the 200-wide continuation keys); each reader turns its shape into
the same typed results.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from ..errors import ConfigurationError
from .context import TradingContext
from .models import Balance, Buyable, Order, OrderRecord, Position
from .paging import PagedQuery, read_all_pages
from .rejections import rejection
from .trids import US_EXCHANGES, Exchange, exchange_for, id_for, tr_id
from .values import decimal, kst_datetime, kst_today, quantity, text, ymd

#: KR orders older than this many days come from the archive query (KIS: "more than three months").
ARCHIVE_AFTER_DAYS = 92


def _rows(value: object) -> list[Mapping[str, Any]]:
    if isinstance(value, list):
        return [row for row in value if isinstance(row, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def _side(code: str) -> Literal["buy", "sell"]:
    return "sell" if code.strip() == "01" else "buy"


def _kind(code: str, cancelled: bool) -> Literal["new", "revise", "cancel"]:
    if cancelled or code.strip() == "02":
        return "cancel"
    if code.strip() == "01":
        return "revise"
    return "new"


def _markets(market: str) -> list[Exchange | None]:
    """``KR`` -> [None]; ``US`` -> the three US exchanges; an exchange code -> that one."""
    if not isinstance(market, str) or not market.strip():
        raise ConfigurationError(f"market must be 'KR', 'US' or an exchange code, got {market!r}")
    code = market.strip().upper()
    if code in ("KR", "KRX"):
        return [None]
    if code == "US":
        return [exchange_for(name) for name in US_EXCHANGES]
    return [exchange_for(code)]


# ------------------------------------------------------------------------------ balance
def fetch_balance(context: TradingContext, market: str) -> Balance:
    """The balance of ``market``; see :meth:`KoreaInvestment.fetch_balance`."""
    exchanges = _markets(market)
    if exchanges == [None]:
        return _kr_balance(context)
    return _overseas_balance(context, [e for e in exchanges if e is not None], market.strip().upper())


def _kr_balance(context: TradingContext) -> Balance:
    entry = tr_id("KR", "balance", mock=context.mock)
    query = PagedQuery(
        "GET",
        entry.path,
        id_for(entry, mock=context.mock),
        {
            **context.account_fields(),
            "AFHR_FLPR_YN": "N",
            "OFL_YN": "",
            "INQR_DVSN": "02",
            "UNPR_DVSN": "01",
            "FUND_STTL_ICLD_YN": "N",
            "FNCG_AMT_AUTO_RDPT_YN": "N",
            "PRCS_DVSN": "00",
        },
        what="balance query",
    )
    pages = read_all_pages(context.call, query)
    positions = [
        Position(
            symbol=text(row, "pdno"),
            name=text(row, "prdt_name"),
            quantity=quantity(row, "hldg_qty"),
            sellable_quantity=quantity(row, "ord_psbl_qty"),
            average_price=decimal(row, "pchs_avg_pric"),
            current_price=decimal(row, "prpr"),
            purchase_amount=decimal(row, "pchs_amt"),
            evaluation_amount=decimal(row, "evlu_amt"),
            profit_loss=decimal(row, "evlu_pfls_amt"),
            profit_loss_rate=decimal(row, "evlu_pfls_rt"),
            currency="KRW",
            market="KR",
            raw=row,
        )
        for page in pages
        for row in _rows(page.body.get("output1"))
        if quantity(row, "hldg_qty") > 0
    ]
    totals_rows = _rows(pages[-1].body.get("output2")) if pages else []
    totals: Mapping[str, Any] = totals_rows[0] if totals_rows else {}
    evaluation = (
        decimal(totals, "evlu_amt_smtl_amt") if totals else sum((p.evaluation_amount for p in positions), Decimal(0))
    )
    cash = decimal(totals, "dnca_tot_amt")
    return Balance(
        market="KR",
        currency="KRW",
        positions=tuple(positions),
        cash=cash,
        purchase_total=decimal(totals, "pchs_amt_smtl_amt"),
        evaluation_total=evaluation,
        profit_loss_total=decimal(totals, "evlu_pfls_smtl_amt"),
        total_evaluation=decimal(totals, "tot_evlu_amt") if text(totals, "tot_evlu_amt") else cash + evaluation,
        raw=dict(totals),
    )


def _overseas_balance(context: TradingContext, exchanges: list[Exchange], market: str) -> Balance:
    positions: dict[str, Position] = {}
    totals: dict[str, Any] = {}
    currency = exchanges[0].currency
    for exchange in exchanges:
        entry = tr_id(exchange.region, "balance", mock=context.mock)
        query = PagedQuery(
            "GET",
            entry.path,
            id_for(entry, mock=context.mock),
            {**context.account_fields(), "OVRS_EXCG_CD": exchange.order_code, "TR_CRCY_CD": exchange.currency},
            what=f"balance query ({exchange.order_code})",
            key_width=200,
        )
        pages = read_all_pages(context.call, query)
        for page in pages:
            for row in _rows(page.body.get("output1")):
                symbol = text(row, "ovrs_pdno", "pdno")
                held = quantity(row, "ovrs_cblc_qty", "hldg_qty")
                if not symbol or held <= 0 or symbol in positions:  # per-exchange US queries repeat holdings
                    continue
                positions[symbol] = Position(
                    symbol=symbol,
                    name=text(row, "ovrs_item_name", "prdt_name"),
                    quantity=held,
                    sellable_quantity=quantity(row, "ord_psbl_qty"),
                    average_price=decimal(row, "pchs_avg_pric"),
                    current_price=decimal(row, "now_pric2"),
                    purchase_amount=decimal(row, "frcr_pchs_amt1"),
                    evaluation_amount=decimal(row, "ovrs_stck_evlu_amt"),
                    profit_loss=decimal(row, "frcr_evlu_pfls_amt"),
                    profit_loss_rate=decimal(row, "evlu_pfls_rt"),
                    currency=text(row, "tr_crcy_cd") or exchange.currency,
                    market=text(row, "ovrs_excg_cd") or exchange.order_code,
                    raw=row,
                )
        if pages and not totals:
            totals_rows = _rows(pages[-1].body.get("output2"))
            totals = dict(totals_rows[0]) if totals_rows else {}
    holdings = tuple(positions.values())
    purchase = sum((p.purchase_amount for p in holdings), Decimal(0))
    evaluation = sum((p.evaluation_amount for p in holdings), Decimal(0))
    profit = sum((p.profit_loss for p in holdings), Decimal(0))
    cash = decimal(totals, "frcr_dncl_amt_2", "frcr_buy_amt_smtl1")
    return Balance(
        market=market,
        currency=currency,
        positions=holdings,
        cash=cash,
        purchase_total=purchase,
        evaluation_total=evaluation,
        profit_loss_total=profit,
        total_evaluation=cash + evaluation,
        raw=totals,
    )


# ------------------------------------------------------------------------------- orders
def fetch_orders(context: TradingContext, start: date, end: date, market: str) -> list[OrderRecord]:
    """Orders and fills from ``start`` to ``end``; see :meth:`KoreaInvestment.fetch_orders`."""
    if start > end:
        raise ConfigurationError(f"start ({start}) is after end ({end})")
    exchanges = _markets(market)
    if exchanges == [None]:
        return _kr_orders(context, start, end)
    records: list[OrderRecord] = []
    seen: set[str] = set()
    for exchange in exchanges:
        if exchange is None:  # pragma: no cover - _markets gives None only alone
            continue
        for record in _overseas_orders(context, exchange, start, end):
            if record.order_no not in seen:
                seen.add(record.order_no)
                records.append(record)
    return records


def _kr_orders(context: TradingContext, start: date, end: date) -> list[OrderRecord]:
    archive = start < kst_today() - timedelta(days=ARCHIVE_AFTER_DAYS)
    entry = tr_id("KR", "orders_archive" if archive else "orders", mock=context.mock)
    query = PagedQuery(
        "GET",
        entry.path,
        id_for(entry, mock=context.mock),
        {
            **context.account_fields(),
            "INQR_STRT_DT": ymd(start),
            "INQR_END_DT": ymd(end),
            "SLL_BUY_DVSN_CD": "00",
            "INQR_DVSN": "00",
            "PDNO": "",
            "CCLD_DVSN": "00",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
            "INQR_DVSN_3": "00",
            "INQR_DVSN_1": "",
        },
        what="orders query",
    )
    records = []
    for page in read_all_pages(context.call, query):
        for row in _rows(page.body.get("output1")):
            order_no = text(row, "odno")
            if not order_no:
                continue
            price = decimal(row, "ord_unpr")
            original = text(row, "orgn_odno").lstrip("0")
            cancelled = text(row, "cncl_yn").upper() == "Y"
            records.append(
                OrderRecord(
                    order_no=order_no,
                    original_order_no=text(row, "orgn_odno") if original else None,
                    branch=text(row, "ord_gno_brno"),
                    symbol=text(row, "pdno"),
                    name=text(row, "prdt_name"),
                    side=_side(text(row, "sll_buy_dvsn_cd")),
                    kind=_kind("01" if original and not cancelled else "", cancelled),
                    quantity=quantity(row, "ord_qty"),
                    price=price if price > 0 else None,
                    filled_quantity=quantity(row, "tot_ccld_qty"),
                    average_fill_price=decimal(row, "avg_prvs"),
                    filled_amount=decimal(row, "tot_ccld_amt"),
                    remaining_quantity=quantity(row, "rmn_qty"),
                    rejected_quantity=quantity(row, "rjct_qty"),
                    order_type=text(row, "ord_dvsn_cd"),
                    market="KR",
                    ordered_at=kst_datetime(text(row, "ord_dt"), text(row, "ord_tmd")),
                    raw=row,
                )
            )
    return records


def _overseas_orders(context: TradingContext, exchange: Exchange, start: date, end: date) -> list[OrderRecord]:
    entry = tr_id(exchange.region, "orders", mock=context.mock)
    query = PagedQuery(
        "GET",
        entry.path,
        id_for(entry, mock=context.mock),
        {
            **context.account_fields(),
            "PDNO": "",
            # KIS dates this list in the market's own time, which runs behind Korea's: a day earlier
            # covers the orders of a session that crossed midnight here; rows are kept by Korean date.
            "ORD_STRT_DT": ymd(start - timedelta(days=1)),
            "ORD_END_DT": ymd(end),
            "SLL_BUY_DVSN": "00",
            "CCLD_NCCS_DVSN": "00",
            "OVRS_EXCG_CD": exchange.order_code,
            "SORT_SQN": "DS",
            "ORD_DT": "",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
        },
        what=f"orders query ({exchange.order_code})",
        key_width=200,
    )
    records = []
    for page in read_all_pages(context.call, query):
        for row in _rows(page.body.get("output")):
            order_no = text(row, "odno")
            if not order_no:
                continue
            price = decimal(row, "ft_ord_unpr3", "ord_unpr")
            original = text(row, "orgn_odno")
            # KIS's own (Korean) time when it gives one; ord_dt/ord_tmd are the market's local time.
            korean = text(row, "dmst_ord_dt") and text(row, "thco_ord_tmd")
            ordered_at = (
                kst_datetime(text(row, "dmst_ord_dt"), text(row, "thco_ord_tmd"))
                if korean
                else kst_datetime(text(row, "ord_dt"), text(row, "ord_tmd"))
            )
            if ordered_at is not None and not start <= ordered_at.date() <= end:
                continue
            records.append(
                OrderRecord(
                    order_no=order_no,
                    original_order_no=original if original.strip("0") else None,
                    branch=text(row, "ord_gno_brno"),
                    symbol=text(row, "pdno"),
                    name=text(row, "prdt_name"),
                    side=_side(text(row, "sll_buy_dvsn_cd")),
                    kind=_kind(text(row, "rvse_cncl_dvsn"), False),
                    quantity=quantity(row, "ft_ord_qty"),
                    price=price if price > 0 else None,
                    filled_quantity=quantity(row, "ft_ccld_qty"),
                    average_fill_price=decimal(row, "ft_ccld_unpr3"),
                    filled_amount=decimal(row, "ft_ccld_amt3"),
                    remaining_quantity=quantity(row, "nccs_qty"),
                    rejected_quantity=0,
                    order_type="00",
                    market=text(row, "ovrs_excg_cd") or exchange.order_code,
                    ordered_at=ordered_at,
                    raw=row,
                )
            )
    return records


def find_order(context: TradingContext, order: Order) -> OrderRecord | None:
    """Today's row of ``order`` (by order number), or ``None``."""
    today = kst_today()
    for record in fetch_orders(context, today - timedelta(days=1), today, order.market):
        if record.order_no == order.order_no:
            return record
    return None


# ------------------------------------------------------------------------------ buyable
def fetch_buyable(context: TradingContext, symbol: str, price: Decimal | None, exchange: Exchange | None) -> Buyable:
    """Cash and quantity that can buy ``symbol``; see :meth:`KoreaInvestment.fetch_buyable`."""
    region = "KR" if exchange is None else exchange.region
    entry = tr_id(region, "buyable", mock=context.mock)
    if exchange is None:
        params = {
            **context.account_fields(),
            "PDNO": symbol,
            "ORD_UNPR": "" if price is None else format(price, "f"),
            "ORD_DVSN": "01" if price is None else "00",
            "CMA_EVLU_AMT_ICLD_YN": "N",
            "OVRS_ICLD_YN": "N",
        }
    else:
        params = {
            **context.account_fields(),
            "OVRS_EXCG_CD": exchange.order_code,
            "OVRS_ORD_UNPR": "" if price is None else format(price, "f"),
            "ITEM_CD": symbol,
        }
    response = context.call("GET", entry.path, id_for(entry, mock=context.mock), params=params)
    answer = response.body
    if answer.get("rt_cd") != "0":
        raise rejection(answer, response.status, "buyable query")
    rows = _rows(answer.get("output"))
    row: Mapping[str, Any] = rows[0] if rows else {}
    if exchange is None:
        return Buyable(
            symbol=symbol,
            market="KR",
            currency="KRW",
            price=decimal(row, "psbl_qty_calc_unpr") or (price or Decimal(0)),
            cash=decimal(row, "ord_psbl_cash"),
            quantity=quantity(row, "nrcvb_buy_qty"),
            amount=decimal(row, "nrcvb_buy_amt"),
            max_quantity=quantity(row, "max_buy_qty"),
            max_amount=decimal(row, "max_buy_amt"),
            raw=row,
        )
    cash = decimal(row, "ord_psbl_frcr_amt")
    return Buyable(
        symbol=symbol,
        market=exchange.order_code,
        currency=text(row, "tr_crcy_cd") or exchange.currency,
        price=price or Decimal(0),
        cash=cash,
        quantity=quantity(row, "max_ord_psbl_qty"),
        amount=cash,
        max_quantity=quantity(row, "ovrs_max_ord_psbl_qty", "max_ord_psbl_qty"),
        max_amount=decimal(row, "ovrs_ord_psbl_amt") or cash,
        raw=row,
    )
