"""KIS WebSocket frames: reading what the server sends, building what we send.

Why by position and by width: data records are ``^``-separated values with no names, several
records back to back in one frame. KIS has appended fields before (notices went from 23 to 26
and broke a peer library), so a record's width is taken from the frame (values / count), only
the positions we read are required, and trailing extra fields are ignored.

Three kinds of text arrive: data frames (``0|TR_ID|NNN|...`` plain, ``1|...`` encrypted),
JSON control frames (subscribe answers), and the JSON PINGPONG frame, which is answered by
echoing it. Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from .events import KST, ExecutionNotice, OrderBook, Trade, kst_now

__all__ = [
    "NOTICE_TR_IDS",
    "ORDERBOOK_TR_ID",
    "TRADE_TR_ID",
    "ControlFrame",
    "DataFrame",
    "FrameError",
    "parse",
    "parse_notices",
    "parse_orderbooks",
    "parse_trades",
    "request_frame",
    "split_records",
]

TRADE_TR_ID = "H0STCNT0"
ORDERBOOK_TR_ID = "H0STASP0"
NOTICE_TR_IDS = ("H0STCNI0", "H0STCNI9")  # real, mock
PINGPONG = "PINGPONG"

# Positions (KIS's column lists). H0STCNT0: MKSC_SHRN_ISCD, STCK_CNTG_HOUR, STCK_PRPR, ..., CNTG_VOL
# at 12, ..., BSOP_DATE at 33.
_T_SYMBOL, _T_TIME, _T_PRICE, _T_VOLUME, _T_DATE = 0, 1, 2, 12, 33
# H0STASP0: MKSC_SHRN_ISCD, BSOP_HOUR, HOUR_CLS_CODE, ASKP1..10, BIDP1..10, ASKP_RSQN1..10, BIDP_RSQN1..10.
_B_SYMBOL, _B_TIME, _B_ASK, _B_BID, _B_ASK_SIZE, _B_BID_SIZE, _B_LEVELS = 0, 1, 3, 13, 23, 33, 10
# H0STCNI0/9: CUST_ID, ACNT_NO, ODER_NO, OODER_NO, SELN_BYOV_CLS, ..., STCK_SHRN_ISCD at 8, CNTG_QTY,
# CNTG_UNPR, STCK_CNTG_HOUR, RFUS_YN, CNTG_YN at 13.
_N_ODNO, _N_SIDE, _N_SYMBOL, _N_QTY, _N_PRICE, _N_TIME, _N_FILLED = 2, 4, 8, 9, 10, 11, 13

_TRADE_MIN = _T_VOLUME + 1
_ORDERBOOK_MIN = _B_BID_SIZE + _B_LEVELS
_NOTICE_MIN = _N_FILLED + 1


class FrameError(ValueError):
    """A frame or record that cannot be read (too short, not a number, not JSON)."""


@dataclass(frozen=True)
class DataFrame:
    """``flag|tr_id|count|payload``: ``payload`` is ``^`` values, or base64 when ``encrypted``."""

    encrypted: bool
    tr_id: str
    count: int
    payload: str


@dataclass(frozen=True)
class ControlFrame:
    """A JSON frame from the server: a subscribe/unsubscribe answer, a refusal, or PINGPONG."""

    header: dict[str, Any]
    body: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def tr_id(self) -> str:
        return str(self.header.get("tr_id", ""))

    @property
    def tr_key(self) -> str:
        return str(self.header.get("tr_key", ""))

    @property
    def is_pingpong(self) -> bool:
        return self.tr_id == PINGPONG

    @property
    def rt_cd(self) -> str:
        return str(self.body.get("rt_cd", ""))

    @property
    def msg_cd(self) -> str:
        return str(self.body.get("msg_cd", ""))

    @property
    def msg1(self) -> str:
        return str(self.body.get("msg1", ""))

    @property
    def ok(self) -> bool:
        """Registered, released or already there (``OPSP0000``/``0001``/``0002``)."""
        return self.msg_cd in ("OPSP0000", "OPSP0001", "OPSP0002")

    @property
    def stale_key(self) -> bool:
        """The approval key was refused (``invalid approval : ...``, or the one table's OPSP0011)."""
        return self.msg_cd == "OPSP0011" or self.msg1.lower().startswith("invalid approval")

    @property
    def cipher(self) -> tuple[str, str] | None:
        """The AES key and IV of the answer's ``output``, if it carries them."""
        output = self.body.get("output")
        if isinstance(output, dict) and output.get("key") and output.get("iv"):
            return str(output["key"]), str(output["iv"])
        return None


def parse(text: str) -> DataFrame | ControlFrame:
    """Read one text message from the server."""
    if text[:1] in ("0", "1"):
        parts = text.split("|", 3)
        if len(parts) != 4:
            raise FrameError(f"data frame without its four parts: {text[:40]!r}")
        flag, tr_id, count, payload = parts
        try:
            records = int(count)
        except ValueError:
            raise FrameError(f"data frame count is not a number: {count!r}") from None
        if records < 1:
            raise FrameError(f"data frame count must be at least 1: {count!r}")
        return DataFrame(flag == "1", tr_id, records, payload)
    try:
        decoded = json.loads(text)
    except ValueError:
        raise FrameError(f"neither a data frame nor JSON: {text[:40]!r}") from None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("header"), dict):
        raise FrameError("JSON frame without a header object")
    body = decoded.get("body")
    return ControlFrame(decoded["header"], body if isinstance(body, dict) else {}, text)


def split_records(payload: str, count: int) -> list[list[str]]:
    """Cut ``count`` records out of one ``^`` list; the width is values / count."""
    values = payload.split("^")
    if count < 1 or len(values) % count:
        raise FrameError(f"{len(values)} values do not split into {count} records")
    width = len(values) // count
    return [values[i * width : (i + 1) * width] for i in range(count)]


def request_frame(approval_key: str, tr_id: str, tr_key: str, *, subscribe: bool = True, custtype: str = "P") -> str:
    """A subscribe (``tr_type`` 1) or unsubscribe (2) frame, one per (tr_id, tr_key) as KIS has no batch."""
    return json.dumps(
        {
            "header": {
                "approval_key": approval_key,
                "custtype": custtype,
                "tr_type": "1" if subscribe else "2",
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
        }
    )


def _need(record: list[str], width: int, tr_id: str) -> None:
    if len(record) < width:
        raise FrameError(f"{tr_id} record has {len(record)} values, fewer than the {width} read")


def _decimal(value: str) -> Decimal:
    try:
        return Decimal(value.strip() or "0")
    except InvalidOperation:
        raise FrameError(f"not a number: {value!r}") from None


def _int(value: str) -> int:
    try:
        return int(Decimal(value.strip() or "0"))
    except InvalidOperation:
        raise FrameError(f"not a number: {value!r}") from None


def _kst_time(hhmmss: str, yyyymmdd: str | None = None) -> datetime:
    """KST-aware time of ``HHMMSS``, on ``YYYYMMDD`` when given, else on today's KST date."""
    try:
        clock = time(int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6]))
        day = (
            date(int(yyyymmdd[0:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
            if yyyymmdd and len(yyyymmdd) == 8
            else kst_now().date()
        )
    except ValueError:
        raise FrameError(f"not a KST time: {hhmmss!r} {yyyymmdd or ''}") from None
    return datetime.combine(day, clock, KST)


def parse_trades(frame: DataFrame) -> list[Trade]:
    """H0STCNT0 records as :class:`Trade` events."""
    trades = []
    for record in split_records(frame.payload, frame.count):
        _need(record, _TRADE_MIN, frame.tr_id)
        day = record[_T_DATE] if len(record) > _T_DATE else None
        trades.append(
            Trade(
                symbol=record[_T_SYMBOL],
                price=_decimal(record[_T_PRICE]),
                volume=_int(record[_T_VOLUME]),
                time=_kst_time(record[_T_TIME], day),
                raw=tuple(record),
            )
        )
    return trades


def parse_orderbooks(frame: DataFrame) -> list[OrderBook]:
    """H0STASP0 records as :class:`OrderBook` events (ten levels, best first)."""
    books = []
    for record in split_records(frame.payload, frame.count):
        _need(record, _ORDERBOOK_MIN, frame.tr_id)
        asks = tuple((_decimal(record[_B_ASK + i]), _int(record[_B_ASK_SIZE + i])) for i in range(_B_LEVELS))
        bids = tuple((_decimal(record[_B_BID + i]), _int(record[_B_BID_SIZE + i])) for i in range(_B_LEVELS))
        books.append(
            OrderBook(
                symbol=record[_B_SYMBOL], asks=asks, bids=bids, time=_kst_time(record[_B_TIME]), raw=tuple(record)
            )
        )
    return books


def parse_notices(plaintext: str, count: int, tr_id: str = NOTICE_TR_IDS[0]) -> list[ExecutionNotice]:
    """Decrypted H0STCNI0/9 records as :class:`ExecutionNotice` events."""
    notices = []
    for record in split_records(plaintext, count):
        _need(record, _NOTICE_MIN, tr_id)
        notices.append(
            ExecutionNotice(
                order_number=record[_N_ODNO],
                symbol=record[_N_SYMBOL],
                side="sell" if record[_N_SIDE] == "01" else "buy",
                filled_quantity=_int(record[_N_QTY]),
                price=_decimal(record[_N_PRICE]),
                time=_kst_time(record[_N_TIME]),
                filled=record[_N_FILLED] == "2",
                raw=tuple(record),
            )
        )
    return notices
