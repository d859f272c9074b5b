"""KIS's refusals of order and account requests, turned into the error a program can act on.

KIS's codes are not all documented and one code (``APBK0918``) covers several
causes, so the code decides where it is known and KIS's own words decide
otherwise (kept verbatim, as KIS sends them).  Every error carries
``msg_cd``/``msg1``, and its message says what to do when KIS's text does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    AccountMismatchError,
    InsufficientCashError,
    InsufficientQuantityError,
    MarketClosedError,
    NothingToReviseError,
    OrderRejectedError,
    UnknownSymbolError,
    WrongEnvironmentError,
)

#: Codes whose meaning is settled (see the facts sheet, "Account, key and rejection codes").
_BY_CODE: Mapping[str, type[OrderRejectedError]] = {
    "APBK0919": InsufficientCashError,
    "APBK1234": InsufficientQuantityError,
    "IGW00002": AccountMismatchError,
    "EGW00213": WrongEnvironmentError,
    "EGW02004": WrongEnvironmentError,
}

#: KIS's words (data, verbatim fragments) for causes whose code is shared or unknown.
_BY_WORDS: tuple[tuple[tuple[str, ...], type[OrderRejectedError]], ...] = (
    (("장운영시간", "장종료", "장시작전", "장마감", "거래시간", "시간외"), MarketClosedError),
    (("주문가능금액", "예수금", "증거금", "매수가능금액"), InsufficientCashError),
    (("주문가능수량", "매도가능수량", "잔고수량", "잔고가 부족", "잔고부족"), InsufficientQuantityError),
    (("정정/취소할", "정정취소가능수량", "취소가능수량", "정정가능수량"), NothingToReviseError),
    (("종목정보가 없", "존재하지 않는 종목", "종목코드", "해당종목"), UnknownSymbolError),
    (("계좌번호가 일치", "계좌번호 불일치"), AccountMismatchError),
    (("모의투자 TR", "실전투자 TR", "모의투자 앱키", "실전투자 도메인"), WrongEnvironmentError),
)

_ADVICE: Mapping[type[OrderRejectedError], str] = {
    InsufficientCashError: "check fetch_buyable() for what the cash allows",
    InsufficientQuantityError: "check fetch_balance() for the sellable quantity (resting sells hold some)",
    MarketClosedError: "the market does not take this order now; place it during its hours",
    NothingToReviseError: "the order has nothing left: it filled, or was cancelled or revised (use the newest order)",
    UnknownSymbolError: "check the symbol and the market",
    AccountMismatchError: "this app key is bound to another account: use that account's app key",
    WrongEnvironmentError: "a real key or id on the mock host, or the reverse: check mock= and the app key",
}


def rejection_class(msg_cd: str, msg1: str) -> type[OrderRejectedError]:
    """The error class for KIS's refusal ``msg_cd``/``msg1``."""
    found = _BY_CODE.get(msg_cd)
    if found is not None:
        return found
    for words, error_class in _BY_WORDS:
        if any(word in msg1 for word in words):
            return error_class
    return OrderRejectedError


def rejection(answer: Mapping[str, Any], status: int, what: str) -> OrderRejectedError:
    """The error for a KIS answer whose ``rt_cd`` is not ``"0"``; ``what`` names the request."""
    msg_cd = str(answer.get("msg_cd") or "")
    msg1 = str(answer.get("msg1") or "").strip()
    error_class = rejection_class(msg_cd, msg1)
    advice = _ADVICE.get(error_class)
    message = f"KIS refused the {what}: {msg1 or 'no message'} ({msg_cd or 'no code'})"
    if advice:
        message += f"; {advice}"
    return error_class(message, msg_cd=msg_cd or None, msg1=msg1 or None, status=status)
