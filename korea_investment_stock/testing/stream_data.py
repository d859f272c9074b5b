"""Synthetic real-time records for the fake KIS WebSocket, laid out by position as KIS's docs.

Why positions and widths matter: clients must read KIS's ``^`` lists by position and take the
record width from the frame (values / count), since KIS has appended fields without notice.
The fake therefore writes the documented widths (46 for H0STCNT0, 59 for H0STASP0, 26 for
H0STCNI0/9) and can append ``extra`` fields at the end of every record to provoke that.
Only the positions a client reads carry meaningful values; the rest are plausible fillers.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta, timezone

__all__ = [
    "NOTICE_WIDTH",
    "ORDERBOOK_WIDTH",
    "TRADE_WIDTH",
    "data_frame",
    "notice_record",
    "orderbook_record",
    "trade_record",
]

KST = timezone(timedelta(hours=9), "KST")

TRADE_WIDTH = 46
ORDERBOOK_WIDTH = 59
NOTICE_WIDTH = 26

# H0STCNT0 positions read by clients (KIS column list: MKSC_SHRN_ISCD, STCK_CNTG_HOUR, STCK_PRPR, ...).
T_SYMBOL, T_TIME, T_PRICE, T_VOLUME, T_ACML_VOL, T_DATE = 0, 1, 2, 12, 13, 33
# H0STASP0: MKSC_SHRN_ISCD, BSOP_HOUR, HOUR_CLS_CODE, ASKP1..10, BIDP1..10, ASKP_RSQN1..10, BIDP_RSQN1..10, ...
B_SYMBOL, B_TIME, B_ASK, B_BID, B_ASK_SIZE, B_BID_SIZE = 0, 1, 3, 13, 23, 33
# H0STCNI0/9: CUST_ID, ACNT_NO, ODER_NO, OODER_NO, SELN_BYOV_CLS, RCTF_CLS, ODER_KIND, ODER_COND,
# STCK_SHRN_ISCD, CNTG_QTY, CNTG_UNPR, STCK_CNTG_HOUR, RFUS_YN, CNTG_YN, ACPT_YN, BRNC_NO, ODER_QTY, ...
N_HTS_ID, N_ACCOUNT, N_ODNO, N_SIDE, N_SYMBOL, N_QTY, N_PRICE, N_TIME, N_FILLED, N_ORDER_QTY = (
    0,
    1,
    2,
    4,
    8,
    9,
    10,
    11,
    13,
    16,
)


def _base_price(symbol: str) -> int:
    """A stable price per symbol on the KRX 100-won tick (no randomness: tests stay reproducible)."""
    return 10_000 + (zlib.crc32(symbol.encode()) % 900) * 100


def _extra(extra: int) -> list[str]:
    return [f"EXTRA{i}" for i in range(extra)]


def trade_record(symbol: str, sequence: int, now: datetime, *, extra: int = 0) -> list[str]:
    """One H0STCNT0 record: price walks by one tick around the symbol's base, volume 1..10."""
    price = _base_price(symbol) + ((sequence % 7) - 3) * 100
    volume = sequence % 10 + 1
    values = ["0"] * TRADE_WIDTH
    values[T_SYMBOL] = symbol
    values[T_TIME] = now.astimezone(KST).strftime("%H%M%S")
    values[T_PRICE] = str(price)
    values[3] = "2"  # PRDY_VRSS_SIGN: up
    values[T_VOLUME] = str(volume)
    values[T_ACML_VOL] = str(1000 + sequence * 10)
    values[T_DATE] = now.astimezone(KST).strftime("%Y%m%d")
    values[34] = "20"  # NEW_MKOP_CLS_CODE
    values[35] = "N"  # TRHT_YN
    return values + _extra(extra)


def orderbook_record(symbol: str, sequence: int, now: datetime, *, extra: int = 0) -> list[str]:
    """One H0STASP0 record: ten asks above and ten bids below the symbol's price."""
    mid = _base_price(symbol) + ((sequence % 5) - 2) * 100
    values = ["0"] * ORDERBOOK_WIDTH
    values[B_SYMBOL] = symbol
    values[B_TIME] = now.astimezone(KST).strftime("%H%M%S")
    values[2] = "0"  # HOUR_CLS_CODE
    for level in range(10):
        values[B_ASK + level] = str(mid + 100 * (level + 1))
        values[B_BID + level] = str(mid - 100 * level)
        values[B_ASK_SIZE + level] = str(100 + level + sequence % 3)
        values[B_BID_SIZE + level] = str(200 + level + sequence % 3)
    values[58] = "0"  # STCK_DEAL_CLS_CODE
    return values + _extra(extra)


def notice_record(
    hts_id: str,
    odno: str,
    symbol: str,
    side: str,
    qty: int,
    price: int | str,
    now: datetime,
    *,
    filled: bool = True,
    extra: int = 0,
) -> list[str]:
    """One H0STCNI0/9 record: ``side`` is ``"buy"`` or ``"sell"``; ``filled`` sets CNTG_YN 2 (fill) or 1."""
    if side not in ("buy", "sell"):
        raise ValueError("side must be 'buy' or 'sell'")
    values = [""] * NOTICE_WIDTH
    values[N_HTS_ID] = hts_id
    values[N_ACCOUNT] = "5012345601"
    values[N_ODNO] = odno
    values[3] = ""  # OODER_NO
    values[N_SIDE] = "02" if side == "buy" else "01"
    values[5] = "0"  # RCTF_CLS
    values[6] = "00"  # ODER_KIND: limit
    values[7] = "0"
    values[N_SYMBOL] = symbol
    values[N_QTY] = str(qty)
    values[N_PRICE] = str(price)
    values[N_TIME] = now.astimezone(KST).strftime("%H%M%S")
    values[12] = "0"  # RFUS_YN
    values[N_FILLED] = "2" if filled else "1"
    values[14] = "1"  # ACPT_YN
    values[15] = "00950"  # BRNC_NO
    values[N_ORDER_QTY] = str(qty)
    values[17] = "HONG"  # ACNT_NAME
    return values + _extra(extra)


def data_frame(tr_id: str, records: list[list[str]], *, encrypted_payload: str | None = None) -> str:
    """``0|TR_ID|NNN|v^v^...`` with the records back to back, or ``1|TR_ID|NNN|<base64>``."""
    count = f"{len(records):03d}"
    if encrypted_payload is not None:
        return f"1|{tr_id}|{count}|{encrypted_payload}"
    return f"0|{tr_id}|{count}|" + "^".join(value for record in records for value in record)
