"""The fake KIS server's account (korea_investment_stock.testing), driven with plain requests over loopback.

Not through our client: the fake is what the trading tests trust, so its wire
format, rules, paging and faults are pinned here on their own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests

from korea_investment_stock.testing import FakeKIS, OrderFault

KST = timezone(timedelta(hours=9))
ACC = "12345678-01"
CANO, PRDT = "12345678", "01"
KR = "/uapi/domestic-stock/v1/trading"
OS = "/uapi/overseas-stock/v1/trading"
ORDER, REVISE = f"{KR}/order-cash", f"{KR}/order-rvsecncl"
BALANCE, DAILY, BUYABLE = f"{KR}/inquire-balance", f"{KR}/inquire-daily-ccld", f"{KR}/inquire-psbl-order"
OS_ORDER, OS_REVISE = f"{OS}/order", f"{OS}/order-rvsecncl"
OS_BALANCE, OS_CCNL, OS_BUYABLE = f"{OS}/inquire-balance", f"{OS}/inquire-ccnl", f"{OS}/inquire-psamount"
KR_BARS = "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice"
OS_BARS = "/uapi/overseas-price/v1/quotations/dailyprice"

#: real id -> mock id, per operation.
IDS = {
    "buy": ("TTTC0012U", "VTTC0012U"),
    "sell": ("TTTC0011U", "VTTC0011U"),
    "revise": ("TTTC0013U", "VTTC0013U"),
    "balance": ("TTTC8434R", "VTTC8434R"),
    "orders": ("TTTC0081R", "VTTC0081R"),
    "buyable": ("TTTC8908R", "VTTC8908R"),
    "us_buy": ("TTTT1002U", "VTTT1002U"),
    "us_sell": ("TTTT1006U", "VTTT1001U"),
    "us_revise": ("TTTT1004U", "VTTT1004U"),
    "os_balance": ("TTTS3012R", "VTTS3012R"),
    "os_orders": ("TTTS3035R", "VTTS3035R"),
    "os_buyable": ("TTTS3007R", "VTTS3007R"),
}

Factory = Callable[..., FakeKIS]


class Trader:
    """A bare KIS caller: one token, the real or mock ids, plain requests."""

    def __init__(self, fake: FakeKIS, mock: bool) -> None:
        self.fake = fake
        self.mock = mock
        self.http = requests.Session()
        self.http.trust_env = False
        body = {"grant_type": "client_credentials", "appkey": fake.app_key, "appsecret": fake.app_secret}
        answer = self.http.post(f"{fake.url}/oauth2/tokenP", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        self.token = answer.json()["access_token"]

    def id(self, op: str) -> str:
        return IDS[op][1 if self.mock else 0]

    def headers(self, tr_id: str, **extra: str) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.token}",
            "appkey": self.fake.app_key,
            "appsecret": self.fake.app_secret,
            "tr_id": tr_id,
            "custtype": "P",
            **extra,
        }

    def post(self, path: str, tr_id: str, body: dict[str, Any], **headers: str) -> requests.Response:
        return self.http.post(self.fake.url + path, json=body, headers=self.headers(tr_id, **headers), timeout=10)

    def get(self, path: str, tr_id: str, params: dict[str, str], tr_cont: str = "") -> requests.Response:
        return self.http.get(
            self.fake.url + path, params=params, headers=self.headers(tr_id, tr_cont=tr_cont), timeout=10
        )

    # -- domestic ------------------------------------------------------------------------
    def order(
        self, side: str, symbol: str, qty: int | str, price: str = "0", dvsn: str | None = None
    ) -> requests.Response:
        body = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "PDNO": symbol,
            "ORD_DVSN": dvsn or ("01" if price == "0" else "00"),
            "ORD_QTY": str(qty),
            "ORD_UNPR": price,
        }
        if side == "sell":
            body["SLL_TYPE"] = "01"
        return self.post(ORDER, self.id(side), body)

    def revise(
        self, odno: str, branch: str, *, cancel: bool, qty: int | None, price: str = "0", dvsn: str = "00"
    ) -> requests.Response:
        body = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "KRX_FWDG_ORD_ORGNO": branch,
            "ORGN_ODNO": odno,
            "ORD_DVSN": dvsn,
            "RVSE_CNCL_DVSN_CD": "02" if cancel else "01",
            "ORD_QTY": str(qty or 0),
            "ORD_UNPR": price,
            "QTY_ALL_ORD_YN": "Y" if qty is None else "N",
        }
        return self.post(REVISE, self.id("revise"), body)

    def balance(self, keys: tuple[str, str] = ("", ""), tr_cont: str = "") -> requests.Response:
        params = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "AFHR_FLPR_YN": "N",
            "OFL_YN": "",
            "INQR_DVSN": "02",
            "UNPR_DVSN": "01",
            "FUND_STTL_ICLD_YN": "N",
            "FNCG_AMT_AUTO_RDPT_YN": "N",
            "PRCS_DVSN": "00",
            "CTX_AREA_FK100": keys[0],
            "CTX_AREA_NK100": keys[1],
        }
        return self.get(BALANCE, self.id("balance"), params, tr_cont)

    def daily(self, start: str, end: str, keys: tuple[str, str] = ("", ""), tr_cont: str = "") -> requests.Response:
        params = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "INQR_STRT_DT": start,
            "INQR_END_DT": end,
            "SLL_BUY_DVSN_CD": "00",
            "INQR_DVSN": "00",
            "PDNO": "",
            "CCLD_DVSN": "00",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
            "INQR_DVSN_3": "00",
            "INQR_DVSN_1": "",
            "CTX_AREA_FK100": keys[0],
            "CTX_AREA_NK100": keys[1],
        }
        return self.get(DAILY, self.id("orders"), params, tr_cont)

    def buyable(self, symbol: str, price: str = "") -> requests.Response:
        params = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "PDNO": symbol,
            "ORD_UNPR": price,
            "ORD_DVSN": "01" if not price else "00",
            "CMA_EVLU_AMT_ICLD_YN": "N",
            "OVRS_ICLD_YN": "N",
        }
        return self.get(BUYABLE, self.id("buyable"), params)

    # -- overseas ------------------------------------------------------------------------
    def us_order(self, side: str, symbol: str, qty: int, price: str, exchange: str = "NASD") -> requests.Response:
        body = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "OVRS_EXCG_CD": exchange,
            "PDNO": symbol,
            "ORD_QTY": str(qty),
            "OVRS_ORD_UNPR": price,
            "ORD_SVR_DVSN_CD": "0",
            "SLL_TYPE": "00" if side == "sell" else "",
            "ORD_DVSN": "00",
        }
        return self.post(OS_ORDER, self.id(f"us_{side}"), body)

    def us_revise(self, odno: str, symbol: str, *, cancel: bool, qty: int, price: str = "0") -> requests.Response:
        body = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "OVRS_EXCG_CD": "NASD",
            "PDNO": symbol,
            "ORGN_ODNO": odno,
            "RVSE_CNCL_DVSN_CD": "02" if cancel else "01",
            "ORD_QTY": str(qty),
            "OVRS_ORD_UNPR": price,
            "ORD_SVR_DVSN_CD": "0",
        }
        return self.post(OS_REVISE, self.id("us_revise"), body)

    def os_balance(self, exchange: str, keys: tuple[str, str] = ("", ""), tr_cont: str = "") -> requests.Response:
        params = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "OVRS_EXCG_CD": exchange,
            "TR_CRCY_CD": "USD",
            "CTX_AREA_FK200": keys[0],
            "CTX_AREA_NK200": keys[1],
        }
        return self.get(OS_BALANCE, self.id("os_balance"), params, tr_cont)

    def ccnl(
        self, exchange: str, start: str, end: str, keys: tuple[str, str] = ("", ""), tr_cont: str = ""
    ) -> requests.Response:
        params = {
            "CANO": CANO,
            "ACNT_PRDT_CD": PRDT,
            "PDNO": "",
            "ORD_STRT_DT": start,
            "ORD_END_DT": end,
            "SLL_BUY_DVSN": "00",
            "CCLD_NCCS_DVSN": "00",
            "OVRS_EXCG_CD": exchange,
            "SORT_SQN": "DS",
            "ORD_DT": "",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
            "CTX_AREA_NK200": keys[1],
            "CTX_AREA_FK200": keys[0],
        }
        return self.get(OS_CCNL, self.id("os_orders"), params, tr_cont)

    def today(self) -> str:
        return datetime.fromtimestamp(self.fake.now(), KST).strftime("%Y%m%d")


@pytest.fixture
def make(fake_kis_factory: Factory) -> Callable[..., Trader]:
    def build(*, mock: bool = False, **settings: Any) -> Trader:
        fake = fake_kis_factory(environment="mock" if mock else "real", **settings)
        return Trader(fake, mock)

    return build


@pytest.fixture(params=[False, True], ids=["real", "mock"])
def trader(request: pytest.FixtureRequest, make: Callable[..., Trader]) -> Iterator[Trader]:
    yield make(mock=request.param)


def ok(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["rt_cd"] == "0", body
    return body


def refused(answer: requests.Response, status: int, msg_cd: str, msg1: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["rt_cd"] != "0" and body["msg_cd"] == msg_cd, body
    if msg1 is not None:
        assert body["msg1"] == msg1
    return body


def all_pages(
    fetch: Callable[[tuple[str, str], str], requests.Response], width: int, rows_key: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow the pages as KIS says: tr_cont N and the body's keys; returns (rows, response tr_conts)."""
    rows: list[dict[str, Any]] = []
    markers: list[str] = []
    keys, tr_cont = ("", ""), ""
    for _ in range(100):
        body = ok(answer := fetch(keys, tr_cont))
        rows.extend(body[rows_key])
        markers.append(answer.headers["tr_cont"])
        if answer.headers["tr_cont"] not in ("F", "M"):
            return rows, markers
        keys = (body[f"ctx_area_fk{width}"], body[f"ctx_area_nk{width}"])
        tr_cont = "N"
    raise AssertionError("paging did not end")


# ---------------------------------------------------------------------------------- orders
def test_market_buy_fills_at_once_and_moves_cash_and_position(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_krw=1_000_000)
    price = fake.current_price("005930")
    body = ok(trader.order("buy", "005930", 10))
    assert body["msg_cd"] == "APBK0013" and body["msg1"] == "주문 전송 완료 되었습니다."
    out = body["output"]
    assert len(out["ODNO"]) == 10 and out["ODNO"].isdigit()
    assert len(out["KRX_FWDG_ORD_ORGNO"]) == 5 and out["KRX_FWDG_ORD_ORGNO"].isdigit()
    assert len(out["ORD_TMD"]) == 6 and out["ORD_TMD"].isdigit()
    [row] = fake.orders()
    assert row["odno"] == out["ODNO"] and row["orgn_odno"] is None and row["acc_no"] == ACC
    assert (row["symbol"], row["market"], row["side"], row["kind"]) == ("005930", "KR", "buy", "new")
    assert (row["quantity"], row["filled"], row["remaining"], row["price"]) == (10, 10, 0, None)
    assert row["tr_id"] == trader.id("buy") and row["cancelled"] is False
    book = fake.account(ACC)
    assert book["cash_krw"] == Decimal(1_000_000) - 10 * price
    assert book["positions"]["005930"] == {"quantity": 10, "average_price": price, "market": "KR"}
    second = ok(trader.order("buy", "005930", 1))["output"]["ODNO"]
    assert int(second) == int(out["ODNO"]) + 1  # increasing
    stats = fake.stats
    assert stats.orders_received == stats.orders_placed == 2
    assert stats.orders_received_by_tr_id == {trader.id("buy"): 2}


def test_balance_and_buyable_answer_kis_fields(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_krw=10_000_000, positions={"005930": (5, 50_000), "000660": (2, "100000")})
    fake.set_price("005930", 60_000)
    answer = trader.balance()
    body = ok(answer)
    assert answer.headers["tr_cont"] == "D"
    rows = {row["pdno"]: row for row in body["output1"]}
    assert set(rows) == {"005930", "000660"}
    sam = rows["005930"]
    assert sam["prdt_name"] == "삼성전자" and sam["hldg_qty"] == "5" and sam["ord_psbl_qty"] == "5"
    assert Decimal(sam["pchs_avg_pric"]) == 50_000 and sam["prpr"] == "60000"
    assert sam["pchs_amt"] == "250000" and sam["evlu_amt"] == "300000" and sam["evlu_pfls_amt"] == "50000"
    assert sam["evlu_pfls_rt"] == "20.00"
    [totals] = body["output2"]
    assert totals["dnca_tot_amt"] == "10000000"
    value = 300_000 + 2 * int(fake.current_price("000660"))
    assert totals["evlu_amt_smtl_amt"] == str(value) and totals["tot_evlu_amt"] == str(10_000_000 + value)
    assert totals["pchs_amt_smtl_amt"] == "450000"
    # Buyable: at the current price, net of a resting buy's reservation.
    ok(trader.order("buy", "005930", 10, price="50000"))  # rests: 500_000 reserved
    out = ok(trader.buyable("005930"))["output"]
    assert out["ord_psbl_cash"] == "9500000" and out["psbl_qty_calc_unpr"] == "60000"
    assert out["nrcvb_buy_qty"] == out["max_buy_qty"] == str(9_500_000 // 60_000)
    out = ok(trader.buyable("005930", "47500"))["output"]
    assert out["max_buy_qty"] == str(9_500_000 // 47_500) and out["psbl_qty_calc_unpr"] == "47500"
    refused(trader.buyable("999999"), 200, "APBK0656")


def test_limit_order_rests_then_revise_cancel_and_fill(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_krw=10_000_000)
    fake.set_price("005930", 70_000)
    first = ok(trader.order("buy", "005930", 10, price="60000"))["output"]
    assert fake.orders()[0]["remaining"] == 10 and fake.orders()[0]["filled"] == 0
    assert fake.account(ACC)["cash_krw"] == 10_000_000  # reserved, not spent
    revised = ok(trader.revise(first["ODNO"], first["KRX_FWDG_ORD_ORGNO"], cancel=False, qty=4, price="65000"))[
        "output"
    ]
    assert revised["ODNO"] != first["ODNO"]
    cancel = ok(trader.revise(first["ODNO"], first["KRX_FWDG_ORD_ORGNO"], cancel=True, qty=None))["output"]
    rows = {row["odno"]: row for row in fake.orders()}
    orig, rev, cxl = rows[first["ODNO"]], rows[revised["ODNO"]], rows[cancel["ODNO"]]
    assert orig["remaining"] == 0 and orig["cancelled"] is True
    assert (rev["kind"], rev["orgn_odno"], rev["quantity"], rev["remaining"], rev["price"]) == (
        "revise",
        first["ODNO"],
        4,
        4,
        Decimal(65_000),
    )
    assert (cxl["kind"], cxl["orgn_odno"], cxl["quantity"], cxl["cancelled"]) == ("cancel", first["ODNO"], 6, True)
    # Nothing left on the original: revise and cancel are refused.
    refused(trader.revise(first["ODNO"], first["KRX_FWDG_ORD_ORGNO"], cancel=True, qty=None), 200, "40330000")
    refused(trader.revise(revised["ODNO"], revised["KRX_FWDG_ORD_ORGNO"], cancel=True, qty=5), 200, "40330000")
    # A partial fill at the limit, then the rest.
    row = fake.fill_order(revised["ODNO"], 1)
    assert (row["filled"], row["remaining"]) == (1, 3)
    assert fake.account(ACC)["cash_krw"] == 10_000_000 - 65_000
    fake.fill_order(revised["ODNO"])
    book = fake.account(ACC)
    assert book["cash_krw"] == 10_000_000 - 4 * 65_000 and book["positions"]["005930"]["quantity"] == 4
    with pytest.raises(ValueError, match="not resting"):
        fake.fill_order(revised["ODNO"])
    # The daily orders list: newest first, revise and cancel rows linked to the original.
    body = ok(trader.daily(trader.today(), trader.today()))
    listed = {r["odno"]: r for r in body["output1"]}
    assert [r["odno"] for r in body["output1"]] == [cancel["ODNO"], revised["ODNO"], first["ODNO"]]
    assert listed[first["ODNO"]]["orgn_odno"] == "" and listed[first["ODNO"]]["rmn_qty"] == "0"
    assert listed[first["ODNO"]]["cncl_yn"] == "N" and listed[first["ODNO"]]["sll_buy_dvsn_cd"] == "02"
    assert listed[revised["ODNO"]]["orgn_odno"] == first["ODNO"] and listed[revised["ODNO"]]["cncl_yn"] == "N"
    assert listed[revised["ODNO"]]["tot_ccld_qty"] == "4" and listed[revised["ODNO"]]["avg_prvs"] == "65000"
    assert listed[revised["ODNO"]]["tot_ccld_amt"] == "260000" and listed[revised["ODNO"]]["ord_unpr"] == "65000"
    assert listed[cancel["ODNO"]]["cncl_yn"] == "Y" and listed[cancel["ODNO"]]["orgn_odno"] == first["ODNO"]
    assert listed[first["ODNO"]]["ord_dt"] == trader.today() and len(listed[first["ODNO"]]["ord_tmd"]) == 6
    assert listed[first["ODNO"]]["ord_gno_brno"] == first["KRX_FWDG_ORD_ORGNO"]
    assert body["output2"]["tot_ccld_qty"] == "4"
    assert fake.stats.orders_placed == 3


def test_marketable_limit_fills_at_the_current_price_and_sells_need_holdings(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_krw=1_000_000, positions={"035720": (10, 40_000)})
    fake.set_price("035720", 50_000)
    ok(trader.order("buy", "035720", 2, price="55000"))
    assert fake.orders()[-1]["filled"] == 2 and fake.orders()[-1]["fill_amount"] == 100_000
    held = fake.account(ACC)["positions"]["035720"]
    assert held["quantity"] == 12 and held["average_price"] == Decimal(500_000) / 12
    rest = ok(trader.order("sell", "035720", 8, price="60000"))["output"]  # rests: 8 reserved
    assert fake.orders()[-1]["remaining"] == 8
    bal = ok(trader.balance())["output1"][0]
    assert bal["hldg_qty"] == "12" and bal["ord_psbl_qty"] == "4"
    code, msg = (
        ("40250000", "모의투자 잔고수량이 부족합니다.")
        if trader.mock
        else ("APBK1234", "주문가능수량을 초과하였습니다")
    )
    refused(trader.order("sell", "035720", 5), 200, code, msg)
    ok(trader.order("sell", "035720", 4, price="45000"))  # marketable: fills at 50_000
    assert fake.account(ACC)["cash_krw"] == 1_000_000 - 100_000 + 200_000
    fake.fill_order(rest["ODNO"])
    assert "035720" not in fake.account(ACC)["positions"]


def test_business_rejections_real_and_mock_codes(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_krw=100_000, cash_usd=100)
    mock = trader.mock
    cash = ("40240000", "모의투자 주문가능금액이 부족합니다.") if mock else ("APBK0919", "주문가능금액을 초과 했습니다")
    refused(trader.order("buy", "005930", 1000), 200, *cash)
    refused(trader.us_order("buy", "AAPL", 1000, "100"), 200, *cash)
    refused(trader.order("buy", "999999", 1), 200, "APBK0656", "해당종목정보가 없습니다.")
    refused(trader.us_order("buy", "ZZZZZ", 1, "10"), 200, "APBK0656")
    refused(trader.us_order("buy", "AAPL", 1, "10", exchange="NYSE"), 200, "APBK0656")  # AAPL is on NASDAQ
    holdings = (
        ("40250000", "모의투자 잔고수량이 부족합니다.") if mock else ("APBK1234", "주문가능수량을 초과하였습니다")
    )
    refused(trader.us_order("sell", "AAPL", 1, "10"), 200, *holdings)
    refused(
        trader.revise("0000099999", "00000", cancel=True, qty=None),
        200,
        "40330000",
        "정정취소가능수량을 초과하였습니다.",
    )
    fake.configure(market_open=False)
    closed = ("40580000", "모의투자 장종료 입니다.") if mock else ("APBK0918", "장운영시간이 아닙니다.")
    refused(trader.order("buy", "005930", 1), 200, *closed)
    refused(trader.us_order("buy", "AAPL", 1, "1000"), 200, *closed)
    fake.configure(market_open=True, bind_account="87654321-01", rejection_status=500)
    refused(trader.order("buy", "005930", 1), 500, "IGW00002", "계좌번호가 일치하지 않습니다.")
    refused(trader.balance(), 500, "IGW00002")
    fake.configure(bind_account=ACC)
    refused(trader.order("buy", "005930", 1000), 500, cash[0])
    assert fake.orders() == [] and fake.stats.orders_placed == 0


def test_wire_checks(make: Callable[..., Trader]) -> None:
    trader = make()
    body = {"CANO": CANO, "ACNT_PRDT_CD": PRDT, "PDNO": "005930", "ORD_DVSN": "01", "ORD_QTY": 1, "ORD_UNPR": "0"}
    refused(trader.post(ORDER, "TTTC0012U", body), 500, "OPSQ2002")
    del body["ORD_QTY"]
    refused(trader.post(ORDER, "TTTC0012U", body), 500, "OPSQ2001")
    for field, value in (("ORD_QTY", "0"), ("ORD_QTY", "1.5"), ("ORD_UNPR", "abc"), ("CANO", "1234")):
        good = {"CANO": CANO, "ACNT_PRDT_CD": PRDT, "PDNO": "005930", "ORD_DVSN": "00", "ORD_QTY": "1"}
        good["ORD_UNPR"] = "50000"
        refused(trader.post(ORDER, "TTTC0012U", {**good, field: value}), 500, "OPSQ2002")
    refused(trader.order("buy", "005930", 1, price="0", dvsn="00"), 500, "OPSQ2002")  # a limit order needs a price
    refused(trader.us_order("buy", "AAPL", 1, "0"), 500, "OPSQ2002")  # no price-0 order overseas
    refused(trader.post(OS_ORDER, "TTTS0308U", {**body, "OVRS_EXCG_CD": "NASD"}), 500, "OPSQ2001")
    assert trader.fake.orders() == []
    assert trader.fake.stats.orders_received == 9


def test_hosts_accept_only_their_own_ids(make: Callable[..., Trader]) -> None:
    real, mock = make(), make(mock=True)
    refused(mock.post(ORDER, "TTTC0012U", {}), 500, "EGW00213", "모의투자 TR 이 아닙니다.")
    refused(mock.get(BALANCE, "TTTC8434R", {}), 500, "EGW00213", "모의투자 TR 이 아닙니다.")
    refused(real.post(ORDER, "VTTC0012U", {}), 500, "EGW00213", "실전투자 TR 이 아닙니다.")
    refused(real.get(OS_CCNL, "VTTS3035R", {}), 500, "EGW00213", "실전투자 TR 이 아닙니다.")
    refused(mock.post(OS_ORDER, "VTTT1006U", {}), 500, "OPSQ0002")  # mock's US sell is VTTT1001U
    refused(real.post(OS_ORDER, "TTTC0012U", {}), 500, "OPSQ0002")  # a KR id on the overseas path
    assert mock.fake.orders() == [] and mock.fake.stats.orders_received == 0
    answer = mock.http.get(mock.fake.url + ORDER, headers=mock.headers("VTTC0012U"), timeout=10)
    assert answer.status_code == 405


def test_us_orders_balance_ccnl_buyable(trader: Trader) -> None:
    fake = trader.fake
    fake.open_account(ACC, cash_usd=10_000)
    fake.set_price("AAPL", "150.25")
    assert fake.current_price("AAPL") == Decimal("150.25")
    ok(trader.us_order("buy", "AAPL", 10, "151.00"))  # marketable: fills at 150.25
    ok(trader.us_order("buy", "KO", 5, "1.00", exchange="NYSE"))  # rests
    assert fake.account(ACC)["cash_usd"] == Decimal(10_000) - Decimal("1502.50")
    rows, markers = all_pages(lambda keys, cont: trader.os_balance("NYSE", keys, cont), 200, "output1")
    assert markers == ["D"]
    [aapl] = rows  # NYSE answers every US holding, as KIS does
    assert (aapl["ovrs_pdno"], aapl["ovrs_cblc_qty"], aapl["ord_psbl_qty"]) == ("AAPL", "10", "10")
    assert aapl["ovrs_excg_cd"] == "NASD" and aapl["tr_crcy_cd"] == "USD" and aapl["now_pric2"] == "150.2500"
    assert Decimal(aapl["pchs_avg_pric"]) == Decimal("150.25") and aapl["ovrs_item_name"] == "APPLE INC"
    summary = ok(trader.os_balance("NASD"))["output2"]
    assert Decimal(summary["frcr_dncl_amt_2"]) == Decimal("8497.50")
    assert Decimal(summary["frcr_buy_amt_smtl1"]) == Decimal("1502.50")
    assert ok(trader.os_balance("TKSE"))["output1"] == []
    # inquire-ccnl: NASD means the whole US market; NYSE only NYSE.
    today = trader.today()
    all_us = ok(trader.ccnl("NASD", today, today))["output"]
    assert [r["pdno"] for r in all_us] == ["KO", "AAPL"]
    [ko_row] = ok(trader.ccnl("NYSE", today, today))["output"]
    assert (ko_row["ft_ord_qty"], ko_row["nccs_qty"], ko_row["ft_ccld_qty"], ko_row["rvse_cncl_dvsn"]) == (
        "5",
        "5",
        "0",
        "00",
    )
    assert (
        ko_row["sll_buy_dvsn_cd"] == "02" and Decimal(ko_row["ft_ord_unpr3"]) == 1 and ko_row["ovrs_excg_cd"] == "NYSE"
    )
    # Buyable: cash net of the resting KO buy (5 x 1.00).
    out = ok(
        trader.get(
            OS_BUYABLE,
            trader.id("os_buyable"),
            {"CANO": CANO, "ACNT_PRDT_CD": PRDT, "OVRS_EXCG_CD": "NASD", "OVRS_ORD_UNPR": "", "ITEM_CD": "AAPL"},
        )
    )["output"]
    assert out["tr_crcy_cd"] == "USD" and Decimal(out["ord_psbl_frcr_amt"]) == Decimal("8492.50")
    assert out["max_ord_psbl_qty"] == out["ovrs_max_ord_psbl_qty"] == str(int(Decimal("8492.50") // Decimal("150.25")))
    assert Decimal(out["ovrs_ord_psbl_amt"]) == Decimal("8492.50") and out["exrt"]
    # Revise/cancel: ORD_QTY "0" is all that remains.
    aapl_sell = ok(trader.us_order("sell", "AAPL", 4, "999"))["output"]["ODNO"]
    revised = ok(trader.us_revise(aapl_sell, "AAPL", cancel=False, qty=0, price="150"))["output"]["ODNO"]
    rows_by_no = {r["odno"]: r for r in fake.orders()}
    assert rows_by_no[revised]["filled"] == 4 and rows_by_no[aapl_sell]["remaining"] == 0  # 150 <= 150.25: filled
    ko_odno = next(r["odno"] for r in fake.orders() if r["symbol"] == "KO")
    refused(trader.us_revise(ko_odno, "KO", cancel=True, qty=0), 200, "40330000")  # KO is NYSE, asked on NASD
    kinds = {r["odno"]: r["rvse_cncl_dvsn"] for r in ok(trader.ccnl("%", today, today))["output"]}
    assert kinds[revised] == "01" and kinds[aapl_sell] == "00"
    assert fake.account(ACC)["positions"]["AAPL"]["quantity"] == 6


def test_other_exchanges_take_their_own_ids(make: Callable[..., Trader]) -> None:
    trader = make(mock=True)
    body = {
        "CANO": CANO,
        "ACNT_PRDT_CD": PRDT,
        "OVRS_EXCG_CD": "TKSE",
        "PDNO": "7203",
        "ORD_QTY": "100",
        "OVRS_ORD_UNPR": "100000",
        "ORD_SVR_DVSN_CD": "0",
        "SLL_TYPE": "",
        "ORD_DVSN": "00",
    }
    ok(trader.post(OS_ORDER, "VTTS0308U", body))
    assert trader.fake.account(ACC)["positions"]["7203"]["market"] == "TKSE"
    refused(trader.post(OS_ORDER, "VTTS1002U", body), 500, "OPSQ2002")  # a Hong Kong id with TKSE
    sell = {**body, "SLL_TYPE": "00", "OVRS_EXCG_CD": "SEHK", "PDNO": "00700"}
    refused(trader.post(OS_ORDER, "VTTS1001U", sell), 200, "40250000")


def test_dates_bound_the_order_lists(make: Callable[..., Trader]) -> None:
    trader = make(token_lifetime=7 * 86_400.0)
    fake = trader.fake
    ok(trader.order("buy", "005930", 1))
    ok(trader.us_order("buy", "AAPL", 1, "9999"))
    yesterday = trader.today()
    fake.advance(86_400)
    ok(trader.order("buy", "005930", 2))
    today = trader.today()
    assert [r["ord_qty"] for r in ok(trader.daily(today, today))["output1"]] == ["2"]
    assert [r["ord_qty"] for r in ok(trader.daily(yesterday, today))["output1"]] == ["2", "1"]
    assert ok(trader.ccnl("NASD", today, today))["output"] == []
    assert len(ok(trader.ccnl("NASD", yesterday, yesterday))["output"]) == 1
    archive = trader.daily(yesterday, today)
    assert len(ok(trader.get(DAILY, "CTSC9215R", _query(archive)))["output1"]) == 2  # the archive id reads the same


def _query(answer: requests.Response) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(answer.request.url or "").query, keep_blank_values=True))


# ---------------------------------------------------------------------------------- paging
def test_balance_pages_every_row_once(make: Callable[..., Trader]) -> None:
    trader = make(balance_page_size=3)
    codes = [f"{n:06d}" for n in range(100, 111)]
    trader.fake.open_account(ACC, positions={code: (1, 1000) for code in codes})
    rows, markers = all_pages(trader.balance, 100, "output1")
    assert [r["pdno"] for r in rows] == codes
    assert markers == ["F", "M", "M", "D"]
    assert trader.fake.stats.rest_by_tr_id["TTTC8434R"] == 4


def test_default_page_sizes_follow_the_host(make: Callable[..., Trader]) -> None:
    for mock, size in ((False, 50), (True, 20)):
        trader = make(mock=mock)
        trader.fake.open_account(ACC, positions={f"{n:06d}": (1, 1000) for n in range(100, 100 + size + 1)})
        first = trader.balance()
        assert len(ok(first)["output1"]) == size and first.headers["tr_cont"] == "F"


def test_orders_pages_and_overseas_pages(make: Callable[..., Trader]) -> None:
    trader = make(orders_page_size=4, balance_page_size=2)
    for _ in range(9):
        ok(trader.order("buy", "005930", 1))
    today = trader.today()
    rows, markers = all_pages(lambda keys, cont: trader.daily(today, today, keys, cont), 100, "output1")
    assert len({r["odno"] for r in rows}) == len(rows) == 9 and markers == ["F", "M", "D"]
    for symbol in ("AAPL", "MSFT", "NVDA", "KO", "SPY"):
        ok(trader.us_order("buy", symbol, 1, "5000", exchange=_us_exchange(symbol)))
    rows, markers = all_pages(lambda keys, cont: trader.ccnl("NASD", today, today, keys, cont), 200, "output")
    assert len({r["odno"] for r in rows}) == 5 and markers == ["F", "D"]
    rows, markers = all_pages(lambda keys, cont: trader.os_balance("AMEX", keys, cont), 200, "output1")
    assert sorted(r["ovrs_pdno"] for r in rows) == ["AAPL", "KO", "MSFT", "NVDA", "SPY"]
    assert markers == ["F", "M", "D"]


def _us_exchange(symbol: str) -> str:
    from korea_investment_stock.testing import market

    return {"NAS": "NASD", "NYS": "NYSE", "AMS": "AMEX"}[market.OVERSEAS[symbol][0]]


def test_tampered_keys_forgotten_n_and_restart(make: Callable[..., Trader]) -> None:
    trader = make(balance_page_size=2)
    fake = trader.fake
    fake.open_account(ACC, positions={f"{n:06d}": (1, 1000) for n in range(100, 105)})
    first = ok(trader.balance())
    keys = (first["ctx_area_fk100"], first["ctx_area_nk100"])
    assert keys[0] and keys[1]
    refused(trader.balance((keys[0], keys[1] + "x"), "N"), 500, "OPSQ2002")
    refused(trader.balance(("forged", "key"), "N"), 500, "OPSQ2002")
    # Keys without tr_cont N: the first page again (a client that forgets N loops).
    again = trader.balance(keys, "")
    assert [r["pdno"] for r in ok(again)["output1"]] == ["000100", "000101"] and again.headers["tr_cont"] == "F"
    # Keys of another query are refused too.
    other = ok(trader.daily(trader.today(), trader.today()))
    assert other["ctx_area_fk100"] == ""
    fake.set_paging_restart(2)
    for _ in range(2):
        changed = trader.balance(keys, "N")
        assert changed.status_code == 200
        assert changed.json() == {
            "rt_cd": "7",
            "msg_cd": "SYDB0050",
            "msg1": "조회이후에 자료가 변경되었습니다.(다시 조회하세요)",
        }
    assert [r["pdno"] for r in ok(trader.balance(keys, "N"))["output1"]] == ["000102", "000103"]
    fake.configure(paging_restart=1)
    ok(trader.balance())  # first pages are never refused
    refused(trader.balance(keys, "N"), 200, "SYDB0050")


# ---------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", ["drop_after", "reset_after", "http500_empty", "slow_after", "drop_before"])
def test_order_faults(make: Callable[..., Trader], kind: str) -> None:
    trader = make()
    fake = trader.fake
    fake.set_order_fault(kind, delay=0.3 if kind == "slow_after" else None)
    started = time.monotonic()
    if kind in ("drop_after", "reset_after", "drop_before"):
        with pytest.raises(requests.ConnectionError) as caught:
            trader.order("buy", "005930", 1)
        if kind == "reset_after":
            assert "reset" in str(caught.value).lower() or "104" in str(caught.value)
    elif kind == "http500_empty":
        answer = trader.order("buy", "005930", 1)
        assert answer.status_code == 500 and answer.content == b""
    else:
        ok(trader.order("buy", "005930", 1))
        assert time.monotonic() - started >= 0.3
    live = fake.orders()
    assert len(live) == (0 if kind == "drop_before" else 1)
    stats = fake.stats
    assert stats.order_faults == {kind: 1} and stats.orders_received == 1
    assert stats.orders_placed == len(live)
    ok(trader.order("buy", "005930", 1))  # times=1: the next order is answered normally
    assert len(fake.orders()) == len(live) + 1


def test_a_late_order_is_dropped_first_and_placed_after_its_delay(make: Callable[..., Trader]) -> None:
    trader = make()
    fake = trader.fake
    fake.set_order_fault("late", delay=0.3)
    with pytest.raises(requests.ConnectionError):
        trader.order("buy", "005930", 1)
    assert fake.orders() == []  # nothing yet: the answer is gone and the order not placed
    stats = fake.wait_for_stats(lambda s: s.orders_placed == 1, timeout=10)
    assert stats.order_faults == {"late": 1} and stats.orders_received == 1
    assert [row["quantity"] for row in fake.orders()] == [1]


def test_faults_hit_revise_and_overseas_and_queries_never(make: Callable[..., Trader]) -> None:
    trader = make()
    fake = trader.fake
    fake.set_price("005930", 70_000)
    first = ok(trader.order("buy", "005930", 3, price="60000"))["output"]
    fake.set_order_fault(OrderFault.HTTP500_EMPTY, times=None)
    ok(trader.balance())
    assert trader.revise(first["ODNO"], first["KRX_FWDG_ORD_ORGNO"], cancel=True, qty=None).status_code == 500
    assert trader.us_order("buy", "AAPL", 1, "9999").status_code == 500
    fake.clear_order_faults()
    assert [r["kind"] for r in fake.orders()] == ["new", "cancel", "new"]
    assert fake.stats.order_faults == {"http500_empty": 2}


def test_probabilistic_faults_are_seeded(make: Callable[..., Trader]) -> None:
    def run() -> list[bool]:
        trader = make()
        trader.fake.set_order_fault("http500_empty", times=None, probability=0.5, seed=7)
        hits = [trader.order("buy", "005930", 1).status_code == 500 for _ in range(20)]
        assert trader.fake.stats.order_faults.get("http500_empty", 0) == sum(hits)
        assert len(trader.fake.orders()) == 20
        return hits

    first = run()
    assert 0 < sum(first) < 20 and run() == first
    trader = make()
    trader.fake.set_order_fault("drop_before", times=2, probability=1.0)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            trader.order("buy", "005930", 1)
    ok(trader.order("buy", "005930", 1))


def test_fault_arguments_are_checked(make: Callable[..., Trader]) -> None:
    fake = make().fake
    for kwargs in ({"times": 0}, {"delay": -1}, {"probability": 0}, {"probability": 1.5}):
        with pytest.raises(ValueError):
            fake.set_order_fault("drop_after", **kwargs)
    with pytest.raises(ValueError):
        fake.set_order_fault("explode")
    for name, value in (
        ("account_cash_krw", -1),
        ("market_open", "yes"),
        ("bind_account", "1234"),
        ("rejection_status", 99),
        ("balance_page_size", 0),
        ("orders_page_size", True),
        ("paging_restart", -1),
    ):
        with pytest.raises(ValueError):
            fake.configure(**{name: value})


def test_hashkey_good_and_bad(make: Callable[..., Trader]) -> None:
    trader = make()
    body = {"CANO": CANO, "ACNT_PRDT_CD": PRDT, "PDNO": "005930", "ORD_DVSN": "01", "ORD_QTY": "1", "ORD_UNPR": "0"}
    raw = json.dumps(body).encode()
    answer = trader.http.post(
        trader.fake.url + "/uapi/hashkey",
        data=raw,
        headers={
            "content-type": "application/json",
            "appkey": trader.fake.app_key,
            "appsecret": trader.fake.app_secret,
        },
        timeout=10,
    )
    good = answer.json()["HASH"]
    assert good == hashlib.sha256(raw).hexdigest()
    headers = {**trader.headers("TTTC0012U"), "content-type": "application/json"}
    url = trader.fake.url + ORDER
    ok(trader.http.post(url, data=raw, headers={**headers, "hashkey": good}, timeout=10))
    refused(trader.http.post(url, data=raw, headers={**headers, "hashkey": "0" * 64}, timeout=10), 500, "EGW00131")
    ok(trader.http.post(url, data=raw, headers=headers, timeout=10))  # no hashkey: not checked
    assert trader.fake.stats.hashkeys_checked == 2 and len(trader.fake.orders()) == 2


# ---------------------------------------------------------------------------------- prices
def test_set_price_moves_the_quotes_too(make: Callable[..., Trader]) -> None:
    trader = make()
    fake = trader.fake
    fake.set_price("005930", 71_000)
    quote = ok(
        trader.get(
            "/uapi/domestic-stock/v1/quotations/inquire-price",
            "FHKST01010100",
            {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        )
    )
    assert quote["output"]["stck_prpr"] == "71000" and fake.current_price("005930") == 71_000
    fake.set_price("AAPL", "201.5")
    detail = "/uapi/overseas-price/v1/quotations/price-detail"
    out = ok(trader.get(detail, "HHDFS76200200", {"AUTH": "", "EXCD": "NAS", "SYMB": "AAPL"}))["output"]
    assert out["last"] == "201.5000"
    blank = ok(trader.get(detail, "HHDFS76200200", {"AUTH": "", "EXCD": "NYS", "SYMB": "AAPL"}))["output"]
    assert not any(blank.values())  # the wrong exchange stays blank
    for symbol in ("999999", "ZZZZZ"):
        with pytest.raises(ValueError):
            fake.set_price(symbol, 1)
    assert fake.stats.rest_by_tr_id == {"FHKST01010100": 1, "HHDFS76200200": 2}


def test_kr_bars(make: Callable[..., Trader]) -> None:
    trader = make()
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_DATE_1": "20240101",
        "FID_INPUT_DATE_2": "20240131",
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "0",
    }
    body = ok(trader.get(KR_BARS, "FHKST03010100", params))
    rows = body["output2"]
    days = [r["stck_bsop_date"] for r in rows]
    assert days == sorted(days, reverse=True) and len(days) == 23  # Mon-Fri of January 2024
    assert days[0] == "20240131" and days[-1] == "20240101"
    for r in rows:
        o, h, lo, c = (int(r[k]) for k in ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_clpr"))
        assert h >= max(o, c) >= min(o, c) >= lo > 0 and int(r["acml_vol"]) > 0 and r["acml_tr_pbmn"]
        assert datetime.strptime(r["stck_bsop_date"], "%Y%m%d").weekday() < 5
    assert body["output1"]["stck_shrn_iscd"] == "005930" and body["output1"]["hts_kor_isnm"] == "삼성전자"
    assert ok(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_ORG_ADJ_PRC": "1"}))["output2"] == rows
    # Deterministic by (symbol, date): a sub-range gives the same bars.
    part = ok(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_DATE_1": "20240115"}))["output2"]
    assert part == rows[: len(part)]
    long = ok(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_DATE_1": "20200101"}))["output2"]
    assert len(long) == 100 and long[0]["stck_bsop_date"] == "20240131"
    weeks = ok(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_PERIOD_DIV_CODE": "W"}))["output2"]
    assert [w["stck_bsop_date"] for w in weeks] == ["20240131", "20240126", "20240119", "20240112", "20240105"]
    assert weeks[1]["stck_clpr"] == rows[days.index("20240126")]["stck_clpr"]
    assert weeks[1]["stck_oprc"] == rows[days.index("20240122")]["stck_oprc"]
    months = ok(
        trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_DATE_1": "20230101", "FID_PERIOD_DIV_CODE": "M"})
    )["output2"]
    assert len(months) == 13 and months[1]["stck_bsop_date"] == "20231229"
    years = ok(
        trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_DATE_1": "20200101", "FID_PERIOD_DIV_CODE": "Y"})
    )["output2"]
    assert [y["stck_bsop_date"] for y in years] == ["20240131", "20231229", "20221230", "20211231", "20201231"]
    assert ok(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_ISCD": "999999"}))["output2"] == []
    refused(trader.get(KR_BARS, "FHKST03010100", {**params, "FID_INPUT_DATE_1": "2024-01-01"}), 500, "OPSQ2002")


def test_overseas_bars(make: Callable[..., Trader]) -> None:
    trader = make(mock=True)
    params = {"AUTH": "", "EXCD": "NAS", "SYMB": "AAPL", "GUBN": "0", "BYMD": "20240131", "MODP": "1"}
    rows = ok(trader.get(OS_BARS, "HHDFS76240000", params))["output2"]
    assert len(rows) == 100 and rows[0]["xymd"] == "20240131"
    days = [r["xymd"] for r in rows]
    assert days == sorted(days, reverse=True)
    for r in rows:
        o, h, lo, c = (Decimal(r[k]) for k in ("open", "high", "low", "clos"))
        assert h >= max(o, c) >= min(o, c) >= lo > 0 and int(r["tvol"]) > 0 and r["tamt"]
    months = ok(trader.get(OS_BARS, "HHDFS76240000", {**params, "GUBN": "2"}))["output2"]
    assert months[0]["xymd"] == "20240131" and months[1]["xymd"] == "20231229"
    assert ok(trader.get(OS_BARS, "HHDFS76240000", {**params, "EXCD": "NYS"}))["output2"] == []


# ---------------------------------------------------------------------------------- control API
def test_control_api_round_trips(make: Callable[..., Trader]) -> None:
    trader = make()
    fake = trader.fake
    http = trader.http

    def control(**body: Any) -> dict[str, Any]:
        answer = http.post(f"{fake.url}/__fake__/control", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    control(
        action="open_account",
        acc_no=ACC,
        cash_krw="5000000",
        cash_usd="100",
        positions={"005930": [3, "50000"], "000660": [1, "1"]},
    )
    assert fake.account(ACC)["cash_krw"] == 5_000_000
    assert fake.account(ACC)["positions"]["005930"]["average_price"] == 50_000
    control(action="set_price", symbol="005930", price="80000")
    assert fake.current_price("005930") == 80_000
    first = ok(trader.order("buy", "005930", 2, price="70000"))["output"]["ODNO"]
    row = control(action="fill_order", odno=first, quantity=1)["order"]
    assert row["filled"] == 1 and row["price"] == "70000"
    control(action="set_order_fault", kind="drop_before", times=1, probability=1.0, seed=3)
    with pytest.raises(requests.ConnectionError):
        trader.order("buy", "005930", 1)
    control(action="set_order_fault", kind="drop_before", times=None)
    control(action="clear_order_faults")
    ok(trader.order("buy", "005930", 1))
    control(action="set", field="balance_page_size", value=1)
    control(action="set_paging_restart", times=1)
    page = ok(trader.balance())
    refused(trader.balance((page["ctx_area_fk100"], page["ctx_area_nk100"]), "N"), 200, "SYDB0050")
    listed = http.get(f"{fake.url}/__fake__/orders", timeout=10).json()["orders"]
    assert [o["odno"] for o in listed] == [o["odno"] for o in fake.orders()]
    assert listed[0]["price"] == "70000" and listed[1]["price"] is None and listed[0]["acc_no"] == ACC
    bad = http.post(f"{fake.url}/__fake__/control", json={"action": "set_price", "symbol": "ZZZZZ", "price": "1"})
    assert bad.status_code == 400
    stats = http.get(f"{fake.url}/__fake__/stats", timeout=10).json()
    assert stats["orders_placed"] == 2 and stats["order_faults"] == {"drop_before": 1}


def test_accounts_open_on_first_use_with_the_settings(make: Callable[..., Trader]) -> None:
    trader = make(account_cash_krw=1234, account_cash_usd=5.5)
    book = trader.fake.account("99999999-22")
    assert book["cash_krw"] == 1234 and book["cash_usd"] == Decimal("5.5") and book["positions"] == {}
    refused(trader.order("buy", "005930", 1), 200, "APBK0919")
    with pytest.raises(ValueError):
        trader.fake.open_account("1234-1")
    with pytest.raises(ValueError):
        trader.fake.open_account(ACC, positions={"7203": (1, 100)})  # which exchange?
    trader.fake.open_account(ACC, positions={"7203": (1, 100, "TKSE")})
