"""The fake KIS server's account book: cash, positions, orders and fills, and the trading endpoints.

Why here and not in ``state.py``: the token and rate-limit rules stay readable on
their own, and the trading rules can be read in one place.  :class:`Accounts`
holds every book; :class:`~.state.KISState` calls it under its one lock, after the
usual gate (Bearer, token, app key, rate limit), so nothing here locks.

KIS's wire format, as our client speaks it (see the facts sheet, "Orders and
account"): POST bodies with UPPER-case keys and string values, GET answers with
lower-case keys, numbers as strings, ``tr_cont`` response headers and the
``ctx_area_*`` continuation keys for paged queries.

Rules (the fake's, where KIS does not say):

* **Accounts** are ``"CANO-ACNT_PRDT_CD"`` (``12345678-01``).  An unknown account
  opens on first use with ``account_cash_krw`` won, ``account_cash_usd`` dollars,
  :data:`OTHER_CASH` in the other currencies, and no positions.
* **Symbols.** KR: 6 ASCII letters/digits, except ``999999``.  US (NASD, NYSE,
  AMEX): the symbols of :data:`.market.OVERSEAS`, each on its one exchange only
  (``AAPL`` on NYSE is unknown).  Other exchanges (TKSE, SEHK, SHAA, SZAA, HASE,
  VNSE): any 1..12 ASCII letters/digits, except ``ZZZZZ``.  ``999999`` and
  ``ZZZZZ`` are never known.  An unknown symbol is rejected ``APBK0656``.
  Positions and price overrides are keyed by symbol alone.
* **Prices.** KR: the quote's ``stck_prpr``; US: price-detail's ``last``; other
  exchanges: a price derived from the symbol; :meth:`Accounts.set_price`
  overrides any of them (and the quotes follow).
* **Orders.** A market order (KR ``ORD_DVSN`` ``01``, or any other KR code with
  ``ORD_UNPR`` ``0``; overseas ``31``/``33`` with price ``0``) fills at once, in
  full, at the current price.  A limit order fills at once at the current price
  when marketable (buy limit >= price, sell limit <= price), else it rests until
  cancelled, revised or :meth:`Accounts.fill_order`.  A buy needs cash >=
  quantity x (limit or current price), net of what resting buys reserve; a sell
  needs the held quantity net of resting sells.  No fees, no taxes.
* **Revise / cancel** create a new order number.  A revise is a new order for the
  revised quantity and price (it fills or rests under the same rules), and the
  original's remaining quantity drops by that much.  A cancel row
  (``cancelled=True``) releases what it cancels; the original is marked
  ``cancelled`` when a cancel took all it had left.
* **Order numbers** (``ODNO``) are 10 digits, zero padded, increasing, from a random
  base per server (so clients of several fakes in one process never see a number twice).
* **Paging.** Opaque continuation keys, remembered by the fake; a key it did not
  issue (or issued for another query) is HTTP 500 ``OPSQ2002``.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol

from . import market

__all__ = [
    "OTHER_CASH",
    "PATHS",
    "Accounts",
    "Answer",
    "FaultPlan",
    "Op",
    "OrderFault",
    "OrderRow",
    "resolve",
]

KST = timezone(timedelta(hours=9), "KST")

Code = tuple[str, str]

ORDER_OK: Code = ("APBK0013", "주문 전송 완료 되었습니다.")
QUERY_OK: Mapping[str, Code] = {
    "real": ("KIOK0000", "조회가 완료되었습니다"),
    "mock": ("20310000", "모의투자 조회가 완료되었습니다."),
}
#: Business rejections: case -> (real code, mock code).
REJECTIONS: Mapping[str, tuple[Code, Code]] = {
    "cash": (("APBK0919", "주문가능금액을 초과 했습니다"), ("40240000", "모의투자 주문가능금액이 부족합니다.")),
    "holdings": (("APBK1234", "주문가능수량을 초과하였습니다"), ("40250000", "모의투자 잔고수량이 부족합니다.")),
    "closed": (("APBK0918", "장운영시간이 아닙니다."), ("40580000", "모의투자 장종료 입니다.")),
    "symbol": (("APBK0656", "해당종목정보가 없습니다."), ("APBK0656", "해당종목정보가 없습니다.")),
    "nothing": (
        ("40330000", "정정취소가능수량을 초과하였습니다."),
        ("40330000", "정정취소가능수량을 초과하였습니다."),
    ),
    "account": (("IGW00002", "계좌번호가 일치하지 않습니다."), ("IGW00002", "계좌번호가 일치하지 않습니다.")),
}
#: A tr_id of the other environment (HTTP 500); the key is the host that refuses it.
WRONG_ENVIRONMENT: Mapping[str, Code] = {
    "mock": ("EGW00213", "모의투자 TR 이 아닙니다."),
    "real": ("EGW00213", "실전투자 TR 이 아닙니다."),
}
BAD_TR_ID: Code = ("OPSQ0002", "없는 서비스 코드 입니다")
MISSING_FIELD: Code = ("OPSQ2001", "ERROR : INPUT_FIELD NOT FOUND")
BAD_FIELD_VALUE: Code = ("OPSQ2002", "ERROR : INPUT_FIELD_VALUE INVALID")
BAD_HASHKEY: Code = ("EGW00131", "유효하지 않은 hashkey")
DATA_CHANGED: Code = ("SYDB0050", "조회이후에 자료가 변경되었습니다.(다시 조회하세요)")

#: Opening cash in the currencies that have no setting of their own.
OTHER_CASH: Mapping[str, Decimal] = {
    "HKD": Decimal(1_000_000),
    "CNY": Decimal(1_000_000),
    "JPY": Decimal(100_000_000),
    "VND": Decimal(10_000_000_000),
}
#: Won per unit, for the ``exrt`` fields only (nothing is converted).
EXCHANGE_RATES: Mapping[str, str] = {
    "USD": "1380.00",
    "HKD": "176.50",
    "CNY": "190.20",
    "JPY": "9.2100",
    "VND": "0.0550",
}

#: Overseas order exchange -> (tr_id region, currency, quotation exchange code).
EXCHANGES: Mapping[str, tuple[str, str, str]] = {
    "NASD": ("US", "USD", "NAS"),
    "NYSE": ("US", "USD", "NYS"),
    "AMEX": ("US", "USD", "AMS"),
    "SEHK": ("HK", "HKD", "HKS"),
    "SHAA": ("SH", "CNY", "SHS"),
    "SZAA": ("SZ", "CNY", "SZS"),
    "TKSE": ("JP", "JPY", "TSE"),
    "HASE": ("VN", "VND", "HNX"),
    "VNSE": ("VN", "VND", "HSX"),
}
US_EXCHANGES = ("NASD", "NYSE", "AMEX")

DEFAULT_SLOW_AFTER = 30.0
#: Seconds a ``late`` order waits before the fake acts on it.
DEFAULT_LATE = 2.0


class OrderFault(StrEnum):
    """Faults :meth:`FakeKIS.set_order_fault` injects into order POSTs (a ``str`` enum)."""

    DROP_AFTER = "drop_after"  # process the order, then close the connection without answering
    SLOW_AFTER = "slow_after"  # process, then answer after `delay` seconds (default 30)
    HTTP500_EMPTY = "http500_empty"  # process, then answer HTTP 500 with an empty body
    RESET_AFTER = "reset_after"  # process, then reset the connection (the client sees ECONNRESET)
    DROP_BEFORE = "drop_before"  # close without processing: nothing is placed
    LATE = "late"  # close without answering, then process `delay` seconds later (default 2): a gateway
    # that gave up while its backend still worked, so the order shows up only after a while


@dataclass(frozen=True)
class FaultPlan:
    """A fault taken by one order POST."""

    kind: OrderFault
    delay: float


@dataclass
class _OrderFault:
    kind: OrderFault
    remaining: int | None
    delay: float
    probability: float | None
    rng: random.Random


# ---------------------------------------------------------------------------------- the tr_id table
_KR = "/uapi/domestic-stock/v1/trading"
_OS = "/uapi/overseas-stock/v1/trading"
KR_ORDER_PATH = f"{_KR}/order-cash"
KR_REVISE_PATH = f"{_KR}/order-rvsecncl"
KR_BALANCE_PATH = f"{_KR}/inquire-balance"
KR_ORDERS_PATH = f"{_KR}/inquire-daily-ccld"
KR_BUYABLE_PATH = f"{_KR}/inquire-psbl-order"
OS_ORDER_PATH = f"{_OS}/order"
OS_REVISE_PATH = f"{_OS}/order-rvsecncl"
OS_BALANCE_PATH = f"{_OS}/inquire-balance"
OS_ORDERS_PATH = f"{_OS}/inquire-ccnl"
OS_BUYABLE_PATH = f"{_OS}/inquire-psamount"


@dataclass(frozen=True)
class Op:
    """What one tr_id does on one host."""

    name: str  # order, revise, kr_balance, kr_orders, kr_buyable, os_balance, os_orders, os_buyable
    environment: str  # "real" or "mock"
    side: str = ""  # buy / sell, for orders
    region: str = ""  # KR, US, JP, HK, SH, SZ, VN

    @property
    def is_order(self) -> bool:
        return self.name in ("order", "revise")


def _both(real: str, mock: str, name: str, side: str = "", region: str = "") -> dict[str, Op]:
    return {real: Op(name, "real", side, region), mock: Op(name, "mock", side, region)}


def _mock_of(real: str) -> str:
    return "V" + real[1:]


_OVERSEAS_ORDER_IDS = {  # region -> (buy, sell) real ids; mock ids are V forms except the US sell
    "US": ("TTTT1002U", "TTTT1006U"),
    "JP": ("TTTS0308U", "TTTS0307U"),
    "HK": ("TTTS1002U", "TTTS1001U"),
    "SH": ("TTTS0202U", "TTTS1005U"),
    "SZ": ("TTTS0305U", "TTTS0304U"),
    "VN": ("TTTS0311U", "TTTS0310U"),
}
_OVERSEAS_REVISE_IDS = {"US": "TTTT1004U", "HK": "TTTS1003U", "JP": "TTTS0309U"}


def _build_paths() -> dict[str, tuple[str, dict[str, Op]]]:
    os_orders: dict[str, Op] = {}
    for region, (buy, sell) in _OVERSEAS_ORDER_IDS.items():
        os_orders.update(_both(buy, _mock_of(buy), "order", "buy", region))
        mock_sell = "VTTT1001U" if region == "US" else _mock_of(sell)  # mock has no VTTT1006U
        os_orders.update(_both(sell, mock_sell, "order", "sell", region))
    os_revise: dict[str, Op] = {}
    for region, real in _OVERSEAS_REVISE_IDS.items():
        os_revise.update(_both(real, _mock_of(real), "revise", region=region))
    return {
        KR_ORDER_PATH: (
            "POST",
            {
                **_both("TTTC0012U", "VTTC0012U", "order", "buy", "KR"),
                **_both("TTTC0011U", "VTTC0011U", "order", "sell", "KR"),
            },
        ),
        KR_REVISE_PATH: ("POST", _both("TTTC0013U", "VTTC0013U", "revise", region="KR")),
        KR_BALANCE_PATH: ("GET", _both("TTTC8434R", "VTTC8434R", "kr_balance")),
        KR_ORDERS_PATH: (
            "GET",
            {**_both("TTTC0081R", "VTTC0081R", "kr_orders"), **_both("CTSC9215R", "VTSC9215R", "kr_orders")},
        ),
        KR_BUYABLE_PATH: ("GET", _both("TTTC8908R", "VTTC8908R", "kr_buyable")),
        OS_ORDER_PATH: ("POST", os_orders),
        OS_REVISE_PATH: ("POST", os_revise),
        OS_BALANCE_PATH: ("GET", _both("TTTS3012R", "VTTS3012R", "os_balance")),
        OS_ORDERS_PATH: ("GET", _both("TTTS3035R", "VTTS3035R", "os_orders")),
        OS_BUYABLE_PATH: ("GET", _both("TTTS3007R", "VTTS3007R", "os_buyable")),
    }


#: path -> (HTTP method, tr_id -> Op on its host).
PATHS: Mapping[str, tuple[str, Mapping[str, Op]]] = _build_paths()

_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "kr_order": ("CANO", "ACNT_PRDT_CD", "PDNO", "ORD_DVSN", "ORD_QTY", "ORD_UNPR"),
    "kr_revise": (
        "CANO",
        "ACNT_PRDT_CD",
        "KRX_FWDG_ORD_ORGNO",
        "ORGN_ODNO",
        "ORD_DVSN",
        "RVSE_CNCL_DVSN_CD",
        "ORD_QTY",
        "ORD_UNPR",
        "QTY_ALL_ORD_YN",
    ),
    "os_order": ("CANO", "ACNT_PRDT_CD", "OVRS_EXCG_CD", "PDNO", "ORD_QTY", "OVRS_ORD_UNPR", "ORD_SVR_DVSN_CD"),
    "os_revise": (
        "CANO",
        "ACNT_PRDT_CD",
        "OVRS_EXCG_CD",
        "PDNO",
        "ORGN_ODNO",
        "RVSE_CNCL_DVSN_CD",
        "ORD_QTY",
        "OVRS_ORD_UNPR",
    ),
    "kr_balance": (
        "CANO",
        "ACNT_PRDT_CD",
        "AFHR_FLPR_YN",
        "INQR_DVSN",
        "UNPR_DVSN",
        "FUND_STTL_ICLD_YN",
        "FNCG_AMT_AUTO_RDPT_YN",
        "PRCS_DVSN",
    ),
    "kr_orders": ("CANO", "ACNT_PRDT_CD", "INQR_STRT_DT", "INQR_END_DT", "SLL_BUY_DVSN_CD", "INQR_DVSN", "CCLD_DVSN"),
    "kr_buyable": ("CANO", "ACNT_PRDT_CD", "PDNO", "ORD_UNPR", "ORD_DVSN"),
    "os_balance": ("CANO", "ACNT_PRDT_CD", "OVRS_EXCG_CD", "TR_CRCY_CD"),
    "os_orders": ("CANO", "ACNT_PRDT_CD", "ORD_STRT_DT", "ORD_END_DT", "OVRS_EXCG_CD"),
    "os_buyable": ("CANO", "ACNT_PRDT_CD", "OVRS_EXCG_CD", "OVRS_ORD_UNPR", "ITEM_CD"),
}


class _Settings(Protocol):
    """The settings this module reads (``state.Settings``); ``paging_restart`` counts down."""

    environment: str
    account_cash_krw: int | float
    account_cash_usd: int | float
    market_open: bool
    bind_account: str | None
    rejection_status: int
    balance_page_size: int | None
    orders_page_size: int | None
    paging_restart: int


@dataclass(frozen=True)
class Answer:
    """One trading answer: HTTP status, JSON body, extra headers, order rows it created."""

    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)
    placed: int = 0


def resolve(path: str, tr_id: str, environment: str) -> tuple[Op | None, Answer | None]:
    """The operation of ``tr_id`` at ``path`` on this host, or the refusal (EGW00213 / OPSQ0002)."""
    _method, ops = PATHS[path]
    op = ops.get(tr_id)
    if op is None:
        return None, _error(500, BAD_TR_ID, f" (tr_id={tr_id!r})")
    if op.environment != environment:
        return None, _error(500, WRONG_ENVIRONMENT[environment])
    return op, None


def _error(status: int, code: Code, detail: str = "", rt_cd: str = "1") -> Answer:
    return Answer(status, {"rt_cd": rt_cd, "msg_cd": code[0], "msg1": code[1] + detail})


class _Refusal(Exception):
    """Raised inside a handler; becomes its answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.get("msg_cd"))
        self.answer = answer


def _bad(detail: str) -> _Refusal:
    return _Refusal(_error(500, BAD_FIELD_VALUE, f" ({detail})"))


# ---------------------------------------------------------------------------------- the book
@dataclass
class Position:
    quantity: int
    average_price: Decimal
    market: str


@dataclass
class OrderRow:
    """One order row as KIS lists it: a new order, a revise or a cancel."""

    odno: str
    orgn_odno: str | None
    acc_no: str
    symbol: str
    name: str
    market: str  # "KR" or the overseas order exchange code
    currency: str
    side: str
    kind: str  # new / revise / cancel
    order_type: str
    quantity: int
    price: Decimal | None  # None: a market order
    remaining: int
    tr_id: str
    ordered_at: float
    branch: str
    filled: int = 0
    fill_amount: Decimal = Decimal(0)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "odno": self.odno,
            "orgn_odno": self.orgn_odno,
            "acc_no": self.acc_no,
            "symbol": self.symbol,
            "market": self.market,
            "side": self.side,
            "kind": self.kind,
            "order_type": self.order_type,
            "quantity": self.quantity,
            "price": self.price,
            "filled": self.filled,
            "remaining": self.remaining,
            "cancelled": self.cancelled,
            "tr_id": self.tr_id,
            "ordered_at": self.ordered_at,
            "branch": self.branch,
            "currency": self.currency,
            "fill_amount": self.fill_amount,
        }

    @property
    def average_fill(self) -> Decimal:
        return self.fill_amount / self.filled if self.filled else Decimal(0)


@dataclass
class _Book:
    acc_no: str
    branch: str
    cash: dict[str, Decimal]
    positions: dict[str, Position]
    resting: dict[str, OrderRow] = field(default_factory=dict)


@dataclass(frozen=True)
class _Instrument:
    symbol: str
    name: str
    market: str
    currency: str
    price: Decimal


def _split_account(acc_no: str) -> tuple[str, str]:
    cano, _, prdt = acc_no.partition("-")
    if not (len(cano) == 8 and cano.isdigit() and len(prdt) == 2 and prdt.isdigit()):
        raise ValueError(f"account must be 'CANO-ACNT_PRDT_CD' (8 and 2 digits), got {acc_no!r}")
    return cano, prdt


def _decimal(value: object, name: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _num(value: Decimal, places: int = 0) -> str:
    """A KIS number string: ``places`` decimals (0: a whole number, rounded down)."""
    if places == 0:
        return str(int(value.to_integral_value(rounding=ROUND_DOWN)))
    return f"{value:.{places}f}"


def _rate(part: Decimal, whole: Decimal) -> str:
    return f"{(part / whole * 100) if whole else Decimal(0):.2f}"


def _odno_key(text: str) -> str:
    return text.strip().lstrip("0")


class Accounts:
    """Every account book, every order row, prices, faults and issued continuation keys."""

    def __init__(self) -> None:
        self._books: dict[str, _Book] = {}
        self._orders: list[OrderRow] = []
        self._by_odno: dict[str, OrderRow] = {}  # key: the number without leading zeros
        # A random base per server: clients keep order numbers process-wide (to never claim one
        # twice), so two fakes in one test process must not hand out the same numbers.
        self._next_odno = secrets.randbelow(8_000_000) * 1000 + 1
        self._prices: dict[str, Decimal] = {}
        self._faults: list[_OrderFault] = []
        self._page_keys: OrderedDict[tuple[str, str], tuple[tuple[str, ...], int]] = OrderedDict()
        #: Told of every fill ``(row, quantity, price, hts_id)`` of an account opened with an HTS ID
        #: (the server turns it into an execution notice on the fake WebSocket).
        self.fill_listener: Callable[[OrderRow, int, Decimal, str], None] | None = None
        self._hts_ids: dict[str, str] = {}

    def set_hts_id(self, acc_no: str, hts_id: str | None) -> None:
        """Key ``acc_no``'s execution notices by ``hts_id`` (None: no notices)."""
        if hts_id:
            self._hts_ids[acc_no] = hts_id
        else:
            self._hts_ids.pop(acc_no, None)

    # ------------------------------------------------------------------ control
    def open_account(
        self,
        acc_no: str,
        settings: _Settings,
        cash_krw: object = None,
        cash_usd: object = None,
        positions: Mapping[str, Any] | None = None,
    ) -> None:
        """(Re)open ``acc_no``: its cash and positions are replaced; its order rows stay listed."""
        _split_account(acc_no)
        krw = _decimal(settings.account_cash_krw if cash_krw is None else cash_krw, "cash_krw")
        usd = _decimal(settings.account_cash_usd if cash_usd is None else cash_usd, "cash_usd")
        if krw < 0 or usd < 0:
            raise ValueError("cash must be >= 0")
        held: dict[str, Position] = {}
        for symbol, entry in (positions or {}).items():
            if not isinstance(entry, list | tuple) or len(entry) not in (2, 3):
                raise ValueError(f"position {symbol!r} must be (quantity, average_price[, market]), got {entry!r}")
            qty, avg = entry[0], entry[1]
            if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
                raise ValueError(f"position {symbol!r}: quantity must be an int >= 1, got {qty!r}")
            code = str(symbol).strip().upper()
            self.generated_price(code)  # unknown symbols raise
            where = str(entry[2]).strip().upper() if len(entry) == 3 else self._home_market(code)
            if where != "KR" and where not in EXCHANGES:
                raise ValueError(f"position {symbol!r}: market must be 'KR' or an exchange code, got {where!r}")
            held[code] = Position(qty, _decimal(avg, "average_price"), where)
        book = _Book(acc_no, _branch(acc_no), {"KRW": krw, "USD": usd, **OTHER_CASH}, held)
        old = self._books.get(acc_no)
        if old is not None:
            for row in old.resting.values():  # resting orders die with the old book
                row.remaining = 0
        self._books[acc_no] = book

    def _book(self, acc_no: str, settings: _Settings) -> _Book:
        book = self._books.get(acc_no)
        if book is None:
            self.open_account(acc_no, settings)
            book = self._books[acc_no]
        return book

    def set_price(self, symbol: str, price: object) -> None:
        code = symbol.strip().upper()
        value = _decimal(price, "price")
        if value <= 0:
            raise ValueError(f"price must be > 0, got {price!r}")
        self.generated_price(code)  # unknown symbols raise
        self._prices[code] = value

    def price_override(self, symbol: str) -> Decimal | None:
        return self._prices.get(symbol.strip().upper())

    def current_price(self, symbol: str) -> Decimal:
        code = symbol.strip().upper()
        return self._prices.get(code) or self.generated_price(code)

    @staticmethod
    def generated_price(code: str) -> Decimal:
        """The price the fake makes up for ``code`` (no override); ValueError when unknown."""
        us = market.us_exchange(code)
        if us is not None:
            return Decimal(market.overseas_price_detail(us, code)["last"])
        if market.is_known_kr(code):
            return Decimal(market.kr_price(code))
        if _foreign_ok(code):
            rng = market._rng("foreign", code)
            return Decimal(f"{10 ** rng.uniform(1.0, 3.0):.2f}")
        raise ValueError(f"unknown symbol {code!r}")

    @staticmethod
    def _home_market(code: str) -> str:
        us = market.us_exchange(code)
        if us is not None:
            return {"NAS": "NASD", "NYS": "NYSE", "AMS": "AMEX"}[us]
        if market.is_known_kr(code):
            return "KR"
        raise ValueError(f"say which exchange holds {code!r}: (quantity, average_price, 'TKSE')")

    def orders(self, acc_no: str | None = None) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self._orders if acc_no is None or row.acc_no == acc_no]

    def account(self, acc_no: str, settings: _Settings) -> dict[str, Any]:
        book = self._book(acc_no, settings)
        return {
            "acc_no": acc_no,
            "cash_krw": book.cash["KRW"],
            "cash_usd": book.cash["USD"],
            "cash": dict(book.cash),
            "positions": {
                symbol: {"quantity": p.quantity, "average_price": p.average_price, "market": p.market}
                for symbol, p in book.positions.items()
            },
        }

    def fill_order(self, odno: str, quantity: int | None) -> dict[str, Any]:
        row = self._by_odno.get(_odno_key(str(odno)))
        if row is None:
            raise ValueError(f"no order {odno!r}")
        if row.remaining <= 0 or row.price is None:
            raise ValueError(f"order {odno!r} is not resting (nothing remains)")
        qty = row.remaining if quantity is None else quantity
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= row.remaining:
            raise ValueError(f"quantity must be an int in 1..{row.remaining}, got {quantity!r}")
        book = self._books[row.acc_no]
        if row.side == "sell":
            held = book.positions.get(row.symbol)
            if held is None or held.quantity < qty:
                raise ValueError(f"account {row.acc_no} no longer holds {qty} {row.symbol}")
        self._fill(book, row, qty, row.price)
        return row.to_dict()

    # ------------------------------------------------------------------ faults
    def add_fault(
        self, kind: str, times: int | None, delay: float | None, probability: float | None, seed: int | None
    ) -> None:
        fault = OrderFault(kind)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be None or an int >= 1, got {times!r}")
        if delay is None:
            delay = {OrderFault.SLOW_AFTER: DEFAULT_SLOW_AFTER, OrderFault.LATE: DEFAULT_LATE}.get(fault, 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"delay must be a number >= 0, got {delay!r}")
        if probability is not None and (
            isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability <= 1
        ):
            raise ValueError(f"probability must be None or in (0, 1], got {probability!r}")
        rng = random.Random(seed) if seed is not None else random.Random()
        self._faults.append(_OrderFault(fault, times, float(delay), probability, rng))

    def clear_faults(self) -> None:
        self._faults.clear()

    def take_fault(self) -> FaultPlan | None:
        for fault in list(self._faults):
            if fault.probability is not None and fault.rng.random() >= fault.probability:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return FaultPlan(fault.kind, fault.delay)
        return None

    # ------------------------------------------------------------------ requests
    def handle(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], fields: Mapping[str, object]
    ) -> Answer:
        """One trading request that passed the gate and the tr_id check."""
        try:
            if op.is_order:
                bad = [key for key, value in fields.items() if not isinstance(value, str)]
                if bad:
                    raise _bad(f"non-string value in {', '.join(sorted(bad))}")
            kind = op.name
            if kind == "order":
                kind = "kr_order" if op.region == "KR" else "os_order"
            elif kind == "revise":
                kind = "kr_revise" if op.region == "KR" else "os_revise"
            missing = [name for name in _REQUIRED[kind] if name not in fields]
            if missing:
                raise _Refusal(_error(500, MISSING_FIELD, f" [{', '.join(missing)}]"))
            text = {key: str(value) for key, value in fields.items()}
            cano, prdt = text["CANO"].strip(), text["ACNT_PRDT_CD"].strip()
            if not (len(cano) == 8 and cano.isdigit() and len(prdt) == 2 and prdt.isdigit()):
                raise _bad("CANO must be 8 digits and ACNT_PRDT_CD 2 digits")
            acc_no = f"{cano}-{prdt}"
            if settings.bind_account is not None and acc_no != settings.bind_account:
                raise self._reject(settings, "account")
            book = self._book(acc_no, settings)
            env = settings.environment
            handler = getattr(self, "_" + kind)
            answer: Answer = handler(op, settings, now, headers, text, book)
            if answer.status == 200 and answer.body.get("rt_cd") == "0" and not op.is_order:
                code = QUERY_OK[env]
                answer.body.update(msg_cd=code[0], msg1=code[1])
            return answer
        except _Refusal as refusal:
            return refusal.answer

    @staticmethod
    def _reject(settings: _Settings, case: str) -> _Refusal:
        real, mock = REJECTIONS[case]
        return _Refusal(_error(settings.rejection_status, mock if settings.environment == "mock" else real))

    # ------------------------------------------------------------------ instruments
    def _instrument(self, settings: _Settings, symbol: str, market_code: str) -> _Instrument:
        code = symbol.strip().upper()
        override = self._prices.get(code)
        if market_code == "KR":
            if not market.is_known_kr(code):
                raise self._reject(settings, "symbol")
            name = market._kr_names(code)[0]
            return _Instrument(code, name, "KR", "KRW", override or Decimal(market.kr_price(code)))
        region, currency, quote_code = EXCHANGES[market_code]
        if region == "US":
            if market.us_exchange(code) != quote_code:
                raise self._reject(settings, "symbol")
            return _Instrument(code, market.OVERSEAS[code][1], market_code, currency, self.current_price(code))
        if not _foreign_ok(code):
            raise self._reject(settings, "symbol")
        return _Instrument(code, code, market_code, currency, self.current_price(code))

    # ------------------------------------------------------------------ money
    @staticmethod
    def _reserved_cash(book: _Book, currency: str) -> Decimal:
        return sum(
            (
                row.remaining * (row.price or Decimal(0))
                for row in book.resting.values()
                if row.side == "buy" and row.currency == currency
            ),
            Decimal(0),
        )

    @staticmethod
    def _reserved_quantity(book: _Book, symbol: str) -> int:
        return sum(row.remaining for row in book.resting.values() if row.side == "sell" and row.symbol == symbol)

    def _available_cash(self, book: _Book, currency: str) -> Decimal:
        return book.cash.get(currency, Decimal(0)) - self._reserved_cash(book, currency)

    def _sellable(self, book: _Book, symbol: str) -> int:
        held = book.positions.get(symbol)
        return (held.quantity if held else 0) - self._reserved_quantity(book, symbol)

    def _fill(self, book: _Book, row: OrderRow, qty: int, price: Decimal) -> None:
        hts_id = self._hts_ids.get(row.acc_no)
        if hts_id and self.fill_listener is not None:
            self.fill_listener(row, qty, price, hts_id)
        row.filled += qty
        row.remaining -= qty
        row.fill_amount += qty * price
        if row.remaining <= 0:
            book.resting.pop(row.odno, None)
        amount = qty * price
        held = book.positions.get(row.symbol)
        if row.side == "buy":
            book.cash[row.currency] = book.cash.get(row.currency, Decimal(0)) - amount
            if held is None:
                book.positions[row.symbol] = Position(qty, price, row.market)
            else:
                total = held.quantity + qty
                held.average_price = (held.quantity * held.average_price + amount) / total
                held.quantity = total
        else:
            book.cash[row.currency] = book.cash.get(row.currency, Decimal(0)) + amount
            if held is not None:
                held.quantity -= qty
                if held.quantity <= 0:
                    del book.positions[row.symbol]

    def _new_row(
        self,
        book: _Book,
        inst: _Instrument,
        side: str,
        kind: str,
        order_type: str,
        qty: int,
        price: Decimal | None,
        tr_id: str,
        now: float,
        original: OrderRow | None,
    ) -> OrderRow:
        odno = f"{self._next_odno:010d}"
        self._next_odno += 1
        row = OrderRow(
            odno=odno,
            orgn_odno=original.odno if original else None,
            acc_no=book.acc_no,
            symbol=inst.symbol,
            name=inst.name,
            market=inst.market,
            currency=inst.currency,
            side=side,
            kind=kind,
            order_type=order_type,
            quantity=qty,
            price=price,
            remaining=qty if kind != "cancel" else 0,
            tr_id=tr_id,
            ordered_at=now,
            branch=book.branch,
            cancelled=kind == "cancel",
        )
        self._orders.append(row)
        self._by_odno[_odno_key(odno)] = row
        return row

    def _execute(self, book: _Book, row: OrderRow, inst: _Instrument) -> None:
        """Fill ``row`` at once if it is a market order or marketable, else let it rest."""
        limit = row.price
        marketable = (
            limit is None or (row.side == "buy" and limit >= inst.price) or (row.side == "sell" and limit <= inst.price)
        )
        if marketable:
            self._fill(book, row, row.remaining, inst.price)
        else:
            book.resting[row.odno] = row

    def _check_affordable(
        self,
        settings: _Settings,
        book: _Book,
        inst: _Instrument,
        side: str,
        qty: int,
        limit: Decimal | None,
        released_cash: Decimal = Decimal(0),
        released_qty: int = 0,
    ) -> None:
        if side == "buy":
            cost = qty * (limit if limit is not None else inst.price)
            if cost > self._available_cash(book, inst.currency) + released_cash:
                raise self._reject(settings, "cash")
        elif qty > self._sellable(book, inst.symbol) + released_qty:
            raise self._reject(settings, "holdings")

    def _order_answer(self, row: OrderRow) -> Answer:
        clock = datetime.fromtimestamp(row.ordered_at, tz=KST).strftime("%H%M%S")
        return Answer(
            200,
            {
                "rt_cd": "0",
                "msg_cd": ORDER_OK[0],
                "msg1": ORDER_OK[1],
                "output": {"KRX_FWDG_ORD_ORGNO": row.branch, "ODNO": row.odno, "ORD_TMD": clock},
            },
            placed=1,
        )

    # ------------------------------------------------------------------ orders
    def _kr_order(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        qty = _quantity(f["ORD_QTY"], minimum=1)
        order_type = _order_type(f["ORD_DVSN"])
        price = _price(f["ORD_UNPR"], "ORD_UNPR")
        if order_type == "01" or (order_type != "00" and price == 0):
            limit = None
        elif price <= 0:
            raise _bad("ORD_UNPR must be > 0 for a limit order")
        else:
            limit = price
        if not settings.market_open:
            raise self._reject(settings, "closed")
        inst = self._instrument(settings, f["PDNO"], "KR")
        self._check_affordable(settings, book, inst, op.side, qty, limit)
        row = self._new_row(book, inst, op.side, "new", order_type, qty, limit, _tr(headers), now, None)
        self._execute(book, row, inst)
        return self._order_answer(row)

    def _os_order(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        exchange = self._exchange(f["OVRS_EXCG_CD"], op.region)
        qty = _quantity(f["ORD_QTY"], minimum=1)
        order_type = _order_type(f.get("ORD_DVSN", "00") or "00")
        if settings.environment == "mock" and order_type != "00":
            raise _bad("the mock host takes ORD_DVSN 00 (limit) only")
        price = _price(f["OVRS_ORD_UNPR"], "OVRS_ORD_UNPR")
        if price <= 0 and not (order_type in ("31", "33") and op.side == "sell"):
            raise _bad("OVRS_ORD_UNPR must be > 0")
        limit = price if price > 0 else None
        if not settings.market_open:
            raise self._reject(settings, "closed")
        inst = self._instrument(settings, f["PDNO"], exchange)
        self._check_affordable(settings, book, inst, op.side, qty, limit)
        row = self._new_row(book, inst, op.side, "new", order_type, qty, limit, _tr(headers), now, None)
        self._execute(book, row, inst)
        return self._order_answer(row)

    def _original(self, settings: _Settings, book: _Book, odno: str) -> OrderRow:
        row = self._by_odno.get(_odno_key(odno))
        if row is None or row.acc_no != book.acc_no or row.remaining <= 0:
            raise self._reject(settings, "nothing")
        return row

    def _revise_or_cancel(
        self,
        settings: _Settings,
        now: float,
        tr_id: str,
        book: _Book,
        original: OrderRow,
        cancel: bool,
        qty: int,
        limit: Decimal | None,
        order_type: str,
    ) -> Answer:
        if not 1 <= qty <= original.remaining:
            raise self._reject(settings, "nothing")
        inst = self._instrument(settings, original.symbol, original.market)
        if cancel:
            original.remaining -= qty
            if original.remaining == 0:
                book.resting.pop(original.odno, None)
                original.cancelled = True
            row = self._new_row(
                book, inst, original.side, "cancel", original.order_type, qty, original.price, tr_id, now, original
            )
            return self._order_answer(row)
        released_cash = qty * (original.price or Decimal(0)) if original.side == "buy" else Decimal(0)
        released_qty = qty if original.side == "sell" else 0
        self._check_affordable(settings, book, inst, original.side, qty, limit, released_cash, released_qty)
        original.remaining -= qty
        if original.remaining == 0:
            book.resting.pop(original.odno, None)
        row = self._new_row(book, inst, original.side, "revise", order_type, qty, limit, tr_id, now, original)
        self._execute(book, row, inst)
        return self._order_answer(row)

    def _kr_revise(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        dvsn = f["RVSE_CNCL_DVSN_CD"].strip()
        if dvsn not in ("01", "02"):
            raise _bad("RVSE_CNCL_DVSN_CD must be 01 (revise) or 02 (cancel)")
        all_remaining = f["QTY_ALL_ORD_YN"].strip().upper()
        if all_remaining not in ("Y", "N"):
            raise _bad("QTY_ALL_ORD_YN must be Y or N")
        qty_field = _quantity(f["ORD_QTY"], minimum=0 if all_remaining == "Y" else 1)
        order_type = _order_type(f["ORD_DVSN"])
        price = _price(f["ORD_UNPR"], "ORD_UNPR")
        cancel = dvsn == "02"
        limit: Decimal | None = None
        if not cancel and order_type != "01" and not (order_type != "00" and price == 0):
            if price <= 0:
                raise _bad("ORD_UNPR must be > 0 for a limit revise")
            limit = price
        branch = f["KRX_FWDG_ORD_ORGNO"].strip()
        if not branch:
            raise _bad("KRX_FWDG_ORD_ORGNO is blank")
        if not settings.market_open:
            raise self._reject(settings, "closed")
        original = self._original(settings, book, f["ORGN_ODNO"])
        if original.market != "KR" or branch.lstrip("0") != original.branch.lstrip("0"):
            raise self._reject(settings, "nothing")
        qty = original.remaining if all_remaining == "Y" else qty_field
        if cancel:
            order_type = original.order_type
        return self._revise_or_cancel(settings, now, _tr(headers), book, original, cancel, qty, limit, order_type)

    def _os_revise(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        exchange = self._exchange(f["OVRS_EXCG_CD"], op.region)
        dvsn = f["RVSE_CNCL_DVSN_CD"].strip()
        if dvsn not in ("01", "02"):
            raise _bad("RVSE_CNCL_DVSN_CD must be 01 (revise) or 02 (cancel)")
        qty_field = _quantity(f["ORD_QTY"], minimum=0)
        price = _price(f["OVRS_ORD_UNPR"], "OVRS_ORD_UNPR")
        cancel = dvsn == "02"
        if not cancel and price <= 0:
            raise _bad("OVRS_ORD_UNPR must be > 0 for a revise")
        if not settings.market_open:
            raise self._reject(settings, "closed")
        original = self._original(settings, book, f["ORGN_ODNO"])
        if original.market != exchange or original.symbol != f["PDNO"].strip().upper():
            raise self._reject(settings, "nothing")
        qty = original.remaining if qty_field == 0 else qty_field
        limit = None if cancel else price
        return self._revise_or_cancel(
            settings, now, _tr(headers), book, original, cancel, qty, limit, original.order_type
        )

    @staticmethod
    def _exchange(code: str, region: str) -> str:
        exchange = code.strip().upper()
        if exchange not in EXCHANGES or EXCHANGES[exchange][0] != region:
            raise _bad(f"OVRS_EXCG_CD {code!r} does not belong to this tr_id's market ({region})")
        return exchange

    # ------------------------------------------------------------------ paging
    def _page(
        self,
        settings: _Settings,
        headers: Mapping[str, str],
        f: Mapping[str, str],
        rows: list[dict[str, str]],
        size: int,
        width: int,
        signature: tuple[str, ...],
    ) -> tuple[list[dict[str, str]], dict[str, str], dict[str, str]]:
        """The page ``f``'s continuation keys ask for: (rows, ctx body keys, response headers)."""
        fk_name, nk_name = f"CTX_AREA_FK{width}", f"CTX_AREA_NK{width}"
        fk, nk = f.get(fk_name, "").strip(), f.get(nk_name, "").strip()
        offset = 0
        if headers.get("tr_cont", "").strip().upper() == "N" and (fk or nk):
            entry = self._page_keys.get((fk, nk))
            if entry is None or entry[0] != signature:
                raise _bad(f"{fk_name}/{nk_name} were not issued for this query")
            if settings.paging_restart > 0:
                settings.paging_restart -= 1
                raise _Refusal(_error(200, DATA_CHANGED, rt_cd="7"))
            offset = entry[1]
        page = rows[offset : offset + size]
        more = offset + size < len(rows)
        if more:
            new_fk = f"{signature[1]}^{secrets.token_hex(8)}"
            new_nk = secrets.token_hex(12)
            self._page_keys[(new_fk, new_nk)] = (signature, offset + size)
            while len(self._page_keys) > 20_000:
                self._page_keys.popitem(last=False)
            keys = {fk_name.lower(): new_fk, nk_name.lower(): new_nk}
            tr_cont = "F" if offset == 0 else "M"
        else:
            keys = {fk_name.lower(): "", nk_name.lower(): ""}
            tr_cont = "D"
        return page, keys, {"tr_cont": tr_cont}

    @staticmethod
    def _signature(op: Op, book: _Book, f: Mapping[str, str], width: int) -> tuple[str, ...]:
        skip = {f"CTX_AREA_FK{width}", f"CTX_AREA_NK{width}"}
        return (op.name, book.acc_no, *(f"{k}={v}" for k, v in sorted(f.items()) if k not in skip))

    @staticmethod
    def _size(setting: int | None, real: int, mock: int, settings: _Settings) -> int:
        if setting is not None:
            return setting
        return mock if settings.environment == "mock" else real

    # ------------------------------------------------------------------ queries
    def _position_figures(self, symbol: str, p: Position) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        price = self.current_price(symbol)
        bought = p.quantity * p.average_price
        value = p.quantity * price
        return price, bought, value, value - bought

    def _kr_balance(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        rows: list[dict[str, str]] = []
        totals = [Decimal(0)] * 3
        for symbol in sorted(book.positions):
            p = book.positions[symbol]
            if p.market != "KR":
                continue
            price, bought, value, profit = self._position_figures(symbol, p)
            totals = [totals[0] + bought, totals[1] + value, totals[2] + profit]
            rows.append(
                {
                    "pdno": symbol,
                    "prdt_name": market._kr_names(symbol)[0] if market.is_known_kr(symbol) else symbol,
                    "trad_dvsn_name": "현금",
                    "bfdy_buy_qty": "0",
                    "bfdy_sll_qty": "0",
                    "thdt_buyqty": "0",
                    "thdt_sll_qty": "0",
                    "hldg_qty": str(p.quantity),
                    "ord_psbl_qty": str(max(0, self._sellable(book, symbol))),
                    "pchs_avg_pric": _num(p.average_price, 4),
                    "pchs_amt": _num(bought),
                    "prpr": _num(price),
                    "evlu_amt": _num(value),
                    "evlu_pfls_amt": _num(profit),
                    "evlu_pfls_rt": _rate(profit, bought),
                    "evlu_erng_rt": _rate(profit, bought),
                    "loan_dt": "",
                    "loan_amt": "0",
                    "stln_slng_chgs": "0",
                    "expd_dt": "",
                    "fltt_rt": "0.00",
                    "bfdy_cprs_icdc": "0",
                    "item_mgna_rt_name": "20%",
                    "grta_rt_name": "",
                    "sbst_pric": "0",
                    "stck_loan_unpr": "0",
                }
            )
        size = self._size(settings.balance_page_size, 50, 20, settings)
        page, keys, extra = self._page(settings, headers, f, rows, size, 100, self._signature(op, book, f, 100))
        cash = book.cash["KRW"]
        bought, value, profit = totals
        summary = {
            "dnca_tot_amt": _num(cash),
            "nxdy_excc_amt": _num(cash),
            "prvs_rcdl_excc_amt": _num(cash),
            "cma_evlu_amt": "0",
            "bfdy_buy_amt": "0",
            "thdt_buy_amt": "0",
            "nxdy_auto_rdpt_amt": "0",
            "bfdy_sll_amt": "0",
            "thdt_sll_amt": "0",
            "d2_auto_rdpt_amt": "0",
            "bfdy_tlex_amt": "0",
            "thdt_tlex_amt": "0",
            "tot_loan_amt": "0",
            "scts_evlu_amt": _num(value),
            "tot_evlu_amt": _num(cash + value),
            "nass_amt": _num(cash + value),
            "fncg_gld_auto_rdpt_yn": "",
            "pchs_amt_smtl_amt": _num(bought),
            "evlu_amt_smtl_amt": _num(value),
            "evlu_pfls_smtl_amt": _num(profit),
            "tot_stln_slng_chgs": "0",
            "bfdy_tot_asst_evlu_amt": _num(cash + bought),
            "asst_icdc_amt": _num(profit),
            "asst_icdc_erng_rt": _rate(profit, cash + bought),
        }
        body: dict[str, object] = {"rt_cd": "0", "output1": page, "output2": [summary], **keys}
        return Answer(200, body, extra)

    def _os_balance(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        code = f["OVRS_EXCG_CD"].strip().upper()
        if code not in EXCHANGES:
            raise _bad(f"OVRS_EXCG_CD {code!r} is not an overseas exchange")
        wanted = US_EXCHANGES if code in US_EXCHANGES else (code,)
        currency = EXCHANGES[code][1]
        rows: list[dict[str, str]] = []
        bought_total = value_total = profit_total = Decimal(0)
        for symbol in sorted(book.positions):
            p = book.positions[symbol]
            if p.market not in wanted:
                continue
            price, bought, value, profit = self._position_figures(symbol, p)
            bought_total, value_total, profit_total = bought_total + bought, value_total + value, profit_total + profit
            known = market.OVERSEAS.get(symbol)
            rows.append(
                {
                    "cano": book.acc_no[:8],
                    "acnt_prdt_cd": book.acc_no[9:],
                    "prdt_type_cd": "512",
                    "ovrs_pdno": symbol,
                    "ovrs_item_name": known[1] if known else symbol,
                    "frcr_evlu_pfls_amt": _num(profit, 4),
                    "evlu_pfls_rt": _rate(profit, bought),
                    "pchs_avg_pric": _num(p.average_price, 4),
                    "ovrs_cblc_qty": str(p.quantity),
                    "ord_psbl_qty": str(max(0, self._sellable(book, symbol))),
                    "frcr_pchs_amt1": _num(bought, 4),
                    "ovrs_stck_evlu_amt": _num(value, 4),
                    "now_pric2": _num(price, 4),
                    "tr_crcy_cd": EXCHANGES[p.market][1],
                    "ovrs_excg_cd": p.market,
                    "loan_type_cd": "10",
                    "loan_dt": "",
                    "expd_dt": "",
                }
            )
        size = self._size(settings.balance_page_size, 100, 100, settings)
        page, keys, extra = self._page(settings, headers, f, rows, size, 200, self._signature(op, book, f, 200))
        summary = {
            "frcr_pchs_amt1": _num(bought_total, 4),
            "ovrs_rlzt_pfls_amt": "0.0000",
            "ovrs_tot_pfls": _num(profit_total, 4),
            "rlzt_erng_rt": "0.00",
            "tot_evlu_pfls_amt": _num(profit_total, 4),
            "tot_pftrt": _rate(profit_total, bought_total),
            "frcr_buy_amt_smtl1": _num(bought_total, 4),
            "ovrs_rlzt_pfls_amt2": "0.0000",
            "frcr_buy_amt_smtl2": _num(bought_total, 4),
            "frcr_dncl_amt_2": _num(book.cash.get(currency, Decimal(0)), 4),
            "tr_crcy_cd": currency,
        }
        body: dict[str, object] = {"rt_cd": "0", "output1": page, "output2": summary, **keys}
        return Answer(200, body, extra)

    def _dated(
        self, book: _Book, f: Mapping[str, str], start_name: str, end_name: str, *, local: bool = False
    ) -> list[OrderRow]:
        """The account's rows between two dates: Korean dates, or (``local``) each market's own date."""
        first, last = _ymd(f[start_name], start_name), _ymd(f[end_name], end_name)

        def day(row: OrderRow) -> date:
            hours = _LOCAL_UTC_HOURS.get(row.currency, 9) if local else 9
            return datetime.fromtimestamp(row.ordered_at, tz=timezone(timedelta(hours=hours))).date()

        return [row for row in self._orders if row.acc_no == book.acc_no and first <= day(row) <= last]

    def _kr_orders(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        side = f["SLL_BUY_DVSN_CD"].strip() or "00"
        fill = f["CCLD_DVSN"].strip() or "00"
        symbol = f.get("PDNO", "").strip().upper()
        odno = _odno_key(f.get("ODNO", ""))
        selected = [
            row
            for row in self._dated(book, f, "INQR_STRT_DT", "INQR_END_DT")
            if row.market == "KR"
            and _side_ok(row, side)
            and (not symbol or row.symbol == symbol)
            and (not odno or _odno_key(row.odno) == odno)
            and (fill == "00" or (fill == "01" and row.filled > 0) or (fill == "02" and row.remaining > 0))
        ]
        if f["INQR_DVSN"].strip() != "01":  # 00: newest first (KIS's 역순)
            selected.reverse()
        rows = [_kr_order_row(row) for row in selected]
        size = self._size(settings.orders_page_size, 100, 15, settings)
        page, keys, extra = self._page(settings, headers, f, rows, size, 100, self._signature(op, book, f, 100))
        summary = {
            "tot_ord_qty": str(sum(row.quantity for row in selected)),
            "tot_ccld_qty": str(sum(row.filled for row in selected)),
            "tot_ccld_amt": _num(sum((row.fill_amount for row in selected), Decimal(0))),
            "prsm_tlex_smtl": "0",
            "pchs_avg_pric": "0.0000",
        }
        body: dict[str, object] = {"rt_cd": "0", "output1": page, "output2": summary, **keys}
        return Answer(200, body, extra)

    def _os_orders(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        code = f["OVRS_EXCG_CD"].strip().upper()
        if code in ("", "%"):
            wanted: tuple[str, ...] = tuple(EXCHANGES)
        elif code == "NASD":  # KIS: NASD asks for the whole US market
            wanted = US_EXCHANGES
        elif code in EXCHANGES:
            wanted = (code,)
        else:
            raise _bad(f"OVRS_EXCG_CD {code!r} is not an overseas exchange")
        side = f.get("SLL_BUY_DVSN", "00").strip() or "00"
        fill = f.get("CCLD_NCCS_DVSN", "00").strip() or "00"
        symbol = f.get("PDNO", "").strip().upper()
        odno = _odno_key(f.get("ODNO", ""))
        selected = [
            row
            for row in self._dated(book, f, "ORD_STRT_DT", "ORD_END_DT", local=True)
            if row.market in wanted
            and _side_ok(row, side)
            and (not symbol or row.symbol == symbol)
            and (not odno or _odno_key(row.odno) == odno)
            and (fill == "00" or (fill == "01" and row.filled > 0) or (fill == "02" and row.remaining > 0))
        ]
        if f.get("SORT_SQN", "DS").strip().upper() != "AS":  # DS: newest first
            selected.reverse()
        rows = [_os_order_row(row) for row in selected]
        size = self._size(settings.orders_page_size, 20, 15, settings)
        page, keys, extra = self._page(settings, headers, f, rows, size, 200, self._signature(op, book, f, 200))
        body: dict[str, object] = {"rt_cd": "0", "output": page, **keys}
        return Answer(200, body, extra)

    def _kr_buyable(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        inst = self._instrument(settings, f["PDNO"], "KR")
        text = f["ORD_UNPR"].strip()
        price = inst.price if not text or f["ORD_DVSN"].strip() == "01" else _price(text, "ORD_UNPR")
        if price <= 0:
            price = inst.price
        cash = max(Decimal(0), self._available_cash(book, "KRW"))
        qty = int(cash // price)
        output = {
            "ord_psbl_cash": _num(cash),
            "ord_psbl_sbst": "0",
            "ruse_psbl_amt": "0",
            "fund_rpch_chgs": "0",
            "psbl_qty_calc_unpr": _num(price),
            "nrcvb_buy_amt": _num(cash),
            "nrcvb_buy_qty": str(qty),
            "max_buy_amt": _num(cash),
            "max_buy_qty": str(qty),
            "cma_evlu_amt": "0",
            "ovrs_re_use_amt_wcrc": "0",
            "ord_psbl_frcr_amt_wcrc": "0",
        }
        return Answer(200, {"rt_cd": "0", "output": output})

    def _os_buyable(
        self, op: Op, settings: _Settings, now: float, headers: Mapping[str, str], f: Mapping[str, str], book: _Book
    ) -> Answer:
        code = f["OVRS_EXCG_CD"].strip().upper()
        if code not in EXCHANGES:
            raise _bad(f"OVRS_EXCG_CD {code!r} is not an overseas exchange")
        inst = self._instrument(settings, f["ITEM_CD"], code)
        text = f["OVRS_ORD_UNPR"].strip()
        price = _price(text, "OVRS_ORD_UNPR") if text else inst.price
        if price <= 0:
            price = inst.price
        cash = max(Decimal(0), self._available_cash(book, inst.currency))
        qty = int(cash // price)
        output = {
            "tr_crcy_cd": inst.currency,
            "ord_psbl_frcr_amt": _num(cash, 2),
            "sll_ruse_psbl_amt": "0.00",
            "ovrs_ord_psbl_amt": _num(cash, 2),
            "max_ord_psbl_qty": str(qty),
            "echm_af_ord_psbl_amt": "0.00",
            "echm_af_ord_psbl_qty": "0",
            "ord_psbl_qty": str(qty),
            "exrt": EXCHANGE_RATES.get(inst.currency, "1.00"),
            "frcr_ord_psbl_amt1": _num(cash, 2),
            "ovrs_max_ord_psbl_qty": str(qty),
        }
        return Answer(200, {"rt_cd": "0", "output": output})


# ---------------------------------------------------------------------------------- helpers
def _branch(acc_no: str) -> str:
    """The account's order branch (``KRX_FWDG_ORD_ORGNO``): 5 digits, fixed per account."""
    digest = hashlib.sha256(acc_no.encode()).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 90000 + 10000:05d}"


def _foreign_ok(code: str) -> bool:
    return 1 <= len(code) <= 12 and code.isascii() and code.isalnum() and code.upper() not in market.UNKNOWN_SYMBOLS


def _tr(headers: Mapping[str, str]) -> str:
    return headers.get("tr_id", "")


def _quantity(text: str, *, minimum: int) -> int:
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:
        raise _bad(f"ORD_QTY must be a whole number >= {minimum}, got {text!r}")
    return int(value)


def _order_type(text: str) -> str:
    value = text.strip()
    if len(value) != 2 or not value.isdigit():
        raise _bad(f"ORD_DVSN must be two digits, got {text!r}")
    return value


def _price(text: str, name: str) -> Decimal:
    try:
        value = _decimal(text, name)
    except ValueError:
        raise _bad(f"{name} must be a number, got {text!r}") from None
    if value < 0:
        raise _bad(f"{name} must be >= 0, got {text!r}")
    return value


def _ymd(text: str, name: str) -> date:
    value = text.strip()
    try:
        if len(value) != 8 or not value.isdigit():
            raise ValueError
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise _bad(f"{name} must be YYYYMMDD, got {text!r}") from None


def _side_ok(row: OrderRow, code: str) -> bool:
    return code == "00" or (code == "01" and row.side == "sell") or (code == "02" and row.side == "buy")


def _kr_order_row(row: OrderRow) -> dict[str, str]:
    when = datetime.fromtimestamp(row.ordered_at, tz=KST)
    return {
        "ord_dt": when.strftime("%Y%m%d"),
        "ord_gno_brno": row.branch,
        "odno": row.odno,
        "orgn_odno": row.orgn_odno or "",
        "ord_dvsn_name": "시장가" if row.price is None else "지정가",
        "sll_buy_dvsn_cd": "01" if row.side == "sell" else "02",
        "sll_buy_dvsn_cd_name": "매도" if row.side == "sell" else "매수",
        "pdno": row.symbol,
        "prdt_name": row.name,
        "ord_qty": str(row.quantity),
        "ord_unpr": _num(row.price or Decimal(0)),
        "ord_tmd": when.strftime("%H%M%S"),
        "tot_ccld_qty": str(row.filled),
        "avg_prvs": _num(row.average_fill),
        "cncl_yn": "Y" if row.kind == "cancel" else "N",
        "tot_ccld_amt": _num(row.fill_amount),
        "loan_dt": "",
        "ordr_empno": "",
        "ord_dvsn_cd": row.order_type,
        "cncl_cfrm_qty": str(row.quantity) if row.kind == "cancel" else "0",
        "rmn_qty": str(row.remaining),
        "rjct_qty": "0",
        "ccld_cndt_name": "없음",
        "inqr_ip_addr": "",
        "cpbc_ordp_ord_rcit_dvsn_cd": "",
        "cpbc_ordp_infm_mthd_dvsn_cd": "",
        "infm_tmd": "",
        "ctac_tlno": "",
        "prdt_type_cd": "300",
        "excg_dvsn_cd": "01",
        "cpbc_ordp_mtrl_dvsn_cd": "",
        "ord_orgno": row.branch,
        "rsvn_ord_end_dt": "",
        "excg_id_dvsn_cd": "KRX",
        "stpm_cndt_pric": "0",
        "stpm_efct_occr_dtmd": "",
    }


#: Hours from UTC of each overseas market's local clock, which KIS's overseas order list uses for
#: ``ord_dt``/``ord_tmd`` (the Korean time is in ``dmst_ord_dt``/``thco_ord_tmd``). Standard time
#: only: the fake keeps no daylight-saving calendar.
_LOCAL_UTC_HOURS = {"USD": -5, "JPY": 9, "HKD": 8, "CNY": 8, "VND": 7}


def _os_order_row(row: OrderRow) -> dict[str, str]:
    when = datetime.fromtimestamp(row.ordered_at, tz=KST)
    local = datetime.fromtimestamp(row.ordered_at, tz=timezone(timedelta(hours=_LOCAL_UTC_HOURS.get(row.currency, 9))))
    places = 0 if row.currency in ("JPY", "VND") else 4
    return {
        "ord_dt": local.strftime("%Y%m%d"),
        "ord_gno_brno": row.branch,
        "odno": row.odno,
        "orgn_odno": row.orgn_odno or "",
        "sll_buy_dvsn_cd": "01" if row.side == "sell" else "02",
        "sll_buy_dvsn_cd_name": "매도" if row.side == "sell" else "매수",
        "rvse_cncl_dvsn": {"new": "00", "revise": "01", "cancel": "02"}[row.kind],
        "rvse_cncl_dvsn_name": {"new": "", "revise": "정정", "cancel": "취소"}[row.kind],
        "pdno": row.symbol,
        "prdt_name": row.name,
        "ft_ord_qty": str(row.quantity),
        "ft_ord_unpr3": _num(row.price or Decimal(0), places) if places else _num(row.price or Decimal(0)),
        "ft_ccld_qty": str(row.filled),
        "ft_ccld_unpr3": _num(row.average_fill, places) if places else _num(row.average_fill),
        "ft_ccld_amt3": _num(row.fill_amount, places) if places else _num(row.fill_amount),
        "nccs_qty": str(row.remaining),
        "prcs_stat_name": "완료" if row.remaining == 0 else "접수",
        "rjct_rson": "",
        "rjct_rson_name": "",
        "ord_tmd": local.strftime("%H%M%S"),
        "tr_mket_name": row.market,
        "tr_natn": "840" if row.currency == "USD" else "",
        "tr_natn_name": "미국" if row.currency == "USD" else "",
        "ovrs_excg_cd": row.market,
        "tr_crcy_cd": row.currency,
        "dmst_ord_dt": when.strftime("%Y%m%d"),
        "thco_ord_tmd": when.strftime("%H%M%S"),
        "loan_type_cd": "10",
        "loan_dt": "",
        "mdia_dvsn_name": "OpenAPI",
        "usa_amk_exts_rqst_yn": "N",
    }
