"""KIS's exchange, currency and product codes, exactly as 0.6.1 published them.

Values are KIS facts (the codes its REST endpoints take), so they never change
with this library's design; 0.6.1 code imports them from the package, from
``korea_investment_stock.korea_investment_stock`` or from here.  The Korean
keys are data, kept verbatim.
"""

from __future__ import annotations

from typing import Literal

#: Exchange codes of the overseas quotation endpoints (``EXCD``).
EXCHANGE_CODE: dict[str, str] = {
    "홍콩": "HKS",
    "뉴욕": "NYS",
    "나스닥": "NAS",
    "아멕스": "AMS",
    "도쿄": "TSE",
    "상해": "SHS",
    "심천": "SZS",
    "상해지수": "SHI",
    "심천지수": "SZI",
    "호치민": "HSX",
    "하노이": "HNX",
}

#: Exchange codes of the overseas order and balance endpoints (``OVRS_EXCG_CD``).
EXCHANGE_CODE2: dict[str, str] = {
    "미국전체": "NASD",
    "나스닥": "NAS",
    "뉴욕": "NYSE",
    "아멕스": "AMEX",
    "홍콩": "SEHK",
    "상해": "SHAA",
    "심천": "SZAA",
    "도쿄": "TKSE",
    "하노이": "HASE",
    "호치민": "VNSE",
}

EXCHANGE_CODE3: dict[str, str] = {
    "나스닥": "NASD",
    "뉴욕": "NYSE",
    "아멕스": "AMEX",
    "홍콩": "SEHK",
    "상해": "SHAA",
    "심천": "SZAA",
    "도쿄": "TKSE",
    "하노이": "HASE",
    "호치민": "VNSE",
}

EXCHANGE_CODE4: dict[str, str] = {
    "나스닥": "NAS",
    "뉴욕": "NYS",
    "아멕스": "AMS",
    "홍콩": "HKS",
    "상해": "SHS",
    "심천": "SZS",
    "도쿄": "TSE",
    "하노이": "HNX",
    "호치민": "HSX",
    "상해지수": "SHI",
    "심천지수": "SZI",
}

CURRENCY_CODE: dict[str, str] = {
    "나스닥": "USD",
    "뉴욕": "USD",
    "아멕스": "USD",
    "홍콩": "HKD",
    "상해": "CNY",
    "심천": "CNY",
    "도쿄": "JPY",
    "하노이": "VND",
    "호치민": "VND",
}

#: ``PRDT_TYPE_CD`` values per market, tried in order by the product info endpoint.
MARKET_TYPE_MAP: dict[str, list[str]] = {
    "KR": ["300"],
    "KRX": ["300"],
    "NASDAQ": ["512"],
    "NYSE": ["513"],
    "AMEX": ["529"],
    "US": ["512", "513", "529"],
    "TYO": ["515"],
    "JP": ["515"],
    "HKEX": ["501"],
    "HK": ["501", "543", "558"],
    "HNX": ["507"],
    "HSX": ["508"],
    "VN": ["507", "508"],
    "SSE": ["551"],
    "SZSE": ["552"],
    "CN": ["551", "552"],
}

MARKET_TYPE = Literal["KRX", "NASDAQ", "NYSE", "AMEX", "TYO", "HKEX", "HNX", "HSX", "SSE", "SZSE"]

EXCHANGE_TYPE = Literal["NAS", "NYS", "AMS"]

#: ``PRDT_TYPE_CD`` -> market.
MARKET_CODE_MAP: dict[str, MARKET_TYPE] = {
    "300": "KRX",
    "301": "KRX",
    "302": "KRX",
    "512": "NASDAQ",
    "513": "NYSE",
    "529": "AMEX",
    "515": "TYO",
    "501": "HKEX",
    "543": "HKEX",
    "558": "HKEX",
    "507": "HNX",
    "508": "HSX",
    "551": "SSE",
    "552": "SZSE",
}

#: US market -> the overseas quotation ``EXCD``.
EXCHANGE_CODE_MAP: dict[str, EXCHANGE_TYPE] = {
    "NASDAQ": "NAS",
    "NYSE": "NYS",
    "AMEX": "AMS",
}

#: ``rt_cd`` / ``msg_cd`` values 0.6.1 code compares answers with.
API_RETURN_CODE: dict[str, str] = {
    "SUCCESS": "0",
    "EXPIRED_TOKEN": "1",
    "NO_DATA": "7",
    "RATE_LIMIT_EXCEEDED": "EGW00201",
}

__all__ = [
    "API_RETURN_CODE",
    "CURRENCY_CODE",
    "EXCHANGE_CODE",
    "EXCHANGE_CODE2",
    "EXCHANGE_CODE3",
    "EXCHANGE_CODE4",
    "EXCHANGE_CODE_MAP",
    "EXCHANGE_TYPE",
    "MARKET_CODE_MAP",
    "MARKET_TYPE",
    "MARKET_TYPE_MAP",
]
