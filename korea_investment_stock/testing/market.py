"""Deterministic, plausible quotation data for the fake KIS server.

Why deterministic: a test that asks for ``005930`` twice must see the same
numbers, across processes and runs, so assertions can be written against them.
Every value is derived from a SHA-256 of the symbol; nothing here is real
market data. Like KIS, every number is rendered as a string.

Which symbols are "known":

* Domestic (``PRDT_TYPE_CD=300`` / ``FID_INPUT_ISCD``): any 6-character
  alphanumeric code gets generated data. A few real codes carry their real
  names (``KR_NAMES``); codes in ``KR_ETFS`` are ETFs (``prdt_clsf_name`` "ETF"),
  everything else is a stock ("주권"). Other codes get an ``output`` whose
  fields are all empty strings with ``rt_cd`` "0" (the fake's choice).
  ``999999`` is never known (``UNKNOWN_SYMBOLS``): tests use it for "unknown symbol".
* Overseas: only the ``(exchange, symbol)`` pairs in ``OVERSEAS`` are known. An
  unknown pair (including a real symbol on the wrong exchange) gets
  ``rt_cd`` "0" with every field an empty string, as KIS does.
* IPO schedule (``HHKDB669108C0``): the twelve offerings in ``IPO_OFFERINGS``,
  dated relative to the server's KST date, so that "upcoming", "open" and
  "closed" offerings exist whatever day the tests run. Real accounts only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = [
    "ENDPOINTS",
    "IPO_FIELDS",
    "IPO_OFFERINGS",
    "IPO_PATH",
    "KR_ETFS",
    "KR_NAMES",
    "OVERSEAS",
    "OVERSEAS_TYPE_TO_EXCD",
    "UNKNOWN_SYMBOLS",
    "Endpoint",
    "IPOOffering",
    "domestic_price",
    "etf_price",
    "ipo_schedule",
    "is_known_kr",
    "kr_price",
    "overseas_price_detail",
    "search_info",
    "search_stock_info",
    "us_exchange",
    "with_price",
]

Output = dict[str, str]

KR_NAMES: Mapping[str, tuple[str, str]] = {
    "005930": ("삼성전자", "Samsung Electronics"),
    "000660": ("SK하이닉스", "SK hynix"),
    "035420": ("NAVER", "NAVER"),
    "035720": ("카카오", "Kakao"),
    "005380": ("현대차", "Hyundai Motor"),
    "017670": ("SK텔레콤", "SK Telecom"),
    "051910": ("LG화학", "LG Chem"),
    "373220": ("LG에너지솔루션", "LG Energy Solution"),
    "207940": ("삼성바이오로직스", "Samsung Biologics"),
    "068270": ("셀트리온", "Celltrion"),
    "247540": ("에코프로비엠", "EcoPro BM"),
    "086520": ("에코프로", "EcoPro"),
    "069500": ("KODEX 200", "KODEX 200"),
    "360750": ("TIGER 미국S&P500", "TIGER US S&P500"),
    "102110": ("TIGER 200", "TIGER 200"),
    "229200": ("KODEX 코스닥150", "KODEX KOSDAQ150"),
    "133690": ("TIGER 미국나스닥100", "TIGER US NASDAQ100"),
    "122630": ("KODEX 레버리지", "KODEX LEVERAGE"),
    "114800": ("KODEX 인버스", "KODEX INVERSE"),
    "252670": ("KODEX 200선물인버스2X", "KODEX 200 FUTURES INVERSE 2X"),
    "379800": ("KODEX 미국S&P500TR", "KODEX US S&P500TR"),
}

KR_ETFS: frozenset[str] = frozenset(
    {"069500", "360750", "102110", "229200", "133690", "122630", "114800", "252670", "379800", "294400"}
)

_KOSDAQ: frozenset[str] = frozenset({"247540", "086520"})

# symbol -> (KIS exchange code, English name, is_etf)
OVERSEAS: Mapping[str, tuple[str, str, bool]] = {
    "AAPL": ("NAS", "APPLE INC", False),
    "MSFT": ("NAS", "MICROSOFT CORP", False),
    "NVDA": ("NAS", "NVIDIA CORP", False),
    "AMZN": ("NAS", "AMAZON.COM INC", False),
    "GOOGL": ("NAS", "ALPHABET INC CLASS A", False),
    "GOOG": ("NAS", "ALPHABET INC CLASS C", False),
    "META": ("NAS", "META PLATFORMS INC", False),
    "TSLA": ("NAS", "TESLA INC", False),
    "AVGO": ("NAS", "BROADCOM INC", False),
    "NFLX": ("NAS", "NETFLIX INC", False),
    "AMD": ("NAS", "ADVANCED MICRO DEVICES", False),
    "INTC": ("NAS", "INTEL CORP", False),
    "COST": ("NAS", "COSTCO WHOLESALE CORP", False),
    "QQQ": ("NAS", "INVESCO QQQ TRUST", True),
    "TQQQ": ("NAS", "PROSHARES ULTRAPRO QQQ", True),
    "QQQM": ("NAS", "INVESCO NASDAQ 100 ETF", True),
    "KO": ("NYS", "COCA-COLA CO", False),
    "JPM": ("NYS", "JPMORGAN CHASE & CO", False),
    "V": ("NYS", "VISA INC", False),
    "WMT": ("NYS", "WALMART INC", False),
    "DIS": ("NYS", "WALT DISNEY CO", False),
    "IBM": ("NYS", "INTERNATIONAL BUSINESS MACHINES", False),
    "XOM": ("NYS", "EXXON MOBIL CORP", False),
    "ORCL": ("NYS", "ORACLE CORP", False),
    "SPY": ("AMS", "SPDR S&P 500 ETF TRUST", True),
    "VOO": ("AMS", "VANGUARD S&P 500 ETF", True),
    "IVV": ("AMS", "ISHARES CORE S&P 500 ETF", True),
    "GLD": ("AMS", "SPDR GOLD SHARES", True),
    "DIA": ("AMS", "SPDR DOW JONES INDUSTRIAL AVERAGE ETF", True),
    "IWM": ("AMS", "ISHARES RUSSELL 2000 ETF", True),
    "SCHD": ("AMS", "SCHWAB US DIVIDEND EQUITY ETF", True),
    "SOXL": ("AMS", "DIREXION DAILY SEMICONDUCTOR BULL 3X", True),
}

# search-info PRDT_TYPE_CD -> KIS exchange code
OVERSEAS_TYPE_TO_EXCD: Mapping[str, str] = {"512": "NAS", "513": "NYS", "529": "AMS"}


def _rng(*parts: str) -> random.Random:
    """A generator seeded from the symbol, so values never change between runs."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _tick(price: int) -> int:
    """KRX tick size (2023 schedule), so generated prices are orderable ones."""
    for bound, tick in ((2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500)):
        if price < bound:
            return tick
    return 1_000


def _floor_tick(price: float) -> int:
    p = int(price)
    return p - p % _tick(p)


def _ceil_tick(price: float) -> int:
    p = _floor_tick(price)
    return p if p >= price else p + _tick(p)


#: Symbols that are never known, on any market: ``999999`` (KR) and ``ZZZZZ`` (overseas).
#: Tests use them for KIS's "unknown symbol" answers.
UNKNOWN_SYMBOLS: frozenset[str] = frozenset({"999999", "ZZZZZ"})


def _is_kr_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isalnum() and code.upper() not in UNKNOWN_SYMBOLS


def is_known_kr(code: str) -> bool:
    """A domestic code the fake knows: 6 ASCII letters or digits, except ``999999``."""
    return _is_kr_code(code)


def kr_price(code: str) -> int:
    """The generated current price of a known domestic code (``stck_prpr``)."""
    return _kr_quote(code).price


def us_exchange(symbol: str) -> str | None:
    """The KIS quotation exchange code (``NAS``/``NYS``/``AMS``) of a known US symbol, else ``None``."""
    known = OVERSEAS.get(symbol.upper())
    return None if known is None else known[0]


def with_price(path: str, data: dict[str, object], price: str) -> dict[str, object]:
    """``data`` of a quotation answer with the current price replaced (``FakeKIS.set_price``).

    Domestic prices: ``stck_prpr`` and the change against the base price; overseas
    price-detail: ``last`` and its change.  Blank (unknown-symbol) outputs are left alone.
    """
    output = data.get("output")
    if not isinstance(output, dict):
        return data
    out = dict(output)
    if path in ("/uapi/domestic-stock/v1/quotations/inquire-price", "/uapi/etfetn/v1/quotations/inquire-price"):
        if not out.get("stck_prpr"):
            return data
        base = int(out.get("stck_sdpr") or out.get("stck_prdy_clpr") or price)
        value = int(float(price))
        diff = value - base
        out.update(stck_prpr=str(value), prdy_vrss=str(diff), prdy_vrss_sign=_sign(diff), prdy_ctrt=_pct(diff, base))
    elif path == "/uapi/overseas-price/v1/quotations/price-detail":
        if not out.get("last"):
            return data
        base_f = float(str(out["base"]))
        last = float(price)
        out.update(last=f"{last:.4f}", t_xrat=_pct(last - base_f, base_f), t_xsgn=_sign(last - base_f))
    else:
        return data
    return {**data, "output": out}


def _isin(code: str) -> str:
    """Korean ISIN ``KR7<code>00<check>`` with a real Luhn check digit."""
    body = "KR7" + code.upper() + "00"
    digits = "".join(str(int(ch, 36)) for ch in body)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return body + str((10 - total % 10) % 10)


def _blank(template: Output) -> Output:
    """The fields of a known symbol's answer, all empty: KIS's answer for an unknown one."""
    return dict.fromkeys(template, "")


def _sign(diff: float) -> str:
    # KIS prdy_vrss_sign: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down
    return "2" if diff > 0 else "5" if diff < 0 else "3"


def _kr_names(code: str) -> tuple[str, str]:
    return KR_NAMES.get(code, (f"가상종목{code}", f"FAKE STOCK {code}"))


@dataclass(frozen=True)
class _KRQuote:
    base: int
    price: int
    open: int
    high: int
    low: int
    volume: int
    listed_shares: int


def _kr_quote(code: str) -> _KRQuote:
    rng = _rng("kr", code)
    base = _floor_tick(10 ** rng.uniform(3.0, 5.6))
    price = _floor_tick(base * (1 + rng.uniform(-0.05, 0.05)))
    if rng.random() < 0.1:
        price = base
    opn = _floor_tick(base * (1 + rng.uniform(-0.02, 0.02)))
    high = max(price, opn, base) + _tick(base) * rng.randint(0, 5)
    low = max(1, min(price, opn, base) - _tick(base) * rng.randint(0, 5))
    return _KRQuote(
        base=base,
        price=price,
        open=opn,
        high=high,
        low=low,
        volume=rng.randint(10_000, 30_000_000),
        listed_shares=rng.randint(5_000_000, 6_000_000_000),
    )


def _day_range(q: _KRQuote) -> Output:
    """Open, high, low, the KRX daily limits (base price +/-30%, on ticks) and the base price."""
    return {
        "stck_oprc": str(q.open),
        "stck_hgpr": str(q.high),
        "stck_lwpr": str(q.low),
        "stck_mxpr": str(_floor_tick(q.base * 1.3)),
        "stck_llam": str(_ceil_tick(q.base * 0.7)),
        "stck_sdpr": str(q.base),
    }


def _pct(part: float, whole: float) -> str:
    return f"{(part / whole * 100) if whole else 0.0:.2f}"


def domestic_price(code: str) -> Output:
    """``FHKST01010100`` output: a domestic stock's current price."""
    if not _is_kr_code(code):
        return _blank(domestic_price("005930"))
    q = _kr_quote(code)
    rng = _rng("kr-fund", code)
    eps = rng.randint(-500, 12_000)
    bps = rng.randint(1_000, 150_000)
    diff = q.price - q.base
    avls = q.price * q.listed_shares // 100_000_000  # 억원
    return {
        "iscd_stat_cls_code": "55",
        "marg_rate": "20.00",
        "rprs_mrkt_kor_name": "KOSDAQ" if code in _KOSDAQ else "KOSPI200",
        "bstp_kor_isnm": "기타금융" if code in KR_ETFS else "전기.전자",
        "temp_stop_yn": "N",
        "crdt_able_yn": "Y",
        "stck_prpr": str(q.price),
        "prdy_vrss": str(diff),
        "prdy_vrss_sign": _sign(diff),
        "prdy_ctrt": _pct(diff, q.base),
        "acml_tr_pbmn": str(q.volume * q.price),
        "acml_vol": str(q.volume),
        **_day_range(q),
        "wghn_avrg_stck_prc": f"{(q.high + q.low + q.price) / 3:.2f}",
        "hts_frgn_ehrt": f"{rng.uniform(0, 60):.2f}",
        "aspr_unit": str(_tick(q.price)),
        "hts_deal_qty_unit_val": "1",
        "lstn_stcn": str(q.listed_shares),
        "hts_avls": str(avls),
        "per": f"{q.price / eps:.2f}" if eps > 0 else "0.00",
        "pbr": f"{q.price / bps:.2f}",
        "eps": f"{eps:.2f}",
        "bps": f"{bps:.2f}",
        "stac_month": "12",
        "w52_hgpr": str(_floor_tick(q.high * 1.4)),
        "w52_lwpr": str(_ceil_tick(q.low * 0.6)),
        "stck_shrn_iscd": code,
        "vi_cls_code": "N",
        "invt_caful_yn": "N",
        "mrkt_warn_cls_code": "00",
        "short_over_yn": "N",
        "sltr_yn": "N",
    }


def etf_price(code: str) -> Output:
    """``FHPST02400000`` output: an ETF/ETN's price and NAV."""
    if not _is_kr_code(code):
        return _blank(etf_price("069500"))
    q = _kr_quote(code)
    rng = _rng("kr-etf", code)
    diff = q.price - q.base
    nav = q.price * (1 + rng.uniform(-0.003, 0.003))
    nav_base = q.base * (1 + rng.uniform(-0.003, 0.003))
    nav_diff = nav - nav_base
    shares = rng.randint(1_000_000, 200_000_000)
    return {
        "stck_prpr": str(q.price),
        "prdy_vrss": str(diff),
        "prdy_vrss_sign": _sign(diff),
        "prdy_ctrt": _pct(diff, q.base),
        "acml_vol": str(q.volume),
        "acml_tr_pbmn": str(q.volume * q.price),
        "stck_prdy_clpr": str(q.base),
        **_day_range(q),
        "nav": f"{nav:.2f}",
        "nav_prdy_vrss": f"{nav_diff:.2f}",
        "nav_prdy_vrss_sign": _sign(round(nav_diff, 2)),
        "nav_prdy_ctrt": _pct(nav_diff, nav_base),
        "trc_errt": f"{rng.uniform(0, 1.5):.2f}",
        "etf_crcl_stcn": str(shares),
        "etf_ntas_ttam": str(int(nav * shares) // 100_000_000),
        "etf_dvdn_cycl": "4",
        "bstp_kor_isnm": "기타금융",
        "etf_cu_unit_scrt_cnt": "50000",
        "lstn_stcn": str(shares),
    }


def overseas_price_detail(excd: str, symb: str) -> Output:
    """``HHDFS76200200`` output; blank fields for an unknown (exchange, symbol) pair."""
    known = OVERSEAS.get(symb.upper())
    if known is None or known[0] != excd.upper():
        return _blank(overseas_price_detail("NAS", "AAPL"))
    exchange, _name, is_etf = known
    symbol = symb.upper()
    rng = _rng("us", exchange, symbol)
    base = round(10 ** rng.uniform(1.3, 3.0), 4)
    last = round(base * (1 + rng.uniform(-0.04, 0.04)), 4)
    opn = round(base * (1 + rng.uniform(-0.01, 0.01)), 4)
    high = round(max(base, last, opn) * (1 + rng.uniform(0, 0.01)), 4)
    low = round(min(base, last, opn) * (1 - rng.uniform(0, 0.01)), 4)
    tvol = rng.randint(100_000, 90_000_000)
    shares = rng.randint(50_000_000, 16_000_000_000)
    eps = round(rng.uniform(0.5, 20.0), 2)
    bps = round(rng.uniform(5.0, 80.0), 2)
    rate = round(rng.uniform(1300.0, 1450.0), 4)
    diff = round(last - base, 4)
    return {
        "rsym": f"D{exchange}{symbol}",
        "zdiv": "4",
        "curr": "USD",
        "vnit": "1",
        "open": f"{opn:.4f}",
        "high": f"{high:.4f}",
        "low": f"{low:.4f}",
        "last": f"{last:.4f}",
        "base": f"{base:.4f}",
        "pvol": str(rng.randint(100_000, 90_000_000)),
        "tvol": str(tvol),
        "tamt": str(int(tvol * last)),
        "pamt": str(int(tvol * base)),
        "uplp": "0.0000",
        "dnlp": "0.0000",
        "h52p": f"{high * 1.3:.4f}",
        "h52d": "20250115",
        "l52p": f"{low * 0.7:.4f}",
        "l52d": "20240805",
        "perx": "0.00" if is_etf else f"{last / eps:.2f}",
        "pbrx": "0.00" if is_etf else f"{last / bps:.2f}",
        "epsx": "0.00" if is_etf else f"{eps:.2f}",
        "bpsx": "0.00" if is_etf else f"{bps:.2f}",
        "shar": str(shares),
        "mcap": str(int(shares * base)),
        "tomv": str(int(shares * last)),
        "t_xprc": str(int(last * rate)),
        "t_xdif": str(int(diff * rate)),
        "t_xrat": _pct(diff, base),
        "t_xsgn": _sign(diff),
        "p_xprc": str(int(base * rate)),
        "p_xdif": "0",
        "p_xrat": "0.00",
        "t_rate": f"{rate:.4f}",
        "p_rate": f"{rate:.4f}",
        "e_ordyn": "매매 가능",
        "e_hogau": "0.0100",
        "e_icod": "ETF" if is_etf else "Technology",
        "e_parp": "0.0000",
        "etyp_nm": "ETF" if is_etf else "",
    }


def search_info(pdno: str, prdt_type_cd: str) -> Output:
    """``CTPF1604R`` output; ``prdt_clsf_name`` is "ETF" for known ETFs, else "주권"."""
    if prdt_type_cd == "300" and _is_kr_code(pdno):
        name, eng = _kr_names(pdno)
        is_etf = pdno in KR_ETFS
        std = _isin(pdno)
    elif prdt_type_cd in OVERSEAS_TYPE_TO_EXCD:
        known = OVERSEAS.get(pdno.upper())
        if known is None or known[0] != OVERSEAS_TYPE_TO_EXCD[prdt_type_cd]:
            return _blank(search_info("005930", "300"))
        name = eng = known[1]
        is_etf = known[2]
        std = "US" + hashlib.sha256(pdno.upper().encode()).hexdigest()[:10].upper()
    else:
        return _blank(search_info("005930", "300"))
    return {
        "pdno": pdno,
        "prdt_type_cd": prdt_type_cd,
        "prdt_name": name,
        "prdt_name120": name,
        "prdt_abrv_name": name,
        "prdt_eng_name": eng,
        "prdt_eng_name120": eng,
        "prdt_eng_abrv_name": eng,
        "std_pdno": std,
        "shtn_pdno": pdno,
        "prdt_sale_stat_cd": "",
        "prdt_risk_grad_cd": "",
        "prdt_clsf_cd": "101810" if is_etf else "101210",
        "prdt_clsf_name": "ETF" if is_etf else "주권",
        "sale_strt_dt": "",
        "sale_end_dt": "",
        "wrap_asst_type_cd": "",
        "ivst_prdt_type_cd": "1" if is_etf else "2",
        "ivst_prdt_type_cd_name": "ETF" if is_etf else "주식",
        "frst_erlm_dt": "20020101",
    }


def search_stock_info(pdno: str, prdt_type_cd: str) -> Output:
    """``CTPF1002R`` output: listing facts of a domestic stock or ETF."""
    if prdt_type_cd != "300" or not _is_kr_code(pdno):
        return _blank(search_stock_info("005930", "300"))
    name, eng = _kr_names(pdno)
    is_etf = pdno in KR_ETFS
    kosdaq = pdno in _KOSDAQ
    q = _kr_quote(pdno)
    rng = _rng("kr-info", pdno)
    papr = 0 if is_etf else rng.choice((100, 500, 1000, 5000))
    listed = f"{rng.randint(1985, 2022)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return {
        "pdno": pdno,
        "prdt_type_cd": prdt_type_cd,
        "mket_id_cd": "KSQ" if kosdaq else "STK",
        "scty_grp_id_cd": "EF" if is_etf else "ST",
        "excg_dvsn_cd": "03" if kosdaq else "02",
        "setl_mmdd": "1231",
        "lstg_stqt": str(q.listed_shares),
        "lstg_cptl_amt": str(q.listed_shares * papr),
        "cpta": str(q.listed_shares * papr),
        "papr": str(papr),
        "issu_pric": str(papr),
        "kospi200_item_yn": "N" if (is_etf or kosdaq) else "Y",
        "scts_mket_lstg_dt": "" if kosdaq else listed,
        "kosdaq_mket_lstg_dt": listed if kosdaq else "",
        "frbd_mket_lstg_dt": "",  # the free board (프리보드): none of these is listed there
        "etf_dvsn_cd": "1" if is_etf else "",
        "stck_kind_cd": "" if is_etf else "101",
        "prdt_name": name,
        "prdt_name120": name,
        "prdt_abrv_name": name,
        "std_pdno": _isin(pdno),
        "prdt_eng_name": eng,
        "prdt_eng_name120": eng,
        "prdt_eng_abrv_name": eng,
        "tr_stop_yn": "N",
        "admn_item_yn": "N",
        "thdt_clpr": str(q.price),
        "bfdy_clpr": str(q.base),
        "clpr_chng_dt": "20250101",
        "std_idst_clsf_cd": "" if is_etf else "032602",
        "std_idst_clsf_cd_name": "" if is_etf else "반도체 제조업",
        "idx_bztp_lcls_cd_name": "" if is_etf else "시가총액규모대",
    }


IPO_PATH = "/uapi/domestic-stock/v1/ksdinfo/pub-offer"

#: The 13 fields of each ``output1`` record, in KIS's order.
IPO_FIELDS: tuple[str, ...] = (
    "record_date",
    "sht_cd",
    "isin_name",
    "fix_subscr_pri",
    "face_value",
    "subscr_dt",
    "pay_dt",
    "refund_dt",
    "list_dt",
    "lead_mgr",
    "pub_bf_cap",
    "pub_af_cap",
    "assign_stk_qty",
)


@dataclass(frozen=True)
class IPOOffering:
    """A fictional offering; ``start``/``days`` are relative to the server's KST date."""

    sht_cd: str
    name: str
    start: int  # first subscription day, in days from "today"
    days: int  # length of the subscription period (2 at KRX, 3 for some)
    price: int
    face_value: int
    lead_mgr: str
    cap_before: int
    new_shares: int
    assigned: int


# Offsets chosen so that the default query (today .. today+30) has both edges
# exercised: -2..-1 ended yesterday and 31..32 starts the day after, so both are
# left out, while -1..1 (ends tomorrow), 0..1 (starts today) and 30..31 are in.
IPO_OFFERINGS: tuple[IPOOffering, ...] = (
    IPOOffering("900110", "가람바이오텍", -45, 2, 12_000, 500, "한국투자증권", 2_400_000_000, 1_200_000, 312_000),
    IPOOffering("900120", "나래로보틱스", -20, 2, 21_000, 100, "미래에셋증권", 850_000_000, 2_000_000, 410_000),
    IPOOffering("900130", "다온에너지", -8, 2, 9_500, 500, "NH투자증권", 3_100_000_000, 1_500_000, 275_000),
    IPOOffering("900140", "라온반도체", -2, 2, 31_000, 100, "KB증권", 1_020_000_000, 900_000, 188_000),
    IPOOffering("900150", "마루헬스케어", -1, 3, 17_500, 500, "삼성증권", 2_750_000_000, 1_100_000, 96_000),
    IPOOffering("900160", "바름모빌리티", 0, 2, 14_000, 100, "한국투자증권", 640_000_000, 1_800_000, 540_000),
    IPOOffering("900170", "새봄푸드", 1, 2, 8_000, 500, "신한투자증권", 1_900_000_000, 2_500_000, 120_000),
    IPOOffering("900180", "아람소프트", 7, 2, 26_000, 100, "한국투자증권", 730_000_000, 1_300_000, 390_000),
    IPOOffering("900190", "자람배터리", 15, 2, 45_000, 500, "미래에셋증권", 5_600_000_000, 3_000_000, 210_000),
    IPOOffering("900200", "차오름게임즈", 30, 2, 19_000, 100, "NH투자증권", 910_000_000, 1_600_000, 250_000),
    IPOOffering("900210", "코어스페이스", 31, 2, 23_500, 500, "한국투자증권", 4_200_000_000, 1_400_000, 440_000),
    IPOOffering("900220", "하늘스팩7호", 60, 2, 2_000, 100, "KB증권", 50_000_000, 5_000_000, 1_000_000),
)


def _dotted(day: date) -> str:
    return day.strftime("%Y.%m.%d")


def _query_date(query: Mapping[str, str], name: str) -> date:
    text = query[name]
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name}={text!r} is not YYYYMMDD")
    return datetime.strptime(text, "%Y%m%d").date()  # ValueError for 20241301 too


def _ipo_record(offering: IPOOffering, today: date) -> Output:
    start = today + timedelta(days=offering.start)
    end = start + timedelta(days=offering.days - 1)
    cap_after = offering.cap_before + offering.new_shares * offering.face_value
    return {
        "record_date": (start - timedelta(days=14)).strftime("%Y%m%d"),
        "sht_cd": offering.sht_cd,
        "isin_name": offering.name,
        "fix_subscr_pri": str(offering.price),
        "face_value": str(offering.face_value),
        "subscr_dt": f"{_dotted(start)}~{_dotted(end)}",
        "pay_dt": _dotted(end + timedelta(days=2)),
        "refund_dt": _dotted(end + timedelta(days=2)),
        "list_dt": _dotted(end + timedelta(days=8)),
        "lead_mgr": offering.lead_mgr,
        "pub_bf_cap": str(offering.cap_before),
        "pub_af_cap": str(cap_after),
        "assign_stk_qty": str(offering.assigned),
    }


def ipo_schedule(query: Mapping[str, str], today: date) -> dict[str, object]:
    """``HHKDB669108C0`` data: offerings whose subscription period overlaps ``F_DT``..``T_DT``.

    ``SHT_CD`` (when not empty) keeps that symbol only. Nothing matching is
    ``output1: []`` with ``rt_cd`` "0"; records come in subscription order (the
    fake's choice). A date that is not ``YYYYMMDD`` raises ``ValueError``, which
    the rules turn into an error answer.
    """
    first, last = _query_date(query, "F_DT"), _query_date(query, "T_DT")
    symbol = query.get("SHT_CD", "").strip()
    records: list[Output] = []
    for offering in IPO_OFFERINGS:
        start = today + timedelta(days=offering.start)
        end = start + timedelta(days=offering.days - 1)
        if start <= last and end >= first and (not symbol or symbol == offering.sht_cd):
            records.append(_ipo_record(offering, today))
    return {"output1": records}


@dataclass(frozen=True)
class Endpoint:
    """One quotation endpoint: its ``tr_id``, required query fields and data builder.

    ``build`` makes the ``output`` object of most endpoints. Endpoints whose
    data is a list or depends on the server's date give ``answer`` instead: it
    gets the query and the server's KST date and returns the data keys of the
    answer (e.g. ``{"output1": [...]}``). ``real_only`` endpoints are refused
    when the fake plays the mock environment, as KIS has no mock version of them.
    """

    tr_id: str
    required: tuple[str, ...]
    build: Callable[[Mapping[str, str]], Output] | None = None
    real_only: bool = False
    answer: Callable[[Mapping[str, str], date], dict[str, object]] | None = None

    def __post_init__(self) -> None:
        if (self.build is None) == (self.answer is None):
            raise ValueError("an Endpoint needs exactly one of build and answer")

    def data(self, query: Mapping[str, str], today: date) -> dict[str, object]:
        """The data keys of a success answer for ``query`` on ``today``."""
        if self.answer is not None:
            return self.answer(query, today)
        if self.build is not None:
            return {"output": self.build(query)}
        raise ValueError("an Endpoint needs exactly one of build and answer")  # __post_init__ prevents it


ENDPOINTS: Mapping[str, Endpoint] = {
    "/uapi/domestic-stock/v1/quotations/inquire-price": Endpoint(
        "FHKST01010100",
        ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD"),
        lambda q: domestic_price(q["FID_INPUT_ISCD"]),
    ),
    "/uapi/etfetn/v1/quotations/inquire-price": Endpoint(
        "FHPST02400000",
        ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD"),
        lambda q: etf_price(q["FID_INPUT_ISCD"]),
    ),
    "/uapi/overseas-price/v1/quotations/price-detail": Endpoint(
        "HHDFS76200200",
        ("EXCD", "SYMB"),
        lambda q: overseas_price_detail(q["EXCD"], q["SYMB"]),
        real_only=True,  # KIS: not on the mock host
    ),
    "/uapi/domestic-stock/v1/quotations/search-info": Endpoint(
        "CTPF1604R",
        ("PDNO", "PRDT_TYPE_CD"),
        lambda q: search_info(q["PDNO"], q["PRDT_TYPE_CD"]),
    ),
    "/uapi/domestic-stock/v1/quotations/search-stock-info": Endpoint(
        "CTPF1002R",
        ("PDNO", "PRDT_TYPE_CD"),
        lambda q: search_stock_info(q["PDNO"], q["PRDT_TYPE_CD"]),
    ),
    IPO_PATH: Endpoint(
        "HHKDB669108C0",
        ("SHT_CD", "CTS", "F_DT", "T_DT"),
        real_only=True,
        answer=ipo_schedule,
    ),
}
